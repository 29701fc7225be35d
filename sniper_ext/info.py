"""`python -m sniper_ext.info`: what was built, against what, and what runs here."""
from __future__ import annotations

import torch

from . import __version__
from ._loader import library_paths

OPS = ["box_iou", "nms", "batched_nms", "soft_nms", "greedy_chip_cover", "label_anchors",
       "deform_im2col", "deform_col2im", "roi_align", "roi_align_backward", "deform_roi_pool",
       "deform_roi_pool_backward"]


def op_backends(name: str) -> list[str]:
    """Dispatch keys with a kernel for sniper::<name> (Meta = fake kernel for torch.compile)."""
    qual = f"sniper::{name}"
    found = [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(qual, k)]
    try:  # private registry; absent on some torch versions
        if torch._library.simple_registry.singleton.find(qual).fake_impl.kernel is not None:
            found.append("Fake")
    except AttributeError:
        pass
    if torch._C._dispatch_has_kernel_for_dispatch_key(qual, "Autograd"):
        found.append("Autograd")
    return found


def build_info() -> dict:
    try:
        from ._build_info import BUILD_INFO
    except ImportError:  # pragma: no cover - only for broken installs
        BUILD_INFO = {}
    return dict(BUILD_INFO)


def report() -> str:
    b = build_info()
    libs = library_paths()
    lines = [
        f"sniper_ext {__version__}",
        f"  built against torch {b.get('built_with_torch', '?')} (LibTorch stable ABI target {b.get('stable_abi_target', '?')})",
        f"  running on torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
        f"GPU available: {torch.cuda.is_available()}",
    ]
    if b.get("cuda_built"):
        state = "loaded" if libs["cuda"] else ("not loaded: " + (libs["cuda_error"] or "torch has no CUDA"))
        lines.append(f"  CUDA kernels: built for {b.get('cuda_archs')} with {b.get('nvcc')}; {state}")
    else:
        lines.append("  CUDA kernels: not built (CPU-only install)")
    lines.append("  ops (backends):")
    for name in OPS:
        lines.append(f"    sniper::{name:<18} {', '.join(op_backends(name))}")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
