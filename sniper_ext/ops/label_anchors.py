"""Batched anchor labelling with invalidation from invalid GT (method §5): the wrapper of
``torch.ops.sniper.label_anchors`` and its fake kernel."""

from __future__ import annotations

import torch

from ._checks import (
    FLOAT_DTYPES,
    _values_known,
    check_box_values,
    check_numel,
    check_same_device,
    check_tensor,
    check_threshold,
)
from ._geometry import Out, register_fake

__all__ = ["label_anchors"]


def label_anchors_geometry(
    anchors, gt_boxes, gt_state, canvas_wh, pos_iou, neg_iou, invalid_iou, allowed_border
) -> tuple[Out, Out]:
    """sniper::label_anchors: anchors [A, 4], gt_boxes [B, G, 4] of the anchors' dtype, gt_state [B, G]
    int8, canvas_wh [B, 2] on one device -> labels [B, A] int8 and matched_gt [B, A] int64."""
    op = "label_anchors"
    for name, t in (("anchors", anchors), ("gt_boxes", gt_boxes), ("gt_state", gt_state), ("canvas_wh", canvas_wh)):
        check_tensor(op, name, t)
    if anchors.dim() != 2 or anchors.shape[-1] != 4:
        raise ValueError(f"{op}: `anchors` must have shape [A, 4], got {tuple(anchors.shape)}")
    if anchors.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `anchors` must be a floating tensor, got {anchors.dtype}")
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"{op}: `gt_boxes` must have shape [B, G, 4], got {tuple(gt_boxes.shape)}")
    if gt_boxes.dtype != anchors.dtype:
        raise TypeError(f"{op}: `gt_boxes` must have the dtype of `anchors` ({anchors.dtype}), got {gt_boxes.dtype}")
    b, g = gt_boxes.shape[:2]
    if tuple(gt_state.shape) != (b, g):
        raise ValueError(f"{op}: `gt_state` must have shape [{b}, {g}], got {tuple(gt_state.shape)}")
    if gt_state.dtype != torch.int8:
        raise TypeError(f"{op}: `gt_state` must be int8 (1 valid, 0 invalid, -1 padding), got {gt_state.dtype}")
    if tuple(canvas_wh.shape) != (b, 2):
        raise ValueError(f"{op}: `canvas_wh` must have shape [{b}, 2], got {tuple(canvas_wh.shape)}")
    if canvas_wh.dtype == torch.bool or canvas_wh.dtype.is_complex:
        raise TypeError(f"{op}: `canvas_wh` must be a real tensor, got {canvas_wh.dtype}")
    for name, t in (("gt_boxes", gt_boxes), ("gt_state", gt_state), ("canvas_wh", canvas_wh)):
        check_same_device(op, "anchors", anchors, name, t)
    check_numel(op, "the labels", (b, anchors.shape[0]))
    return Out((b, anchors.shape[0]), torch.int8), Out((b, anchors.shape[0]), torch.int64)


def label_anchors(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_state: torch.Tensor,
    canvas_wh: torch.Tensor,
    *,
    pos_iou: float = 0.5,
    neg_iou: float = 0.4,
    invalid_iou: float = 0.3,
    allowed_border: float = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels the anchors of B chips at once (method §5).

    Args:
        anchors: ``[A, 4]`` anchors shared by all chips (chip pixels).
        gt_boxes: ``[B, G, 4]`` GT per chip, padded; same dtype as ``anchors``.
        gt_state: ``[B, G]`` int8: 1 valid, 0 invalid (wrong size for this scale), -1 padding.
        canvas_wh: ``[B, 2]`` chip width and height (anchors reaching more than
            ``allowed_border`` pixels beyond are ignored).

    Returns:
        ``labels [B, A]`` int8: with valid GT, 1 if the max IoU with a valid GT is >= pos_iou or the
        anchor is a best match (max IoU > 0) of some valid GT, 0 if below neg_iou, else -1; without
        valid GT, 0. Then, last, -1 for any anchor with IoU > invalid_iou with an invalid GT, and for
        anchors beyond the border. ``matched_gt [B, A]`` int64: for positives the valid GT of highest
        IoU (lowest index on ties), else -1.
    """
    op = "label_anchors"
    label_anchors_geometry(anchors, gt_boxes, gt_state, canvas_wh, pos_iou, neg_iou, invalid_iou, allowed_border)
    pos = check_threshold(op, "pos_iou", pos_iou)
    neg = check_threshold(op, "neg_iou", neg_iou)
    if neg > pos:
        raise ValueError(f"{op}: `neg_iou` ({neg}) must not exceed `pos_iou` ({pos})")
    inv = check_threshold(op, "invalid_iou", invalid_iou)
    border = check_threshold(op, "allowed_border", allowed_border)
    if _values_known(anchors):
        check_box_values(op, "anchors", anchors)
        if gt_boxes.numel() and not bool(torch.isfinite(gt_boxes[gt_state >= 0]).all()):
            raise ValueError(f"{op}: `gt_boxes` of valid and invalid GT must be finite")
        bad = (gt_state < -1) | (gt_state > 1)
        if gt_state.numel() and bool(bad.any()):
            c, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"{op}: `gt_state` values must be 1, 0 or -1 (valid, invalid, padding), "
                f"got {int(gt_state[c, j])} at [{c}, {j}]"
            )
        if canvas_wh.numel() and not bool((torch.isfinite(canvas_wh) & (canvas_wh > 0)).all()):
            raise ValueError(f"{op}: `canvas_wh` must be finite and positive")
    return torch.ops.sniper.label_anchors(anchors, gt_boxes, gt_state, canvas_wh, pos, neg, inv, border)


register_fake("label_anchors", label_anchors_geometry)
