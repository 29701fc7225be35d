"""`python -m sniper_ext.info`: what was built, against what, and what runs here.

``--require-cuda`` exits with status 1 unless the CUDA library is loaded and
every op has a CUDA kernel (CI uses it on a CUDA torch without a GPU).
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import __version__
from ._loader import build_info, library_paths


def op_names() -> list[str]:
    """The ops registered in the ``sniper`` namespace, as the dispatcher lists them."""
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("sniper::"))


def op_backends(name: str) -> list[str]:
    """Dispatch keys with a kernel for sniper::<name> (Fake = fake kernel for torch.compile)."""
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


def ops_without(key: str) -> list[str]:
    """The ops with no kernel for dispatch key `key` ("CPU", "CUDA")."""
    return [n for n in op_names() if key not in op_backends(n)]


def report() -> str:
    b = build_info()
    libs = library_paths()
    lines = [
        f"sniper_ext {__version__}",
        f"  built against torch {b.get('built_with_torch', '?')} "
        f"(LibTorch stable ABI target {b.get('stable_abi_target', '?')})",
        f"  running on torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
        f"GPU available: {torch.cuda.is_available()}",
    ]
    if b.get("cuda_built"):
        state = "loaded" if libs["cuda"] else ("not loaded: " + (libs["cuda_error"] or "torch has no CUDA"))
        lines.append(
            f"  CUDA kernels: CUDA {b.get('cuda_version')}, built for {b.get('cuda_archs')} ({b.get('nvcc')}); {state}"
        )
    else:
        lines.append("  CUDA kernels: not built (CPU-only install)")
    names = op_names()
    width = max(map(len, names), default=0) + 1
    lines.append(f"  {len(names)} ops (backends):")
    lines += [f"    sniper::{name:<{width}} {', '.join(op_backends(name))}" for name in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sniper_ext.info", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--require-cuda",
        action="store_true",
        help="exit 1 unless the CUDA library is loaded and every op has a CUDA kernel",
    )
    args = parser.parse_args(argv)
    print(report())
    if args.require_cuda:
        missing = ops_without("CUDA")
        if library_paths()["cuda"] is None or missing or not op_names():
            print(
                f"error: CUDA kernels required: library {library_paths()['cuda'] or 'not loaded'}"
                f" ({library_paths()['cuda_error'] or 'no error'}); ops without a CUDA kernel: {missing}",
                file=sys.stderr,
            )
            return 1
        print(f"ok: the CUDA library is loaded and all {len(op_names())} ops have a CUDA kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
