"""Mixed precision: which precision a device runs and the autocast context for it, shared by
training and inference."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast_for", "resolve_precision"]

#: the precision names of ``solver.precision`` and ``--precision``
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a GPU, fp32 on the CPU; fp16 (with a grad scaler) only on a GPU."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"solver.precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("solver.precision 'fp16' (with a grad scaler) needs a GPU; use 'bf16' or 'fp32' on the CPU")
    return precision


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA for "auto"/"bf16", fp16 for "fp16"; nothing for fp32 or on the CPU
    with "auto"."""
    if precision in ("fp32",) or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)
