"""Argument checks shared by the op wrappers: every error names the argument."""

from __future__ import annotations

import math
import operator

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SIGNED_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)

#: The most elements one output (or working buffer) of an op may have: the C++ checks use the same
#: limit (``sniper::kMaxElements`` in stable_utils.h), so absurd sizes fail up front with a clear error.
MAX_ELEMENTS = 1 << 40


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _values_known(t) -> bool:
    """Value checks need real data: not while compiling (fake tensors), not for meta tensors."""
    return not _compiling() and t.device.type != "meta"


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
    v = _to_float(op, name, value)
    if not (0 <= v < math.inf) or (positive and v == 0):  # also catches NaN; traceable
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{op}: `{name}` must be a finite number {need}, got {value}")
    return v


def check_box_values(op: str, name: str, boxes) -> None:
    """Finite boxes with x1 <= x2 and y1 <= y2. One device sync; skipped while compiling."""
    if not _values_known(boxes) or boxes.numel() == 0:
        return
    bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{op}: `{name}`[{i}] = {boxes[i].tolist()} is not a valid box; "
            "expected finite xyxy with x1 <= x2 and y1 <= y2"
        )


def check_finite(op: str, name: str, t) -> None:
    if not _values_known(t) or t.numel() == 0:
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{op}: `{name}`[{i}] = {t[i].item()} is not finite")


def _to_float(op: str, name: str, value) -> float:
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{op}: `{name}` must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{op}: `{name}` must be a finite number, got {value!r:.40}") from None
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{op}: `{name}` must be a number, got {type(value).__name__}") from None


def check_number(
    op: str,
    name: str,
    value,
    *,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    allow_inf: bool = False,
) -> float:
    """A real number (bools are rejected): finite (or +-inf with ``allow_inf``), > 0 with ``positive``,
    within [minimum, maximum] when given."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: `{name}` must be a number, got bool")
    v = _to_float(op, name, value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{op}: `{name}` must be a finite number, got {value}")
    if positive and not v > 0:
        raise ValueError(f"{op}: `{name}` must be > 0, got {value}")
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(
            f"{op}: `{name}` must lie in [{minimum if minimum is not None else '-inf'}, "
            f"{maximum if maximum is not None else 'inf'}], got {value}"
        )
    return v


def check_int(op: str, name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (anything with ``__index__`` but bool) within [minimum, maximum] when given."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{op}: `{name}` must be an int, got {type(value).__name__}")
    try:
        v = operator.index(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{op}: `{name}` must be an int, got {type(value).__name__}") from None
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = minimum if minimum is not None else "-inf"
        hi = maximum if maximum is not None else "inf"
        raise ValueError(f"{op}: `{name}` must be an int in [{lo}, {hi}], got {v}")
    return v


def check_numbers(op: str, name: str, values, *, length: int | None = None, positive: bool = True) -> list[float]:
    """A non-empty sequence (or 1-d tensor) of finite numbers, > 0 with ``positive``, of ``length`` when given."""
    if isinstance(values, torch.Tensor):
        if values.dim() != 1 or values.device.type == "meta":
            raise ValueError(
                f"{op}: `{name}` must be a sequence of numbers, got a tensor of shape {tuple(values.shape)}"
            )
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not hasattr(values, "__iter__"):
        raise TypeError(f"{op}: `{name}` must be a sequence of numbers, got {type(values).__name__}")
    if len(values) == 0 or (length is not None and len(values) != length):
        need = f"{length} numbers" if length is not None else "at least one number"
        raise ValueError(f"{op}: `{name}` must have {need}, got {len(values)}")
    return [check_number(op, f"{name}[{i}]", v, positive=positive) for i, v in enumerate(values)]


def check_numel(op: str, what: str, shape) -> None:
    """Raises when a tensor of ``shape`` would have more than MAX_ELEMENTS elements."""
    if _compiling():  # the C++ checks still apply at run time
        return
    n = 1
    for s in shape:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise ValueError(
            f"{op}: {what} would have {n} elements (shape {list(shape)}), "
            f"more than the {MAX_ELEMENTS} (2**40) an op may allocate"
        )


def check_devices(op: str, **tensors) -> None:
    """All given tensors (None skipped) on one device; for fake kernels, which must not mix devices."""
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        if first is None:
            first = (name, t)
        elif t.device != first[1].device:
            raise ValueError(
                f"{op}: `{name}` is on {t.device} but `{first[0]}` is on {first[1].device}; they must match"
            )
