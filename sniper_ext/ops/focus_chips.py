"""AutoFocus's FocusChips (Najibi et al., ICCV 2019) over torch.ops.sniper.focus_chips."""

from __future__ import annotations

import torch

from ._checks import FLOAT_DTYPES, check_int, check_number, check_same_device, check_tensor
from ._geometry import DYNAMIC, Out, register_fake

__all__ = ["focus_chips"]

#: The most cells one map may have (the kernels index a map's cells with int32).
MAX_MAP_CELLS = 2**31 - 1


def focus_chips_geometry(prob, sizes, threshold, dilation, min_size) -> Out:
    """sniper::focus_chips: prob [B, H, W] floating, sizes [B, 2] int64 on the same device -> chips
    int64 [N, 5] (N data-dependent)."""
    op = "focus_chips"
    check_tensor(op, "prob", prob)
    check_tensor(op, "sizes", sizes)
    if prob.dim() != 3:
        raise ValueError(
            f"{op}: `prob` must have shape [B, H, W] (a batch of probability maps), got {tuple(prob.shape)}"
        )
    if prob.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `prob` must be float32, float64, float16 or bfloat16, got {prob.dtype}")
    b, h, w = prob.shape
    if sizes.dim() != 2 or sizes.shape[0] != b or sizes.shape[1] != 2:
        raise ValueError(
            f"{op}: `sizes` must have shape [{b}, 2] (valid height and width of each map), got {tuple(sizes.shape)}"
        )
    if sizes.dtype != torch.int64:
        raise TypeError(f"{op}: `sizes` must be int64, got {sizes.dtype}")
    check_same_device(op, "prob", prob, "sizes", sizes)
    if h * w > MAX_MAP_CELLS:
        raise ValueError(f"{op}: `prob` maps must have at most 2**31 - 1 cells (H * W), got {h} x {w}")
    return Out((DYNAMIC, 5), torch.int64)


def focus_chips(
    prob: torch.Tensor,
    sizes: torch.Tensor | None = None,
    threshold: float = 0.5,
    dilation: int = 3,
    min_size: int = 16,
) -> torch.Tensor:
    """FocusChips: the chips AutoFocus processes at the next scale, from FocusPixel probabilities.

    For every map, on its valid region (the first ``h`` rows and ``w`` columns; cells outside it
    never take part, so padding never produces a chip):

    1. a cell is on when ``prob >= threshold`` (NaN is off);
    2. the on cells are dilated with a ``dilation`` x ``dilation`` square: every on cell (y, x)
       turns on (y + i, x + j) for i, j in ``-(dilation - 1) // 2 .. dilation // 2`` (inside the
       valid region);
    3. the 8-connected components of the result give boxes (half-open cells ``[x1, x2) x [y1, y2)``);
    4. each box narrower than ``kw = min(min_size, w)`` grows about its centre to width ``kw``:
       ``x1 -= (kw - width) // 2``, ``x2 = x1 + kw``, then shifted inside ``[0, w)``; the same in y with
       ``kh = min(min_size, h)``;
    5. the boxes are painted into a fresh mask, whose 8-connected components give new boxes, grown
       again as in 4, until the set of boxes no longer changes: then no two chips overlap or touch
       (8-adjacency counts as touching), so a map has at most ``ceil(h/2) * ceil(w/2)`` chips.

    Not differentiable (integer output); CPU and CUDA give identical results. The op checks the
    values of ``sizes`` itself, reading the small tensor once per call (one device-to-host copy on
    CUDA); a value out of range raises RuntimeError (``focus_chips: `sizes`[i] must lie in ...``).

    Args:
        prob: ``[B, H, W]`` (or ``[H, W]``, one map) FocusPixel probabilities on the feature grid,
            float32, float64, float16 or bfloat16, padded to a common H x W.
        sizes: ``[B, 2]`` int64 valid ``(h, w)`` of each map, ``0 <= h <= H``, ``0 <= w <= W`` (a map
            with h or w 0 has no chips); ``[2]`` for a 2-D ``prob``; None: whole maps.
        threshold: finite; a cell is on when ``prob >= threshold``.
        dilation: int >= 1 (1: no dilation).
        min_size: int >= 1, the smallest chip side in cells (capped by the map's valid side).

    Returns:
        int64 ``[N, 5]`` rows ``(map, x1, y1, x2, y2)`` in cells, half-open, sorted by map, then y1,
        x1, y2, x2 (``[0, 5]`` when there are none). Multiply by the feature stride for pixels.
    """
    op = "focus_chips"
    check_tensor(op, "prob", prob)
    one_map = prob.dim() == 2
    if one_map:
        prob = prob.unsqueeze(0)
    elif prob.dim() != 3:
        raise ValueError(f"{op}: `prob` must have shape [B, H, W] or [H, W], got {tuple(prob.shape)}")
    b, h, w = prob.shape
    if sizes is None:
        full = prob.new_full((b,), h, dtype=torch.int64), prob.new_full((b,), w, dtype=torch.int64)
        sizes = torch.stack(full, 1)
    else:
        check_tensor(op, "sizes", sizes)
        if one_map and sizes.dim() == 1:
            sizes = sizes.unsqueeze(0)
    thr = check_number(op, "threshold", threshold)
    d = check_int(op, "dilation", dilation, minimum=1, maximum=2**62)
    k = check_int(op, "min_size", min_size, minimum=1, maximum=2**62)
    focus_chips_geometry(prob, sizes, thr, d, k)
    return torch.ops.sniper.focus_chips(prob, sizes, thr, d, k)


register_fake("focus_chips", focus_chips_geometry)
