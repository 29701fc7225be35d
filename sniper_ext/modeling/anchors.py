"""RPN anchors (method §5): generation on a feature grid and per-chip sampling of the labelled
anchors (the labels come from the compiled op :func:`sniper_ext.ops.label_anchors`)."""

from __future__ import annotations

import torch

from ..ops._checks import (
    SIGNED_INT_DTYPES,
    _values_known,
    check_int,
    check_number,
    check_numbers,
    check_numel,
    check_same_device,
    check_tensor,
)

__all__ = [
    "make_anchors",
    "sample_anchors",
]  # keyed_uniform: exported by sniper_ext.modeling


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
    shape = _shape(aw, ah)
    try:
        return grid_anchors(shape, h, w, stride_px).to(dtype=dtype, device=device)
    except (RuntimeError, AssertionError) as e:  # out of memory; a CUDA device without CUDA ...
        raise RuntimeError(f"{op}: cannot create {h}x{w}x{shape.shape[0]} anchors on {device or 'cpu'}: {e}") from None


def _shape(aw, ah):
    return torch.stack([-aw / 2, -ah / 2, aw / 2, ah / 2], dim=1)  # [A, 4] around (0, 0)


def anchor_shape(base_size: float, ratios, scales) -> torch.Tensor:
    """float64 ``[A, 4]``: :func:`make_anchors`'s anchors of one cell around (0, 0), in its row order
    (for :func:`grid_anchors`)."""
    make_anchors((0, 0), 1, base_size, ratios, scales)  # the checks
    r = torch.tensor([float(v) for v in ratios], dtype=torch.float64)[:, None]
    s = torch.tensor([float(v) for v in scales], dtype=torch.float64)[None, :]
    base = float(base_size)
    return _shape((base * s / r.sqrt()).reshape(-1), (base * s * r.sqrt()).reshape(-1))


def grid_anchors(shape: torch.Tensor, h, w, stride: float) -> torch.Tensor:
    """The anchors of an ``h`` x ``w`` map from the float64 ``[A, 4]`` anchor ``shape`` around (0, 0)
    (:func:`make_anchors`'s rows, float64). No argument checks and no Python arithmetic on ``h``,
    ``w``: traceable with symbolic sizes (:mod:`sniper_ext.export`)."""
    cy, cx = torch.meshgrid(
        (torch.arange(h, dtype=torch.float64, device=shape.device) + 0.5) * stride,
        (torch.arange(w, dtype=torch.float64, device=shape.device) + 0.5) * stride,
        indexing="ij",
    )
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + shape[None]).reshape(-1, 4)


_MASK64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def _lshr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def keyed_uniform(keys: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, n]`` float32 numbers in [0, 1), a pure function of (key, column): SplitMix64 of
    ``key * 2^32 + column`` in wrapping int64 arithmetic, top 24 bits. The same on every device and
    for any batch split, so a chip's anchor sample depends only on its key (exact multi-process
    equivalence, exact resume)."""
    if not isinstance(keys, torch.Tensor) or keys.dim() != 1 or keys.dtype != torch.int64:
        raise TypeError("keyed_uniform: `keys` must be an int64 tensor of shape [B]")
    col = torch.arange(n, dtype=torch.int64, device=keys.device)
    x = (keys[:, None] << 32) + col[None, :] + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _lshr(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _lshr(x, 27)) * _signed(0x94D049BB133111EB)
    x = x ^ _lshr(x, 31)
    return _lshr(x, 40).to(torch.float32) * (1.0 / (1 << 24))


def sample_anchors(
    labels: torch.Tensor,
    num: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    keys: torch.Tensor | None = None,
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
    if keys is not None:
        if generator is not None:
            raise ValueError(f"{op}: give `generator` or `keys`, not both")
        check_tensor(op, "keys", keys)
        if keys.dtype != torch.int64 or tuple(keys.shape) != (labels.shape[0],):
            raise ValueError(
                f"{op}: `keys` must be int64 of shape [{labels.shape[0]}], got {keys.dtype} {tuple(keys.shape)}"
            )
        check_same_device(op, "labels", labels, "keys", keys)
        r = keyed_uniform(keys, labels.shape[1])
    else:
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
