"""Proposal filtering and R-CNN target assignment, batched over chips (method §6).

Built from torch operations and the batched NMS kernel, so CPU and CUDA give the same results."""

from __future__ import annotations

import torch

from ..ops._checks import (
    FLOAT_DTYPES,
    _values_known,
    check_box_values,
    check_int,
    check_numbers,
    check_same_device,
    check_tensor,
    check_threshold,
)
from .box_coder import _check_sized_boxes, _decode, _encode

__all__ = ["filter_proposals", "proposal_targets"]  # proposal_candidates: unchecked, for export


def _check_real(op, name, t):
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"{op}: `{name}` must be a real tensor, got {t.dtype}")


def _check_float(op, name, t):
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `{name}` must be a floating tensor, got {t.dtype}")


def _check_integer(op, name, t):
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{op}: `{name}` must be an integer tensor, got {t.dtype}")


def _check_ranges(op, valid_range, b):
    check_tensor(op, "valid_range", valid_range)
    if tuple(valid_range.shape) != (b, 2):
        raise ValueError(
            f"{op}: `valid_range` must have shape [{b}, 2] (lo, hi in chip pixels; hi may be inf), "
            f"got {tuple(valid_range.shape)}"
        )
    _check_real(op, "valid_range", valid_range)


def _check_range_values(op, valid_range):
    """lo finite and >= 0, hi >= lo (hi may be +inf)."""
    if not _values_known(valid_range) or valid_range.numel() == 0:
        return
    lo, hi = valid_range[:, 0].double(), valid_range[:, 1].double()
    bad = ~torch.isfinite(lo) | (lo < 0) | torch.isnan(hi) | (hi < lo)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{op}: `valid_range`[{i}] = {valid_range[i].tolist()} must have 0 <= lo <= hi, lo finite (hi may be inf)"
        )


def _check_finite_values(op, name, t):
    if _values_known(t) and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{op}: `{name}` must be finite")


def _check_top_n(op, name, v):
    return check_int(op, name, v, minimum=0)


def proposal_candidates(anchors, objectness, deltas, canvas_wh, valid_range, min_size, pre_nms_top_n, weights):
    """The NMS candidates of :func:`filter_proposals` (arguments checked there): every anchor
    decoded and clipped to its chip, ``boxes [B, A, 4]``, ``scores [B, A]``, and ``keep [B, A]``:
    both sides >= ``min_size``, area in [lo², hi²), and among the ``pre_nms_top_n`` best of the
    chip. No data-dependent shape and no host read: :mod:`sniper_ext.export` traces it with
    symbolic sizes."""
    a = anchors.shape[0]
    dtype = deltas.dtype
    canvas = canvas_wh.to(dtype)
    boxes = _decode(anchors.to(dtype)[None], deltas, weights, clip_wh=canvas[:, None, :])  # [B, A, 4]
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    area = w * h
    lo, hi = valid_range[:, 0:1].to(dtype), valid_range[:, 1:2].to(dtype)
    keep = (w >= min_size) & (h >= min_size) & (area >= lo * lo) & (area < hi * hi)
    scores = objectness.to(dtype)
    # a symbolic anchor count (export) takes the top min(N, A): the same as skipping when N >= A
    if pre_nms_top_n is not None and (isinstance(a, torch.SymInt) or pre_nms_top_n < a):
        masked = torch.where(keep, scores, torch.full_like(scores, -torch.inf))
        top = masked.topk(torch.sym_min(pre_nms_top_n, a), dim=1).indices
        pre = torch.zeros_like(keep)
        pre.scatter_(1, top, True)
        keep = keep & pre
    return boxes, scores, keep


def filter_proposals(
    anchors,
    objectness,
    deltas,
    canvas_wh,
    valid_range,
    *,
    min_size: float = 3,
    nms_iou: float = 0.7,
    post_nms_top_n: int = 300,
    pre_nms_top_n: int | None = None,
    weights=(1.0, 1.0, 1.0, 1.0),
):
    """RPN proposals of B chips in one call.

    Per chip: decode every anchor with its deltas, clip to the chip, keep boxes with both sides
    >= ``min_size`` and area in [lo², hi²) of the chip's valid range, optionally keep the
    ``pre_nms_top_n`` best, NMS at ``nms_iou``, keep the ``post_nms_top_n`` best.

    Args:
        anchors: ``[A, 4]``; objectness: ``[B, A]`` scores (higher is better); deltas: ``[B, A, 4]``;
        canvas_wh: ``[B, 2]``; valid_range: ``[B, 2]`` (lo, hi) box *sizes* in chip pixels.

    Returns:
        ``(boxes [P, 4], scores [P], chip [P])`` packed, by chip, then score descending.
    """
    op = "filter_proposals"
    for name, t in (("anchors", anchors), ("objectness", objectness), ("deltas", deltas), ("canvas_wh", canvas_wh)):
        check_tensor(op, name, t)
    if anchors.dim() != 2 or anchors.shape[1] != 4:
        raise ValueError(f"{op}: `anchors` must have shape [A, 4], got {tuple(anchors.shape)}")
    a = anchors.shape[0]
    if objectness.dim() != 2 or objectness.shape[1] != a:
        raise ValueError(f"{op}: `objectness` must have shape [B, {a}], got {tuple(objectness.shape)}")
    b = objectness.shape[0]
    if tuple(deltas.shape) != (b, a, 4):
        raise ValueError(f"{op}: `deltas` must have shape [{b}, {a}, 4], got {tuple(deltas.shape)}")
    if tuple(canvas_wh.shape) != (b, 2):
        raise ValueError(f"{op}: `canvas_wh` must have shape [{b}, 2], got {tuple(canvas_wh.shape)}")
    _check_ranges(op, valid_range, b)
    _check_float(op, "anchors", anchors)
    _check_float(op, "objectness", objectness)
    _check_float(op, "deltas", deltas)
    _check_real(op, "canvas_wh", canvas_wh)
    for name, t in (
        ("objectness", objectness),
        ("deltas", deltas),
        ("canvas_wh", canvas_wh),
        ("valid_range", valid_range),
    ):
        check_same_device(op, "anchors", anchors, name, t)
    thr = check_threshold(op, "nms_iou", nms_iou)
    min_size = check_threshold(op, "min_size", min_size)
    post_nms_top_n = min(_check_top_n(op, "post_nms_top_n", post_nms_top_n), a)  # no chip has more than A
    if pre_nms_top_n is not None:
        pre_nms_top_n = _check_top_n(op, "pre_nms_top_n", pre_nms_top_n)
    weights = check_numbers(op, "weights", weights, length=4)
    _check_sized_boxes(op, "anchors", anchors)
    _check_finite_values(op, "objectness", objectness)
    _check_finite_values(op, "deltas", deltas)
    if _values_known(canvas_wh) and canvas_wh.numel() and not bool((torch.isfinite(canvas_wh) & (canvas_wh > 0)).all()):
        raise ValueError(f"{op}: `canvas_wh` must be finite and positive")
    _check_range_values(op, valid_range)

    boxes, scores, keep = proposal_candidates(
        anchors, objectness, deltas, canvas_wh, valid_range, min_size, pre_nms_top_n, weights
    )
    chip = torch.arange(b, device=anchors.device)[:, None].expand(b, a)
    boxes, scores, chip = boxes[keep], scores[keep], chip[keep]
    # Finite, clipped boxes and finite scores: the raw op needs none of the wrapper's value checks.
    kept = torch.ops.sniper.batched_nms(boxes.detach(), scores.detach(), chip, thr)  # score descending
    order = torch.sort(chip[kept], stable=True).indices  # by chip, score descending within
    kept = kept[order]
    kc = chip[kept]
    first = torch.searchsorted(kc, kc, right=False)
    rank = torch.arange(len(kc), device=kc.device) - first
    kept = kept[rank < post_nms_top_n]
    return boxes[kept], scores[kept], chip[kept]


def proposal_targets(
    proposals,
    proposal_chip,
    gt_boxes,
    gt_labels,
    gt_state,
    valid_range,
    *,
    fg_iou: float = 0.5,
    weights=(10.0, 10.0, 5.0, 5.0),
):
    """R-CNN RoIs and targets for B chips (method §6).

    RoIs are the proposals plus each chip's GT (valid or invalid) whose area lies in
    [lo², hi²) of the chip's valid range. Each RoI takes the class of its highest-IoU GT in the
    chip (valid or invalid; lowest index on ties) if that IoU > ``fg_iou``, else 0 (background);
    no fg/bg sampling. Foreground RoIs get class-agnostic regression targets to that GT, encoded
    with ``weights`` (1/stds); background targets are 0. RoIs carry no gradient.

    Args:
        proposals: ``[P, 4]``; proposal_chip: ``[P]`` int64 chip of each proposal;
        gt_boxes: ``[B, G, 4]``; gt_labels: ``[B, G]`` int64 classes 1..C; gt_state: ``[B, G]`` int8
        (1 valid, 0 invalid, -1 padding); valid_range: ``[B, 2]`` (lo, hi) sizes in chip pixels.

    Returns:
        ``(rois [R, 4], roi_chip [R], labels [R] int64, targets [R, 4])``, by chip: its proposals,
        then its added GT.
    """
    op = "proposal_targets"
    for name, t in (
        ("proposals", proposals),
        ("proposal_chip", proposal_chip),
        ("gt_boxes", gt_boxes),
        ("gt_labels", gt_labels),
        ("gt_state", gt_state),
    ):
        check_tensor(op, name, t)
    if proposals.dim() != 2 or proposals.shape[1] != 4:
        raise ValueError(f"{op}: `proposals` must have shape [P, 4], got {tuple(proposals.shape)}")
    if tuple(proposal_chip.shape) != (proposals.shape[0],):
        raise ValueError(f"{op}: `proposal_chip` must have shape [{proposals.shape[0]}]")
    if gt_boxes.dim() != 3 or gt_boxes.shape[2] != 4:
        raise ValueError(f"{op}: `gt_boxes` must have shape [B, G, 4], got {tuple(gt_boxes.shape)}")
    b, g = gt_boxes.shape[:2]
    for name, t in (("gt_labels", gt_labels), ("gt_state", gt_state)):
        if tuple(t.shape) != (b, g):
            raise ValueError(f"{op}: `{name}` must have shape [{b}, {g}], got {tuple(t.shape)}")
    _check_ranges(op, valid_range, b)
    _check_float(op, "proposals", proposals)
    _check_float(op, "gt_boxes", gt_boxes)
    _check_integer(op, "proposal_chip", proposal_chip)
    _check_integer(op, "gt_labels", gt_labels)
    if gt_state.dtype != torch.int8:
        raise TypeError(f"{op}: `gt_state` must be int8 (1 valid, 0 invalid, -1 padding), got {gt_state.dtype}")
    for name, t in (
        ("proposal_chip", proposal_chip),
        ("gt_boxes", gt_boxes),
        ("gt_labels", gt_labels),
        ("gt_state", gt_state),
        ("valid_range", valid_range),
    ):
        check_same_device(op, "proposals", proposals, name, t)
    fg = check_threshold(op, "fg_iou", fg_iou)
    weights = check_numbers(op, "weights", weights, length=4)
    if _values_known(proposals):
        check_box_values(op, "proposals", proposals)
        if proposals.shape[0]:
            lo_c, hi_c = int(proposal_chip.min()), int(proposal_chip.max())
            if lo_c < 0 or hi_c >= b:
                raise ValueError(f"{op}: `proposal_chip` values must lie in [0, {b}), got [{lo_c}, {hi_c}]")
        if gt_state.numel() and not bool(((gt_state >= -1) & (gt_state <= 1)).all()):
            raise ValueError(f"{op}: `gt_state` values must be 1, 0 or -1")
        present = gt_boxes[gt_state >= 0]
        if present.numel():
            check_box_values(op, "gt_boxes (valid and invalid GT)", present)
        _check_range_values(op, valid_range)

    dtype = proposals.dtype
    present = gt_state >= 0
    gtb = torch.where(present[..., None], gt_boxes.to(dtype), 0)  # padding may hold anything
    area = (gtb[..., 2] - gtb[..., 0]) * (gtb[..., 3] - gtb[..., 1])
    lo, hi = valid_range[:, 0:1].to(dtype), valid_range[:, 1:2].to(dtype)
    add = present & (area >= lo * lo) & (area < hi * hi)
    gt_chip = torch.arange(b, device=proposals.device)[:, None].expand(b, g)
    rois = torch.cat([proposals.detach(), gtb[add]])
    roi_chip = torch.cat([proposal_chip.long(), gt_chip[add]])
    order = torch.sort(roi_chip, stable=True).indices
    rois, roi_chip = rois[order], roi_chip[order]

    labels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
    targets = torch.zeros(len(rois), 4, dtype=dtype, device=rois.device)
    if len(rois) and g:
        # One IoU call for every RoI against every chip's GT, then each RoI reads its own chip's row:
        # no per-chip loop (B * G columns; a few MB for a training batch).
        r = len(rois)
        iou = torch.ops.sniper.box_iou(rois, gtb.reshape(b * g, 4)).view(r, b, g)  # checked above
        iou = iou.gather(1, roi_chip.view(r, 1, 1).expand(r, 1, g)).squeeze(1)  # [R, G]
        iou = torch.where(present[roi_chip], iou, torch.full_like(iou, -1))
        best, arg = iou.max(dim=1)  # first maximum: lowest GT index on ties
        is_fg = best > fg
        labels = torch.where(is_fg, gt_labels.long()[roi_chip, arg], labels)
        # Only foreground RoIs are encoded: an IoU > 0 means both boxes have positive width and height.
        fg_rows = is_fg.nonzero()[:, 0]
        if len(fg_rows):
            targets[fg_rows] = _encode(rois[fg_rows], gtb[roi_chip[fg_rows], arg[fg_rows]], weights)
    return rois, roi_chip, labels, targets
