"""Loads the compiled op libraries into torch.ops.sniper.

The CPU library always loads. The CUDA library is a separate file, loaded only
when the installed torch was built with CUDA, so that a CPU-only install never
touches a CUDA library. A CUDA library that fails to load is reported once as a
warning (with the reason) and the CPU kernels keep working.
"""
from __future__ import annotations

import glob
import os
import warnings

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_STATE: dict = {"cpu": None, "cuda": None, "cuda_error": None}


def _find(stem: str) -> str | None:
    for pattern in (f"{stem}.so", f"{stem}.abi3.so", f"{stem}.cpython-*.so", f"{stem}.pyd"):
        hits = sorted(glob.glob(os.path.join(_HERE, pattern)))
        if hits:
            return hits[0]
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
    cuda = _find("_C_cuda")
    if cuda is not None and torch.version.cuda is not None:
        try:
            torch.ops.load_library(cuda)
            _STATE["cuda"] = cuda
        except OSError as e:  # e.g. a CUDA runtime mismatch
            _STATE["cuda_error"] = str(e)
            warnings.warn(f"sniper_ext: CUDA kernels not loaded ({e}); CPU kernels only", stacklevel=2)


def library_paths() -> dict:
    """Paths of the loaded libraries (``cuda`` is None when not loaded) and any CUDA load error."""
    return dict(_STATE)
