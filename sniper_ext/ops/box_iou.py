"""Box utilities over torch.ops.sniper: pairwise IoU with autograd."""

from __future__ import annotations

import torch

from ._checks import _values_known, check_box_values, check_boxes, check_same_device
from ._geometry import Out, register_fake

__all__ = ["box_iou"]


def box_iou_geometry(boxes1, boxes2) -> Out:
    """sniper::box_iou: [N, 4] x [M, 4] boxes of one dtype and device -> IoU [N, M] of that dtype."""
    op = "box_iou"
    check_boxes(op, "boxes1", boxes1)
    check_boxes(op, "boxes2", boxes2)
    check_same_device(op, "boxes1", boxes1, "boxes2", boxes2)
    if boxes1.dtype != boxes2.dtype:
        raise TypeError(f"{op}: `boxes2` must have the dtype of `boxes1` ({boxes1.dtype}), got {boxes2.dtype}")
    return Out((boxes1.shape[0], boxes2.shape[0]), boxes1.dtype)


def _check_iou_range(op, name, boxes):
    """Areas must fit the compute type (float32, or float64 for float64) with room for a union of two:
    beyond that the IoU would be NaN or silently wrong."""
    if not _values_known(boxes) or boxes.numel() == 0:
        return
    acc = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    b = boxes.to(acc)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    limit = torch.finfo(acc).max / 2
    bad = ~(area <= limit)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{op}: `{name}`[{i}] = {boxes[i].tolist()} is too large: its area must be at most "
            f"{limit:.3g} (half the largest {acc}) for the IoU to be exact"
        )


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two sets of ``xyxy`` boxes.

    Args:
        boxes1: ``[N, 4]`` float boxes (float32/64, float16, bfloat16).
        boxes2: ``[M, 4]`` boxes of the same dtype and device.

    Returns:
        ``[N, M]`` IoU in the input dtype (computed in float32, or float64 for
        float64). Area is ``w * h`` with no "+1"; pairs with an empty union
        (two zero-area boxes) have IoU 0. Differentiable w.r.t. both inputs.
    """
    op = "box_iou"
    box_iou_geometry(boxes1, boxes2)
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        check_box_values(op, name, b)
        _check_iou_range(op, name, b)
    return torch.ops.sniper.box_iou(boxes1, boxes2)


register_fake("box_iou", box_iou_geometry)


def _box_iou_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _minmax_grad(a, b, grad, take_min: bool):
    """Gradient of min(a, b) (or max) w.r.t. a and b; ties split evenly."""
    first = (a < b) if take_min else (a > b)
    tie = a == b
    ga = torch.where(first, grad, torch.where(tie, grad / 2, torch.zeros_like(grad)))
    return ga, grad - ga


def _box_iou_backward(ctx, grad):
    """d IoU / d coordinates, by hand so it stays traceable (no autograd inside)."""
    b1, b2 = ctx.saved_tensors
    dt = torch.float64 if b1.dtype == torch.float64 else torch.float32
    a, b, g = b1.to(dt)[:, None, :], b2.to(dt)[None, :, :], grad.to(dt)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh_raw = rb - lt
    wh = wh_raw.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    ok = union > 0
    safe = torch.where(ok, union, torch.ones_like(union))
    # (g / union) * (x / union), not g * x / union**2: union**2 overflows float32 for sides of ~1e10 px.
    g_inter = torch.where(ok, (g / safe) * ((union + inter) / safe), torch.zeros_like(g))
    g_area = torch.where(ok, -(g / safe) * (inter / safe), torch.zeros_like(g))  # same for both areas
    # inter = w * h with w, h clamped at 0.
    g_w = g_inter * wh[..., 1] * (wh_raw[..., 0] > 0)
    g_h = g_inter * wh[..., 0] * (wh_raw[..., 1] > 0)
    ga_x2, gb_x2 = _minmax_grad(a[..., 2], b[..., 2], g_w, take_min=True)
    ga_y2, gb_y2 = _minmax_grad(a[..., 3], b[..., 3], g_h, take_min=True)
    ga_x1, gb_x1 = _minmax_grad(a[..., 0], b[..., 0], -g_w, take_min=False)
    ga_y1, gb_y1 = _minmax_grad(a[..., 1], b[..., 1], -g_h, take_min=False)

    def area_terms(box, ga):  # d area / d (x1, y1, x2, y2) = (-h, -w, h, w)
        w = box[..., 2] - box[..., 0]
        h = box[..., 3] - box[..., 1]
        return torch.stack([-ga * h, -ga * w, ga * h, ga * w], dim=-1)

    d1 = torch.stack([ga_x1, ga_y1, ga_x2, ga_y2], dim=-1) + area_terms(a, g_area)
    d2 = torch.stack([gb_x1, gb_y1, gb_x2, gb_y2], dim=-1) + area_terms(b, g_area)
    return d1.sum(dim=1).to(b1.dtype), d2.sum(dim=0).to(b2.dtype)


torch.library.register_autograd("sniper::box_iou", _box_iou_backward, setup_context=_box_iou_setup_context)
