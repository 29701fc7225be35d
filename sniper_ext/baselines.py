"""Baselines that the benchmarks and `sniper demo` run beside our kernels: the classic NumPy greedy
algorithms (one vectorised pass per selection, as in the original Soft-NMS
code) and plain PyTorch broadcasting for IoU."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def box_iou_pairwise(a, b, area_a=None, area_b=None):
    """IoU of every box of `a` [..., N, 4] with every box of `b` [..., M, 4] (xyxy) -> [..., N, M], by
    broadcasting; NumPy arrays or torch tensors (the leading dimensions broadcast). The areas can be
    passed in when a greedy loop already has them. A pair with union 0 gives 0/0 = NaN, as the classic
    code does; callers that can meet empty boxes mask it (see label_anchors_torch)."""
    xp = torch if isinstance(a, torch.Tensor) else np
    if area_a is None:
        area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    if area_b is None:
        area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = xp.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = xp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clip(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def _iou_one_to_many(box, boxes, area, areas):
    return box_iou_pairwise(box[None], boxes, np.asarray(area)[None], areas)[0]


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
    keep_parts, kept_parts = [], []
    for members in np.split(order, bounds):
        k, s = soft_nms_numpy(boxes[members], scores[members], **kw)
        keep_parts.append(members[k])
        kept_parts.append(s)
    keep, kept = np.concatenate(keep_parts), np.concatenate(kept_parts)
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
    """Plain PyTorch broadcasting IoU [N, M] (the benchmarks' baseline for ops.box_iou)."""
    return box_iou_pairwise(a, b)


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
    cover = (
        (cands[:, None, 0] <= b[None, :, 0])
        & (cands[:, None, 1] <= b[None, :, 1])
        & (b[None, :, 2] <= cands[:, None, 2])
        & (b[None, :, 3] <= cands[:, None, 3])
    )
    uncovered = cover.any(axis=0)
    box_chip = np.full(len(b), -1, dtype=np.int64)
    chips: list = []
    while uncovered.any():
        counts = cover[:, uncovered].sum(axis=1)
        best = int(np.argmax(counts))
        newly = cover[best] & uncovered
        box_chip[newly] = len(chips)
        uncovered &= ~cover[best]
        chips.append(cands[best])
    return np.array(chips).reshape(-1, 4), box_chip


def label_anchors_torch(
    anchors, gt_boxes, gt_state, canvas_wh, pos_iou=0.5, neg_iou=0.4, invalid_iou=0.3, allowed_border=32.0
):
    """Vectorised plain-PyTorch anchor labelling (method §5) over all chips: a [B, A, G] IoU tensor."""
    iou = box_iou_pairwise(anchors, gt_boxes).nan_to_num(nan=0.0)  # [B, A, G]; union 0 -> 0
    valid = (gt_state == 1)[:, None, :]
    invalid = (gt_state == 0)[:, None, :]
    w, h = canvas_wh[:, 0:1], canvas_wh[:, 1:2]
    considered = (
        (anchors[None, :, 0] >= -allowed_border)
        & (anchors[None, :, 1] >= -allowed_border)
        & (anchors[None, :, 2] <= w + allowed_border)
        & (anchors[None, :, 3] <= h + allowed_border)
    )
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


def deform_conv2d_torch(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Plain-PyTorch deformable convolution: bilinear sampling with ``F.grid_sample`` (zeros
    padding, align_corners=True: the same sampling rule) per offset group and tap, then a matmul."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n, c, h, w = input.shape
    oc, cg, kh, kw = weight.shape
    groups, K = c // cg, kh * kw
    oh, ow = offset.shape[2:]
    og = offset.shape[1] // (2 * K)
    ys = (torch.arange(oh, device=input.device) * sh - ph).to(input.dtype)
    xs = (torch.arange(ow, device=input.device) * sw - pw).to(input.dtype)
    cols = []
    for g in range(og):
        x_g = input[:, g * (c // og) : (g + 1) * (c // og)]
        taps = []
        for k in range(K):
            ki, kj = divmod(k, kw)
            y = ys[:, None] + ki * dh + offset[:, 2 * (g * K + k)]
            x = xs[None, :] + kj * dw + offset[:, 2 * (g * K + k) + 1]
            grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
            v = F.grid_sample(x_g, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            if mask is not None:
                v = v * mask[:, g * K + k][:, None]
            taps.append(v)
        cols.append(torch.stack(taps, dim=2))  # [n, c/og, K, oh, ow]
    columns = torch.cat(cols, dim=1).reshape(n, groups, cg * K, oh * ow)
    out = torch.matmul(weight.reshape(groups, oc // groups, cg * K), columns).reshape(n, oc, oh, ow)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def roi_pool_torch(input, rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned, offset=None, gamma=0.1):
    """Plain-PyTorch RoIAlign / deformable RoI pooling with a fixed sampling grid (ratio > 0),
    vectorised over RoIs, bins and samples with gathers."""
    k = rois.shape[0]
    n, c, h, w = input.shape
    g = sampling_ratio
    off = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - off, rois[:, 2] * spatial_scale - off
    rw, rh = rois[:, 3] * spatial_scale - off - x1, rois[:, 4] * spatial_scale - off - y1
    if not aligned:
        rw, rh = rw.clamp(min=1), rh.clamp(min=1)
    bw, bh = rw / pooled_w, rh / pooled_h
    i = torch.arange(pooled_h, device=input.device, dtype=input.dtype)
    j = torch.arange(pooled_w, device=input.device, dtype=input.dtype)
    s = (torch.arange(g, device=input.device, dtype=input.dtype) + 0.5) / g
    y = y1[:, None, None] + (i[None, :, None] + s[None, None, :]) * bh[:, None, None]  # [K, ph, g]
    x = x1[:, None, None] + (j[None, :, None] + s[None, None, :]) * bw[:, None, None]  # [K, pw, g]
    y = y[:, :, None, :, None].expand(k, pooled_h, pooled_w, g, g)
    x = x[:, None, :, None, :].expand(k, pooled_h, pooled_w, g, g)
    if offset is not None:
        y = y + (gamma * rh[:, None, None] * offset[:, 1])[..., None, None]
        x = x + (gamma * rw[:, None, None] * offset[:, 0])[..., None, None]
    outside = (y < -1) | (y > h) | (x < -1) | (x > w)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y0, x0 = y.floor().clamp(max=h - 1), x.floor().clamp(max=w - 1)
    y = torch.where(y0 >= h - 1, y0, y)
    x = torch.where(x0 >= w - 1, x0, x)
    y1i, x1i = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    ly, lx = y - y0, x - x0
    b = rois[:, 0].long()[:, None, None, None, None]
    feat = input.permute(0, 2, 3, 1)  # [n, h, w, c]

    def at(yy, xx):
        return feat[b, yy.long(), xx.long()]  # [K, ph, pw, g, g, c]

    v = (
        ((1 - ly) * (1 - lx))[..., None] * at(y0, x0)
        + ((1 - ly) * lx)[..., None] * at(y0, x1i)
        + (ly * (1 - lx))[..., None] * at(y1i, x0)
        + (ly * lx)[..., None] * at(y1i, x1i)
    )
    v = torch.where(outside[..., None], torch.zeros_like(v), v)
    return v.mean(dim=(3, 4)).permute(0, 3, 1, 2)
