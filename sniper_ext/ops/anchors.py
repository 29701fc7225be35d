"""RPN anchors (method §5): generation, batched labelling with invalid-GT invalidation,
sampling, and box coding."""
from __future__ import annotations

import math

import torch

from ._checks import FLOAT_DTYPES, _compiling, check_same_device, check_tensor, check_threshold

__all__ = ["make_anchors", "label_anchors", "sample_anchors", "encode_boxes", "decode_boxes"]

#: dw/dh are clamped at log(1000/16) before exp(), as in Faster R-CNN.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def make_anchors(feature_hw, stride: int = 16, base_size: float = 16, ratios=(0.5, 1, 2),
                 scales=(2, 4, 7, 10, 13, 16, 24), *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Anchors of a feature map, ``[H*W*A, 4]`` xyxy, A = len(ratios) * len(scales).

    Cell (y, x) is centred at ((x + 0.5)·stride, (y + 0.5)·stride); for ratio r (= h/w) and scale s
    the anchor has area (base_size·s)², width base_size·s/√r and height base_size·s·√r. Row k is
    cell (y, x) = divmod(k // A, W), anchor a = k % A with ratios outer and scales inner. SNIPER's
    default on a 512 chip: feature_hw=(32, 32) -> 32·32·21 = 21,504 anchors.
    """
    h, w = (int(v) for v in feature_hw)
    if h < 0 or w < 0 or stride <= 0 or base_size <= 0 or not ratios or not scales:
        raise ValueError("make_anchors: need feature_hw >= 0, stride > 0, base_size > 0 and non-empty ratios, scales")
    r = torch.tensor(ratios, dtype=torch.float64)[:, None]
    s = torch.tensor(scales, dtype=torch.float64)[None, :]
    aw = (base_size * s / r.sqrt()).reshape(-1)
    ah = (base_size * s * r.sqrt()).reshape(-1)
    shape = torch.stack([-aw / 2, -ah / 2, aw / 2, ah / 2], dim=1)  # [A, 4] around (0, 0)
    cy, cx = torch.meshgrid((torch.arange(h, dtype=torch.float64) + 0.5) * stride,
                            (torch.arange(w, dtype=torch.float64) + 0.5) * stride, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + shape[None]).reshape(-1, 4).to(dtype=dtype, device=device)


def label_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_state: torch.Tensor, canvas_wh: torch.Tensor,
                  *, pos_iou: float = 0.5, neg_iou: float = 0.4, invalid_iou: float = 0.3,
                  allowed_border: float = 32) -> tuple[torch.Tensor, torch.Tensor]:
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
    for name, t in (("gt_boxes", gt_boxes), ("gt_state", gt_state), ("canvas_wh", canvas_wh)):
        check_same_device(op, "anchors", anchors, name, t)
    pos = check_threshold(op, "pos_iou", pos_iou)
    neg = check_threshold(op, "neg_iou", neg_iou)
    if neg > pos:
        raise ValueError(f"{op}: `neg_iou` ({neg}) must not exceed `pos_iou` ({pos})")
    inv = check_threshold(op, "invalid_iou", invalid_iou)
    border = check_threshold(op, "allowed_border", allowed_border)
    if not _compiling():
        if gt_boxes.numel() and not bool(torch.isfinite(gt_boxes[gt_state >= 0]).all()):
            raise ValueError(f"{op}: `gt_boxes` of valid and invalid GT must be finite")
        bad = (gt_state < -1) | (gt_state > 1)
        if gt_state.numel() and bool(bad.any()):
            c, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"{op}: `gt_state` values must be 1, 0 or -1 (valid, invalid, padding), "
                             f"got {int(gt_state[c, j])} at [{c}, {j}]")
    return torch.ops.sniper.label_anchors(anchors, gt_boxes, gt_state, canvas_wh, pos, neg, inv, border)


@torch.library.register_fake("sniper::label_anchors")
def _label_anchors_fake(anchors, gt_boxes, gt_state, canvas_wh, pos_iou, neg_iou, invalid_iou, allowed_border):
    shape = (gt_boxes.shape[0], anchors.shape[0])
    return anchors.new_empty(shape, dtype=torch.int8), anchors.new_empty(shape, dtype=torch.int64)


def sample_anchors(labels: torch.Tensor, num: int = 256, positive_fraction: float = 0.5,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Keeps at most ``num`` labelled anchors per chip, at most ``num·positive_fraction`` of them
    positive (fewer positives leave room for more negatives), chosen uniformly at random; the
    others become -1. ``labels``: ``[B, A]`` in {-1, 0, 1}. Reproducible with ``generator``."""
    check_tensor("sample_anchors", "labels", labels)
    if labels.dim() != 2:
        raise ValueError(f"sample_anchors: `labels` must have shape [B, A], got {tuple(labels.shape)}")
    if num < 0 or not 0 <= positive_fraction <= 1:
        raise ValueError("sample_anchors: need num >= 0 and 0 <= positive_fraction <= 1")
    gen_device = generator.device if generator is not None else labels.device
    r = torch.rand(labels.shape, generator=generator, device=gen_device).to(labels.device)

    def rank(mask):  # rank of each masked entry in a random order of the masked entries
        order = torch.where(mask, r, 2.0).argsort(dim=1)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(labels.shape[1], device=labels.device).expand_as(order))
        return ranks

    pos, neg = labels == 1, labels == 0
    keep_pos = pos & (rank(pos) < int(num * positive_fraction))
    room = num - keep_pos.sum(dim=1, keepdim=True)
    keep_neg = neg & (rank(neg) < room)
    out = torch.full_like(labels, -1)
    out[keep_pos] = 1
    out[keep_neg] = 0
    return out


def _centre_size(b):
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return b[..., 0] + 0.5 * w, b[..., 1] + 0.5 * h, w, h


def encode_boxes(ref: torch.Tensor, target: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Regression targets from ``ref`` to ``target`` (both ``[..., 4]`` xyxy): (wx·dx/w, wy·dy/h,
    ww·log(tw/w), wh·log(th/h)). R-CNN uses weights (10, 10, 5, 5) = 1/stds (0.1, 0.1, 0.2, 0.2)."""
    rx, ry, rw, rh = _centre_size(ref)
    tx, ty, tw, th = _centre_size(target)
    wx, wy, ww, wh = weights
    return torch.stack([wx * (tx - rx) / rw, wy * (ty - ry) / rh,
                        ww * torch.log(tw / rw), wh * torch.log(th / rh)], dim=-1)


def decode_boxes(ref: torch.Tensor, deltas: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0), clip_wh=None) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`; dw, dh are clamped at log(1000/16). ``clip_wh``: (W, H), or a
    tensor broadcastable to ``[..., 2]``, clips the boxes to [0, W] x [0, H]."""
    rx, ry, rw, rh = _centre_size(ref)
    wx, wy, ww, wh = weights
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (deltas[..., 3] / wh).clamp(max=BBOX_XFORM_CLIP)
    cx, cy = rx + dx * rw, ry + dy * rh
    w, h = rw * torch.exp(dw), rh * torch.exp(dh)
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    if clip_wh is not None:
        wh_t = torch.as_tensor(clip_wh, dtype=out.dtype, device=out.device)
        lim = torch.stack([wh_t[..., 0], wh_t[..., 1], wh_t[..., 0], wh_t[..., 1]], dim=-1)
        out = torch.minimum(out.clamp(min=0), lim)
    return out
