"""Loads the compiled op libraries into torch.ops.sniper.

The CPU library always loads. The CUDA library is a separate file, loaded only
when the installed torch was built with CUDA, so that a CPU-only install never
touches a CUDA library. Its CUDA major version must be torch's (both map the
same libcudart). When torch sees a GPU but the CUDA kernels are missing or fail
to load, importing sniper_ext raises ImportError with the reason: a user with a
GPU never silently gets CPU kernels. ``SNIPER_EXT_ALLOW_CPU_ONLY=1`` turns that
error into a warning. Without a GPU a problem is only a warning.
"""

from __future__ import annotations

import glob
import os
import warnings

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_STATE: dict = {"cpu": None, "cuda": None, "cuda_error": None}
ALLOW_CPU_ONLY_ENV = "SNIPER_EXT_ALLOW_CPU_ONLY"


def _find(stem: str) -> str | None:
    for pattern in (f"{stem}.so", f"{stem}.abi3.so", f"{stem}.cpython-*.so", f"{stem}.pyd"):
        hits = sorted(glob.glob(os.path.join(_HERE, pattern)))
        if hits:
            return hits[0]
    return None


def build_info() -> dict:
    """What setup.py recorded at build time (version, torch, CUDA version, architectures)."""
    try:
        from ._build_info import BUILD_INFO
    except ImportError:  # only for broken installs
        return {}
    return dict(BUILD_INFO)


def _major(version: str | None) -> str:
    return (version or "").split(".")[0]


def _load_cuda(path: str | None) -> str | None:
    """Loads the CUDA library when torch has CUDA; returns why it could not, or None."""
    if torch.version.cuda is None:
        return None  # a CPU torch: never touch CUDA libraries
    if path is None:
        return (
            "sniper_ext was built without its CUDA kernels (no sniper_ext/_C_cuda library), but this torch "
            f"has CUDA {torch.version.cuda}; rebuild sniper_ext against this torch with the CUDA toolkit "
            "installed (`pip install --no-build-isolation .`, see README)"
        )
    built = build_info().get("cuda_version", "")
    if built and _major(built) != _major(torch.version.cuda):
        return (
            f"sniper_ext's CUDA kernels were built with CUDA {built} but this torch uses CUDA "
            f"{torch.version.cuda}; the CUDA major versions must match: install a torch for CUDA "
            f"{_major(built)} or rebuild sniper_ext against this torch"
        )
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError) as e:
        return f"could not load the CUDA kernels {path}: {e}"
    _STATE["cuda"] = path
    return None


def load_libraries() -> None:
    if _STATE["cpu"] is not None:
        return
    cpu = _find("_C")
    if cpu is None:
        raise ImportError(
            "sniper_ext: the compiled library sniper_ext/_C*.so was not found. Build it with "
            "`pip install --no-build-isolation -e .` from the source tree (see README)."
        )
    torch.ops.load_library(cpu)
    _STATE["cpu"] = cpu
    problem = _load_cuda(_find("_C_cuda"))
    if problem is None:
        return
    _STATE["cuda_error"] = problem
    if torch.cuda.is_available() and os.environ.get(ALLOW_CPU_ONLY_ENV, "0") != "1":
        raise ImportError(f"sniper_ext: {problem}. (Set {ALLOW_CPU_ONLY_ENV}=1 to run the CPU kernels only.)")
    warnings.warn(f"sniper_ext: CUDA kernels not loaded: {problem}; CPU kernels only", stacklevel=3)


def library_paths() -> dict:
    """Paths of the loaded libraries (``cuda`` is None when not loaded) and any CUDA load error."""
    return dict(_STATE)
