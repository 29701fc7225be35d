"""The numbers of the method (``docs/method.md``), in one configurable object."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ChipConfig", "INF", "POSITIVE", "NEGATIVE"]

INF = float("inf")
#: ``ChipDB.chip_kind`` values: a positive chip (covers valid GT) or one of the negative pool.
POSITIVE, NEGATIVE = 0, 1


@dataclass
class ChipConfig:
    """Every number of the method, configurable. ``None`` as a scale means ``chip_size / max(W, H)``."""

    scales: tuple = (3.0, 1.667, None)
    valid_ranges: tuple = ((0.0, 80.0), (32.0, 150.0), (120.0, INF))
    chip_size: int = 512
    stride: int = 32
    #: (lo, hi): each epoch draws its stride uniformly in [lo, hi] (see :meth:`epoch_stride`).
    stride_jitter: tuple | None = None
    #: crops smaller than this (chip pixels) on a side are dropped from a chip
    min_box_size: float = 2.0
    #: boxes narrower than this (original pixels) are never valid
    min_valid_side: float = 2.0
    #: a negative chip needs at least this many proposals, per scale
    neg_min_proposals: tuple = (26, 11, 11)
    negatives_per_image: int = 2
    #: "both" (every chip also flipped: doubles the set), "random" or "none"
    flip: str = "both"

    def __post_init__(self):
        n = len(self.scales)
        if n == 0 or len(self.valid_ranges) != n or len(self.neg_min_proposals) != n:
            raise ValueError("ChipConfig: `scales`, `valid_ranges` and `neg_min_proposals` need one entry per scale")
        for s in self.scales:
            if s is not None and not (isinstance(s, (int, float)) and s > 0):
                raise ValueError(f"ChipConfig: scales must be positive numbers or None, got {s!r}")
        for lo, hi in self.valid_ranges:
            if not 0 <= lo < hi:
                raise ValueError(f"ChipConfig: a valid range must satisfy 0 <= lo < hi, got ({lo}, {hi})")
        if self.chip_size <= 0 or self.stride <= 0 or self.stride >= self.chip_size:
            raise ValueError("ChipConfig: need 0 < stride < chip_size")
        if self.flip not in ("both", "random", "none"):
            raise ValueError(f"ChipConfig: `flip` must be 'both', 'random' or 'none', got {self.flip!r}")
        if self.negatives_per_image < 0:
            raise ValueError("ChipConfig: `negatives_per_image` must be >= 0")
        if self.stride_jitter is not None:
            lo, hi = self.stride_jitter
            if not 0 < lo <= hi < self.chip_size:
                raise ValueError("ChipConfig: `stride_jitter` must be (lo, hi) with 0 < lo <= hi < chip_size")

    def epoch_stride(self, epoch: int, seed: int = 0) -> int:
        """The grid stride for an epoch: ``stride``, or a seeded draw from ``stride_jitter``."""
        if self.stride_jitter is None:
            return self.stride
        lo, hi = self.stride_jitter
        return int(np.random.default_rng([seed, epoch, 0x5D]).integers(lo, hi + 1))

    def to_json(self) -> str:
        d = asdict(self)
        d["valid_ranges"] = [[lo, "inf" if hi == INF else hi] for lo, hi in self.valid_ranges]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> ChipConfig:
        d = json.loads(text)
        d["valid_ranges"] = tuple((lo, INF if hi == "inf" else hi) for lo, hi in d["valid_ranges"])
        for k in ("scales", "neg_min_proposals"):
            d[k] = tuple(d[k])
        if d.get("stride_jitter") is not None:
            d["stride_jitter"] = tuple(d["stride_jitter"])
        return cls(**d)
