"""Box coding: (dx, dy, log dw, log dh) regression targets between reference boxes and targets."""

from __future__ import annotations

import math

import torch

from ..ops._checks import (
    FLOAT_DTYPES,
    _values_known,
    check_numbers,
    check_same_device,
    check_tensor,
)

__all__ = ["encode_boxes", "decode_boxes", "BBOX_XFORM_CLIP"]

#: dw/dh are clamped at log(1000/16) before exp(), as in Faster R-CNN.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


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
