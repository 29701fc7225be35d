"""Greedy chip covering (SNIPER §2) over torch.ops.sniper.greedy_chip_cover."""

from __future__ import annotations

import torch

from ._checks import _compiling, check_box_values, check_boxes, check_same_device, check_tensor
from ._geometry import DYNAMIC, Out, register_fake

__all__ = ["greedy_chip_cover"]


def greedy_chip_cover_geometry(boxes, box_group, canvas_wh, chip_size, stride, seed) -> tuple[Out, Out, Out]:
    """sniper::greedy_chip_cover: boxes [N, 4], box_group [N] int64/int32, canvas_wh [G, 2] on one device
    -> chips [C, 4] (float32, float64 for float64 boxes), chip_group [C] int64, box_chip [N] int64
    (C data-dependent)."""
    op = "greedy_chip_cover"
    check_boxes(op, "boxes", boxes)
    check_tensor(op, "box_group", box_group)
    check_tensor(op, "canvas_wh", canvas_wh)
    n = boxes.shape[0]
    if box_group.dim() != 1 or box_group.shape[0] != n:
        raise ValueError(f"{op}: `box_group` must have shape [{n}] (one group per box), got {tuple(box_group.shape)}")
    if box_group.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: `box_group` must be int64 or int32, got {box_group.dtype}")
    if canvas_wh.dim() != 2 or canvas_wh.shape[1] != 2:
        raise ValueError(f"{op}: `canvas_wh` must have shape [G, 2] (width, height), got {tuple(canvas_wh.shape)}")
    check_same_device(op, "boxes", boxes, "box_group", box_group)
    check_same_device(op, "boxes", boxes, "canvas_wh", canvas_wh)
    chip_dtype = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    return Out((DYNAMIC, 4), chip_dtype), Out((DYNAMIC,), torch.int64), Out((n,), torch.int64)


def greedy_chip_cover(
    boxes: torch.Tensor,
    box_group: torch.Tensor,
    canvas_wh: torch.Tensor,
    chip_size: int = 512,
    stride: int = 32,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Covers boxes with chips, greedily, for thousands of (image, scale) groups in one call.

    A *group* is one image at one scale. Candidates are ``chip_size`` windows on a grid of
    ``stride`` over the group's canvas plus one window aligned to the right (bottom) edge; a canvas
    side no longer than ``chip_size`` has one window, clipped to the canvas. A box (clipped to the
    canvas) is covered by a chip that contains it entirely. Repeatedly the candidate covering the
    most uncovered boxes is taken, ties to the earliest candidate: row-major (y, then x) when
    ``seed`` is None, else a permutation seeded by ``(seed, group)``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes, in their group's canvas coordinates (finite, x1 <= x2, y1 <= y2).
        box_group: ``[N]`` int64/int32 group of each box, in ``[0, G)``.
        canvas_wh: ``[G, 2]`` canvas width and height of each group (positive).
        chip_size, stride: K and d of the method (default 512 and 32).
        seed: None for the canonical order, or an int (>= 0).

    Returns:
        ``(chips [C, 4], chip_group [C], box_chip [N])``: chips in canvas coordinates (float32, or
        float64 for float64 boxes), per group in selection order, groups ascending; each chip's
        group; for every box the index of the chip that covered it, -1 if no candidate can.
    """
    op = "greedy_chip_cover"
    greedy_chip_cover_geometry(boxes, box_group, canvas_wh, chip_size, stride, seed)
    n = boxes.shape[0]
    for name, v in (("chip_size", chip_size), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{op}: `{name}` must be a positive int, got {v!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"{op}: `seed` must be None or an int in [0, 2**63), got {seed!r}")
    check_box_values(op, "boxes", boxes)
    if not _compiling() and n > 0:
        g = canvas_wh.shape[0]
        lo, hi = torch.aminmax(box_group)
        if int(lo) < 0 or int(hi) >= g:
            raise ValueError(
                f"{op}: `box_group` values must lie in [0, {g}) (rows of canvas_wh), got [{int(lo)}, {int(hi)}]"
            )
    if not _compiling() and canvas_wh.numel() > 0:
        c = canvas_wh.double()
        if not bool((torch.isfinite(c) & (c > 0)).all()):
            raise ValueError(f"{op}: `canvas_wh` must be finite and positive")
    return torch.ops.sniper.greedy_chip_cover(boxes, box_group, canvas_wh, chip_size, stride, seed)


register_fake("greedy_chip_cover", greedy_chip_cover_geometry)
