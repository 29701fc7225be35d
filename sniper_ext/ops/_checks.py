"""Argument checks shared by the op wrappers: every error names the argument."""
from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def check_tensor(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")


def check_boxes(op: str, name: str, boxes) -> None:
    """[N, 4] floating xyxy boxes."""
    check_tensor(op, name, boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: `{name}` must have shape [N, 4] (xyxy), got {tuple(boxes.shape)}")
    if boxes.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `{name}` must be float32, float64, float16 or bfloat16, got {boxes.dtype}")


def check_scores(op: str, boxes, scores, name: str = "scores") -> None:
    check_tensor(op, name, scores)
    n = boxes.shape[0]
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"{op}: `{name}` must have shape [{n}] (one per box), got {tuple(scores.shape)}")
    if scores.dtype != boxes.dtype:
        raise TypeError(f"{op}: `{name}` must have the dtype of `boxes` ({boxes.dtype}), got {scores.dtype}")
    check_same_device(op, "boxes", boxes, name, scores)


def check_idxs(op: str, boxes, idxs, name: str = "idxs") -> None:
    check_tensor(op, name, idxs)
    n = boxes.shape[0]
    if idxs.dim() != 1 or idxs.shape[0] != n:
        raise ValueError(f"{op}: `{name}` must have shape [{n}] (one group id per box), got {tuple(idxs.shape)}")
    if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
        raise TypeError(f"{op}: `{name}` must be an integer tensor, got {idxs.dtype}")
    check_same_device(op, "boxes", boxes, name, idxs)


def check_same_device(op: str, name_a: str, a, name_b: str, b) -> None:
    if a.device != b.device:
        raise ValueError(f"{op}: `{name_b}` is on {b.device} but `{name_a}` is on {a.device}; they must match")


def check_threshold(op: str, name: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: `{name}` must be a number, got {type(value).__name__}") from None
    if not (0 <= v < math.inf) or (positive and v == 0):  # also catches NaN; traceable
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{op}: `{name}` must be a finite number {need}, got {value}")
    return v


def check_box_values(op: str, name: str, boxes) -> None:
    """Finite boxes with x1 <= x2 and y1 <= y2. One device sync; skipped while compiling."""
    if _compiling() or boxes.numel() == 0:
        return
    bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{op}: `{name}`[{i}] = {boxes[i].tolist()} is not a valid box; "
            "expected finite xyxy with x1 <= x2 and y1 <= y2"
        )


def check_finite(op: str, name: str, t) -> None:
    if _compiling() or t.numel() == 0:
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{op}: `{name}`[{i}] = {t[i].item()} is not finite")
