"""Baselines that the benchmarks and `sniper demo` run beside our kernels: the classic NumPy greedy
algorithms (one vectorised pass per selection, as in the original Soft-NMS
code) and plain PyTorch broadcasting for IoU."""
from __future__ import annotations

import numpy as np
import torch


def _iou_one_to_many(box, boxes, area, areas):
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    return inter / (area + areas - inter)


def soft_nms_numpy(boxes, scores, method="gaussian", sigma=0.5, iou_threshold=0.3, score_threshold=1e-3):
    """Classic Soft-NMS over one group; returns (kept indices, decayed scores)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).copy()
    idx = np.arange(len(boxes))
    live = scores >= score_threshold
    boxes, scores, idx = boxes[live], scores[live], idx[live]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep, kept_scores = [], []
    while scores.size:
        i = int(np.argmax(scores))
        keep.append(idx[i])
        kept_scores.append(scores[i])
        box, area = boxes[i], areas[i]
        rest = np.ones(len(scores), dtype=bool)
        rest[i] = False
        boxes, scores, idx, areas = boxes[rest], scores[rest], idx[rest], areas[rest]
        iou = _iou_one_to_many(box, boxes, area, areas)
        if method == "gaussian":
            weight = np.exp(-(iou * iou) / sigma)
        elif method == "linear":
            weight = np.where(iou >= iou_threshold, 1 - iou, 1)
        else:
            weight = np.where(iou >= iou_threshold, 0, 1)
        scores = scores * weight
        live = scores >= score_threshold
        boxes, scores, idx, areas = boxes[live], scores[live], idx[live], areas[live]
    return np.array(keep, dtype=np.int64), np.array(kept_scores, dtype=np.float32)


def batched_soft_nms_numpy(boxes, scores, idxs, **kw):
    boxes, scores, idxs = np.asarray(boxes), np.asarray(scores), np.asarray(idxs)
    order = np.argsort(idxs, kind="stable")
    bounds = np.flatnonzero(np.diff(idxs[order])) + 1
    keep, kept = [], []
    for members in np.split(order, bounds):
        k, s = soft_nms_numpy(boxes[members], scores[members], **kw)
        keep.append(members[k])
        kept.append(s)
    keep, kept = np.concatenate(keep), np.concatenate(kept)
    o = np.argsort(-kept, kind="stable")
    return keep[o], kept[o]


def nms_numpy(boxes, scores, iou_threshold):
    boxes = np.asarray(boxes, dtype=np.float32)
    order = np.argsort(-np.asarray(scores), kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        iou = _iou_one_to_many(boxes[i], boxes[order[1:]], areas[i], areas[order[1:]])
        order = order[1:][iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def box_iou_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def chip_candidates_numpy(width, height, chip_size=512, stride=32):
    """Candidate chips [C, 4] of one canvas, row-major (method §2)."""

    def starts(length):
        if length <= chip_size:
            return np.zeros(1)
        grid = np.arange(0, length - chip_size, stride, dtype=np.float64)
        return np.append(grid, length - chip_size)

    xs, ys = starts(width), starts(height)
    x, y = np.meshgrid(xs, ys)  # rows are y
    x, y = x.ravel(), y.ravel()
    return np.stack([x, y, np.minimum(x + chip_size, width), np.minimum(y + chip_size, height)], axis=1)


def greedy_chip_cover_numpy(boxes, width, height, chip_size=512, stride=32):
    """One group, canonical order: (chips [C, 4], box_chip [N]) with a dense coverage matrix."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = boxes.copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    cands = chip_candidates_numpy(width, height, chip_size, stride)
    cover = ((cands[:, None, 0] <= b[None, :, 0]) & (cands[:, None, 1] <= b[None, :, 1])
             & (b[None, :, 2] <= cands[:, None, 2]) & (b[None, :, 3] <= cands[:, None, 3]))
    uncovered = cover.any(axis=0)
    box_chip = np.full(len(b), -1, dtype=np.int64)
    chips = []
    while uncovered.any():
        counts = cover[:, uncovered].sum(axis=1)
        best = int(np.argmax(counts))
        newly = cover[best] & uncovered
        box_chip[newly] = len(chips)
        uncovered &= ~cover[best]
        chips.append(cands[best])
    return np.array(chips).reshape(-1, 4), box_chip


def label_anchors_torch(anchors, gt_boxes, gt_state, canvas_wh, pos_iou=0.5, neg_iou=0.4, invalid_iou=0.3,
                        allowed_border=32.0):
    """Vectorised plain-PyTorch anchor labelling (method §5) over all chips: a [B, A, G] IoU tensor."""
    a = anchors[None, :, None, :]
    g = gt_boxes[:, None, :, :]
    lt = torch.maximum(a[..., :2], g[..., :2])
    rb = torch.minimum(a[..., 2:], g[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    area_g = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    union = area_a[None, :, None] + area_g[:, None, :] - inter
    iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))  # [B, A, G]
    valid = (gt_state == 1)[:, None, :]
    invalid = (gt_state == 0)[:, None, :]
    w, h = canvas_wh[:, 0:1], canvas_wh[:, 1:2]
    considered = ((anchors[None, :, 0] >= -allowed_border) & (anchors[None, :, 1] >= -allowed_border)
                  & (anchors[None, :, 2] <= w + allowed_border) & (anchors[None, :, 3] <= h + allowed_border))
    iou_valid = torch.where(valid, iou, torch.full_like(iou, -1))
    max_iou, arg = iou_valid.max(dim=2)
    max_iou = max_iou.clamp(min=0)
    gt_best = torch.where(considered[..., None], iou_valid, torch.full_like(iou, -1)).max(dim=1).values  # [B, G]
    best = ((iou_valid == gt_best[:, None, :]) & (gt_best[:, None, :] > 0) & considered[..., None]).any(dim=2)
    has_valid = valid.any(dim=2)
    labels = torch.where(max_iou >= pos_iou, 1, torch.where(max_iou < neg_iou, 0, -1))
    labels = torch.where(best, 1, labels)
    labels = torch.where(has_valid, labels, torch.zeros_like(labels))
    near_invalid = ((iou > invalid_iou) & invalid).any(dim=2)
    labels = torch.where(near_invalid | ~considered, -1, labels).to(torch.int8)
    matched = torch.where(labels == 1, arg, torch.full_like(arg, -1))
    return labels, matched
