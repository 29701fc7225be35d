"""NMS, batched NMS and Soft-NMS over torch.ops.sniper (CPU and CUDA kernels)."""

from __future__ import annotations

import torch

from ._checks import (
    check_box_values,
    check_boxes,
    check_finite,
    check_idxs,
    check_int,
    check_scores,
    check_threshold,
)
from ._geometry import DYNAMIC, Out, register_fake

__all__ = [
    "nms",
    "batched_nms",
    "soft_nms",
    "nms_fixed",
    "batched_nms_fixed",
    "soft_nms_fixed",
    "SOFT_NMS_METHODS",
]

#: Soft-NMS decay rules and their codes in the ``sniper::soft_nms`` schema.
SOFT_NMS_METHODS = {"linear": 0, "gaussian": 1, "hard": 2}


def _check_scored(op, boxes, scores):
    check_boxes(op, "boxes", boxes)
    check_scores(op, boxes, scores)
    check_box_values(op, "boxes", boxes)
    check_finite(op, "scores", scores)


def nms_geometry(boxes, scores, iou_threshold) -> Out:
    """sniper::nms: [N, 4] boxes, [N] scores -> the kept indices, int64 [K] (K data-dependent)."""
    _check_scored_shapes("nms", boxes, scores, None)
    return Out((DYNAMIC,), torch.int64)


def batched_nms_geometry(boxes, scores, idxs, iou_threshold) -> Out:
    """sniper::batched_nms: as nms, with [N] integer group ids."""
    _check_scored_shapes("batched_nms", boxes, scores, idxs)
    return Out((DYNAMIC,), torch.int64)


def soft_nms_geometry(boxes, scores, idxs, method, sigma, iou_threshold, score_threshold) -> tuple[Out, Out]:
    """sniper::soft_nms: as batched_nms (idxs may be None) -> kept indices int64 [K] and their decayed
    scores [K] in the dtype of scores."""
    _check_scored_shapes("soft_nms", boxes, scores, idxs)
    return Out((DYNAMIC,), torch.int64), Out((DYNAMIC,), scores.dtype)


def _check_size(op, name, value):
    """A size argument: an int >= 0, or a symbolic size while tracing (checked by the kernel)."""
    if isinstance(value, torch.SymInt):
        return value
    return check_int(op, name, value, minimum=0)


def nms_fixed_geometry(boxes, scores, iou_threshold, capacity) -> tuple[Out, Out]:
    """sniper::nms_fixed: [N, 4] boxes, [N] scores -> kept indices int64 [capacity] (-1 padded) and
    their count, int64 []."""
    _check_scored_shapes("nms_fixed", boxes, scores, None)
    capacity = _check_size("nms_fixed", "capacity", capacity)
    return Out((capacity,), torch.int64), Out((), torch.int64)


def batched_nms_fixed_geometry(boxes, scores, idxs, iou_threshold, num_groups, capacity) -> tuple[Out, Out]:
    """sniper::batched_nms_fixed: -> kept indices int64 [num_groups, capacity] (-1 padded) and the
    count of each group, int64 [num_groups]."""
    op = "batched_nms_fixed"
    _check_scored_shapes(op, boxes, scores, idxs)
    g, c = _check_size(op, "num_groups", num_groups), _check_size(op, "capacity", capacity)
    return Out((g, c), torch.int64), Out((g,), torch.int64)


def soft_nms_fixed_geometry(
    boxes, scores, idxs, method, sigma, iou_threshold, score_threshold, num_groups, capacity
) -> tuple[Out, Out, Out]:
    """sniper::soft_nms_fixed: -> kept indices int64 [num_groups, capacity] (-1 padded), their decayed
    scores [num_groups, capacity] (0 padded; the dtype of scores) and the counts int64 [num_groups]."""
    op = "soft_nms_fixed"
    _check_scored_shapes(op, boxes, scores, idxs)
    g, c = _check_size(op, "num_groups", num_groups), _check_size(op, "capacity", capacity)
    return Out((g, c), torch.int64), Out((g, c), scores.dtype), Out((g,), torch.int64)


def _check_scored_shapes(op, boxes, scores, idxs):
    check_boxes(op, "boxes", boxes)
    check_scores(op, boxes, scores)
    if idxs is not None:
        check_idxs(op, boxes, idxs)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``[N, 4]`` float ``xyxy`` boxes (finite, ``x1 <= x2``, ``y1 <= y2``).
        scores: ``[N]`` scores, same dtype and device as ``boxes``.
        iou_threshold: a box is discarded when its IoU with an already kept,
            higher-scoring box is ``> iou_threshold`` (torchvision's rule).

    Returns:
        int64 ``[K]`` indices of the kept boxes, by descending score (ties: lower index first).
    """
    _check_scored("nms", boxes, scores)
    nms_geometry(boxes, scores, iou_threshold)
    thr = check_threshold("nms", "iou_threshold", iou_threshold)
    return torch.ops.sniper.nms(boxes, scores, thr)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS independently inside each group of equal ``idxs`` (e.g. class, or image × class).

    Exact per group (no coordinate-offset trick, so no precision loss with large
    coordinates or many groups). Returns kept indices by descending score.
    """
    _check_scored("batched_nms", boxes, scores)
    batched_nms_geometry(boxes, scores, idxs, iou_threshold)
    thr = check_threshold("batched_nms", "iou_threshold", iou_threshold)
    return torch.ops.sniper.batched_nms(boxes, scores, idxs, thr)


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor | None = None,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact sequential greedy Soft-NMS (Bodla et al., 2017), batched over groups.

    Inside each group of equal ``idxs`` (one group when ``None``): repeatedly
    select the box with the highest current score (ties: lower index), then
    multiply the score of every remaining box that overlaps it (IoU > 0) by

    * ``"gaussian"``: ``exp(-IoU**2 / sigma)``;
    * ``"linear"``: ``1 - IoU`` when ``IoU >= iou_threshold``, else 1;
    * ``"hard"``: 0 (drop) when ``IoU >= iou_threshold``, else 1.

    Boxes whose (decayed) score falls below ``score_threshold`` are dropped,
    including boxes that start below it. Thousands of groups (images × classes)
    run in one call: in parallel on the CPU, one launch on CUDA.

    Returns:
        ``(keep, new_scores)``: int64 indices into the input and their decayed
        scores (input dtype), sorted by decayed score descending, ties to the
        lower index.
    """
    op = "soft_nms"
    _check_scored(op, boxes, scores)
    soft_nms_geometry(boxes, scores, idxs, method, sigma, iou_threshold, score_threshold)
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"{op}: `method` must be one of {sorted(SOFT_NMS_METHODS)}, got {method!r}")
    sig = check_threshold(op, "sigma", sigma, positive=True)
    iou = check_threshold(op, "iou_threshold", iou_threshold)
    sthr = check_threshold(op, "score_threshold", score_threshold)
    return torch.ops.sniper.soft_nms(boxes, scores, idxs, SOFT_NMS_METHODS[method], sig, iou, sthr)


# -- fixed capacity: static shapes, no host synchronisation -------------------------------------
#
# The variants an exported or CUDA-graph-captured program uses. Their results equal the
# variable-size ops' within the capacity; the wrappers check what needs no data (types, shapes,
# devices, thresholds, sizes) and never read tensor values, so they add no device sync: boxes
# that are not finite or have x2 < x1 are not reported here (the variable-size wrappers do), and
# group ids outside [0, num_groups) are a defined way to leave a box out.


def nms_fixed(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, capacity: int):
    """:func:`nms` with a static output: ``(keep int64 [capacity], count int64 [])`` where
    ``keep[:count]`` are the first ``min(K, capacity)`` indices :func:`nms` returns and the rest
    is -1. Sync-free on CUDA; values are not checked (see above)."""
    op = "nms_fixed"
    nms_fixed_geometry(boxes, scores, iou_threshold, capacity)
    thr = check_threshold(op, "iou_threshold", iou_threshold)
    return torch.ops.sniper.nms_fixed(boxes, scores, thr, capacity)


def batched_nms_fixed(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float, num_groups: int, capacity: int
):
    """:func:`batched_nms` per group with a static output: ``(keep int64 [num_groups, capacity],
    count int64 [num_groups])``; row g holds the first ``min(K_g, capacity)`` kept indices of group
    g (``idxs == g``) in :func:`batched_nms`'s order, then -1. Boxes whose ``idxs`` lie outside
    ``[0, num_groups)`` take no part (a mask without a data-dependent shape). Sync-free on CUDA."""
    op = "batched_nms_fixed"
    batched_nms_fixed_geometry(boxes, scores, idxs, iou_threshold, num_groups, capacity)
    thr = check_threshold(op, "iou_threshold", iou_threshold)
    return torch.ops.sniper.batched_nms_fixed(boxes, scores, idxs, thr, num_groups, capacity)


def soft_nms_fixed(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    num_groups: int,
    capacity: int,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 1e-3,
):
    """:func:`soft_nms` per group with a static output: ``(keep int64 [num_groups, capacity],
    scores [num_groups, capacity], count int64 [num_groups])``; row g holds the first
    ``min(K_g, capacity)`` survivors of group g and their decayed scores in :func:`soft_nms`'s
    order, then -1 and 0. Boxes whose ``idxs`` lie outside ``[0, num_groups)`` take no part.
    Sync-free on CUDA."""
    op = "soft_nms_fixed"
    soft_nms_fixed_geometry(boxes, scores, idxs, method, sigma, iou_threshold, score_threshold, num_groups, capacity)
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"{op}: `method` must be one of {sorted(SOFT_NMS_METHODS)}, got {method!r}")
    sig = check_threshold(op, "sigma", sigma, positive=True)
    iou = check_threshold(op, "iou_threshold", iou_threshold)
    sthr = check_threshold(op, "score_threshold", score_threshold)
    return torch.ops.sniper.soft_nms_fixed(
        boxes, scores, idxs, SOFT_NMS_METHODS[method], sig, iou, sthr, num_groups, capacity
    )


register_fake("nms", nms_geometry)
register_fake("batched_nms", batched_nms_geometry)
register_fake("soft_nms", soft_nms_geometry)
register_fake("nms_fixed", nms_fixed_geometry)
register_fake("batched_nms_fixed", batched_nms_fixed_geometry)
register_fake("soft_nms_fixed", soft_nms_fixed_geometry)
