"""RPN anchors (method §5): generation, batched labelling with invalid-GT invalidation,
sampling, and box coding."""

from __future__ import annotations

import math

import torch

from ._checks import (
    FLOAT_DTYPES,
    SIGNED_INT_DTYPES,
    _values_known,
    check_box_values,
    check_int,
    check_number,
    check_numbers,
    check_numel,
    check_same_device,
    check_tensor,
    check_threshold,
)

__all__ = ["make_anchors", "label_anchors", "sample_anchors", "encode_boxes", "decode_boxes"]

#: dw/dh are clamped at log(1000/16) before exp(), as in Faster R-CNN.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_dtype_arg(op: str, dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{op}: `dtype` must be a floating torch.dtype, got {dtype!r}")
    return dtype


def _check_device_arg(op: str, device):
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise TypeError(f"{op}: `device` must be a torch.device, a string or an index, got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{op}: `device` {device!r} is not a device ({e})") from None


def make_anchors(
    feature_hw,
    stride: int = 16,
    base_size: float = 16,
    ratios=(0.5, 1, 2),
    scales=(2, 4, 7, 10, 13, 16, 24),
    *,
    dtype=torch.float32,
    device=None,
) -> torch.Tensor:
    """Anchors of a feature map, ``[H*W*A, 4]`` xyxy, A = len(ratios) * len(scales).

    Cell (y, x) is centred at ((x + 0.5)·stride, (y + 0.5)·stride); for ratio r (= h/w) and scale s
    the anchor has area (base_size·s)², width base_size·s/√r and height base_size·s·√r. Row k is
    cell (y, x) = divmod(k // A, W), anchor a = k % A with ratios outer and scales inner. SNIPER's
    default on a 512 chip: feature_hw=(32, 32) -> 32·32·21 = 21,504 anchors.

    ``feature_hw`` are ints >= 0; ``stride``, ``base_size``, ``ratios`` and ``scales`` finite and > 0;
    every anchor coordinate must be representable in ``dtype``.
    """
    op = "make_anchors"
    if isinstance(feature_hw, (str, bytes)) or not hasattr(feature_hw, "__len__") or len(feature_hw) != 2:
        raise TypeError(f"{op}: `feature_hw` must be a pair of ints (H, W), got {feature_hw!r}")
    h, w = (check_int(op, f"feature_hw[{i}]", v, minimum=0) for i, v in enumerate(feature_hw))
    stride_px = check_number(op, "stride", stride, positive=True)
    base_px = check_number(op, "base_size", base_size, positive=True)
    r = torch.tensor(check_numbers(op, "ratios", ratios), dtype=torch.float64)[:, None]
    s = torch.tensor(check_numbers(op, "scales", scales), dtype=torch.float64)[None, :]
    dtype = _check_dtype_arg(op, dtype)
    device = _check_device_arg(op, device)
    check_numel(op, "the anchors", (h, w, r.numel() * s.numel(), 4))
    aw = (base_px * s / r.sqrt()).reshape(-1)
    ah = (base_px * s * r.sqrt()).reshape(-1)
    # The farthest coordinate any anchor reaches, checked against the dtype before anything is built.
    reach = max(h, w) * stride_px + max(float(aw.max()), float(ah.max())) / 2
    if not reach <= torch.finfo(dtype).max:
        raise ValueError(
            f"{op}: anchors would reach coordinate {reach:.4g}, beyond the range of {dtype} "
            f"({torch.finfo(dtype).max:.4g}); check stride, base_size, ratios and scales"
        )
    shape = torch.stack([-aw / 2, -ah / 2, aw / 2, ah / 2], dim=1)  # [A, 4] around (0, 0)
    try:
        cy, cx = torch.meshgrid(
            (torch.arange(h, dtype=torch.float64) + 0.5) * stride_px,
            (torch.arange(w, dtype=torch.float64) + 0.5) * stride_px,
            indexing="ij",
        )
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        return (centres + shape[None]).reshape(-1, 4).to(dtype=dtype, device=device)
    except (RuntimeError, AssertionError) as e:  # out of memory; a CUDA device without CUDA ...
        raise RuntimeError(f"{op}: cannot create {h}x{w}x{shape.shape[0]} anchors on {device or 'cpu'}: {e}") from None


def _check_label_anchors_args(op, anchors, gt_boxes, gt_state, canvas_wh):
    """Types, shapes, dtypes and devices (shared by the wrapper and the fake kernel)."""
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
    _check_label_anchors_args(op, anchors, gt_boxes, gt_state, canvas_wh)
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


@torch.library.register_fake("sniper::label_anchors")
def _label_anchors_fake(anchors, gt_boxes, gt_state, canvas_wh, pos_iou, neg_iou, invalid_iou, allowed_border):
    _check_label_anchors_args("label_anchors", anchors, gt_boxes, gt_state, canvas_wh)
    shape = (gt_boxes.shape[0], anchors.shape[0])
    return anchors.new_empty(shape, dtype=torch.int8), anchors.new_empty(shape, dtype=torch.int64)


def sample_anchors(
    labels: torch.Tensor, num: int = 256, positive_fraction: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keeps at most ``num`` labelled anchors per chip, at most ``num·positive_fraction`` of them
    positive (fewer positives leave room for more negatives), chosen uniformly at random; the
    others become -1. ``labels``: ``[B, A]`` signed integers in {-1, 0, 1} (e.g. the int8 labels of
    :func:`label_anchors`); ``num`` an int >= 0. Reproducible with ``generator``."""
    op = "sample_anchors"
    check_tensor(op, "labels", labels)
    if labels.dim() != 2:
        raise ValueError(f"{op}: `labels` must have shape [B, A], got {tuple(labels.shape)}")
    if labels.dtype not in SIGNED_INT_DTYPES:
        raise TypeError(
            f"{op}: `labels` must be a signed integer tensor (-1 ignore, 0 negative, 1 positive), got {labels.dtype}"
        )
    num = check_int(op, "num", num, minimum=0)
    positive_fraction = check_number(op, "positive_fraction", positive_fraction, minimum=0, maximum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{op}: `generator` must be a torch.Generator or None, got {type(generator).__name__}")
    if _values_known(labels) and labels.numel() and not bool(((labels >= -1) & (labels <= 1)).all()):
        raise ValueError(f"{op}: `labels` values must be -1, 0 or 1")
    num = min(num, labels.shape[1])  # keeping more than all is keeping all
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


def _check_coder_args(op, ref, other, other_name, weights):
    """Shapes [..., 4] that broadcast, one floating dtype and device, 4 finite positive weights."""
    for name, t in (("ref", ref), (other_name, other)):
        check_tensor(op, name, t)
        if t.dim() == 0 or t.shape[-1] != 4:
            raise ValueError(f"{op}: `{name}` must have shape [..., 4] (xyxy boxes or deltas), got {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: `{name}` must be a floating tensor, got {t.dtype}")
    if other.dtype != ref.dtype:
        raise TypeError(f"{op}: `{other_name}` must have the dtype of `ref` ({ref.dtype}), got {other.dtype}")
    check_same_device(op, "ref", ref, other_name, other)
    try:
        torch.broadcast_shapes(ref.shape, other.shape)
    except RuntimeError:
        raise ValueError(
            f"{op}: the shapes of `ref` {tuple(ref.shape)} and `{other_name}` {tuple(other.shape)} do not broadcast"
        ) from None
    return check_numbers(op, "weights", weights, length=4)


def _check_sized_boxes(op, name, boxes):
    """Finite boxes of positive width and height (reference boxes: the coding divides by them)."""
    if not _values_known(boxes) or boxes.numel() == 0:
        return
    flat = boxes.reshape(-1, 4)
    bad = ~torch.isfinite(flat).all(dim=1) | ~(flat[:, 2] > flat[:, 0]) | ~(flat[:, 3] > flat[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{op}: `{name}` box {i} = {flat[i].tolist()} must be finite with x2 > x1 and y2 > y1 "
            "(positive width and height)"
        )


def _encode(ref, target, weights):
    rx, ry, rw, rh = _centre_size(ref)
    tx, ty, tw, th = _centre_size(target)
    wx, wy, ww, wh = weights
    return torch.stack(
        [wx * (tx - rx) / rw, wy * (ty - ry) / rh, ww * torch.log(tw / rw), wh * torch.log(th / rh)], dim=-1
    )


def encode_boxes(ref: torch.Tensor, target: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Regression targets from ``ref`` to ``target`` (both ``[..., 4]`` xyxy, broadcastable, one floating
    dtype; both finite with positive width and height): (wx·dx/w, wy·dy/h, ww·log(tw/w), wh·log(th/h)).
    ``weights``: 4 positive numbers; R-CNN uses (10, 10, 5, 5) = 1/stds (0.1, 0.1, 0.2, 0.2)."""
    op = "encode_boxes"
    weights = _check_coder_args(op, ref, target, "target", weights)
    _check_sized_boxes(op, "ref", ref)
    _check_sized_boxes(op, "target", target)
    return _encode(ref, target, weights)


def _decode(ref, deltas, weights, clip_wh=None):
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


def _check_clip(op, clip_wh, out_shape, device):
    """(W, H) numbers, or a tensor ``[..., 2]`` broadcastable to the boxes; finite and >= 0."""
    if isinstance(clip_wh, torch.Tensor):
        if clip_wh.dim() == 0 or clip_wh.shape[-1] != 2:
            raise ValueError(
                f"{op}: `clip_wh` must be (W, H) or a tensor of shape [..., 2], got {tuple(clip_wh.shape)}"
            )
        if clip_wh.dtype == torch.bool or clip_wh.dtype.is_complex:
            raise TypeError(f"{op}: `clip_wh` must be a real tensor, got {clip_wh.dtype}")
        check_same_device(op, "ref", torch.empty(0, device=device), "clip_wh", clip_wh)
        try:
            ok = torch.broadcast_shapes(clip_wh.shape[:-1], tuple(out_shape[:-1])) == tuple(out_shape[:-1])
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{op}: `clip_wh` of shape {tuple(clip_wh.shape)} does not broadcast to the boxes {tuple(out_shape)}"
            )
        if _values_known(clip_wh) and clip_wh.numel() and not bool((torch.isfinite(clip_wh) & (clip_wh >= 0)).all()):
            raise ValueError(f"{op}: `clip_wh` must be finite and >= 0")
        return clip_wh
    w, h = check_numbers(op, "clip_wh", clip_wh, length=2, positive=False)
    if w < 0 or h < 0:
        raise ValueError(f"{op}: `clip_wh` must be >= 0, got {clip_wh!r}")
    return (w, h)


def decode_boxes(ref: torch.Tensor, deltas: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0), clip_wh=None) -> torch.Tensor:
    """Inverse of :func:`encode_boxes` (``ref`` finite with positive width and height, ``deltas`` finite,
    ``[..., 4]`` broadcastable, one floating dtype); dw, dh are clamped at log(1000/16). ``clip_wh``: (W, H),
    or a tensor broadcastable to ``[..., 2]``, finite and >= 0, clips the boxes to [0, W] x [0, H]."""
    op = "decode_boxes"
    weights = _check_coder_args(op, ref, deltas, "deltas", weights)
    if clip_wh is not None:
        clip_wh = _check_clip(op, clip_wh, torch.broadcast_shapes(ref.shape, deltas.shape), ref.device)
    _check_sized_boxes(op, "ref", ref)
    if _values_known(deltas) and deltas.numel() and not bool(torch.isfinite(deltas).all()):
        raise ValueError(f"{op}: `deltas` must be finite")
    return _decode(ref, deltas, weights, clip_wh)
