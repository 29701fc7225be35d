"""§1: the training scales of an image and which GT are valid at each; §9: the scale of an
image at an inference resolution."""

from __future__ import annotations

import math

import numpy as np

from .config import ChipConfig

__all__ = ["image_scales", "canvas_size", "valid_at_scale", "resolution_scale"]


def image_scales(width: float, height: float, config: ChipConfig) -> list:
    """Training scale factors of an image (the coarsest fits the image into one chip)."""
    return [config.chip_size / max(width, height) if s is None else float(s) for s in config.scales]


def resolution_scale(width: float, height: float, resolution) -> float:
    """The scale of a W x H image at an inference (or single-scale training) ``resolution``
    (min side, max side): s = min/min(W, H), lowered to max/max(W, H) when the long side would
    exceed ``max``."""
    lo, hi = resolution
    s = lo / min(width, height)
    if max(width, height) * s > hi:
        s = hi / max(width, height)
    return s


def canvas_size(width: float, height: float, scale: float) -> tuple:
    """round(W·s) × round(H·s), rounding halves up."""
    return math.floor(width * scale + 0.5), math.floor(height * scale + 0.5)


def valid_at_scale(
    boxes: np.ndarray,
    scale_index: int,
    scale: float,
    config: ChipConfig,
    stride: int | None = None,
    crowd: np.ndarray | None = None,
) -> np.ndarray:
    """§1: size sqrt(w·h) (original pixels) in the scale's range; no side under ``min_valid_side``;
    at every scale but the coarsest, max(w, h)·s <= K − d. Crowd boxes are never valid."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size = np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))
    lo, hi = config.valid_ranges[scale_index]
    ok = (size >= lo) & (size < hi) & (np.minimum(w, h) >= config.min_valid_side)
    if scale_index != len(config.scales) - 1:
        d = config.stride if stride is None else stride
        ok &= np.maximum(w, h) * scale <= config.chip_size - d
    if crowd is not None:
        ok &= ~np.asarray(crowd, bool)
    return ok
