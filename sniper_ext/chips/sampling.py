"""Each epoch's chips: all positives, ``n`` negatives per image from its pool, flips; seeded."""

from __future__ import annotations

import numpy as np

from .config import NEGATIVE, POSITIVE, ChipConfig

__all__ = ["sample_epoch"]


def sample_epoch(
    chip_kind: np.ndarray, chip_image: np.ndarray, config: ChipConfig, epoch: int, seed: int = 0
) -> np.ndarray:
    """The chips of one epoch as rows (chip index, flip): every positive chip, plus
    ``config.negatives_per_image`` negatives per image drawn uniformly from its pool (all of a
    smaller pool); flips per ``config.flip``. Seeded by (seed, epoch); the order is shuffled.
    ``chip_image`` must be non-decreasing over the negative chips (as a ChipDB stores them)."""
    rng = np.random.default_rng([seed, epoch])
    chosen = [np.flatnonzero(chip_kind == POSITIVE)]
    neg = np.flatnonzero(chip_kind == NEGATIVE)
    n = config.negatives_per_image
    if len(neg) and n > 0:
        by_image = np.split(neg, np.flatnonzero(np.diff(chip_image[neg])) + 1)
        for pool in by_image:
            chosen.append(pool if len(pool) <= n else rng.choice(pool, size=n, replace=False))
    chips = np.sort(np.concatenate(chosen))
    if config.flip == "both":
        rows = np.concatenate([np.stack([chips, np.zeros_like(chips)], 1), np.stack([chips, np.ones_like(chips)], 1)])
    elif config.flip == "random":
        rows = np.stack([chips, rng.integers(0, 2, len(chips))], 1)
    else:
        rows = np.stack([chips, np.zeros_like(chips)], 1)
    return rows[rng.permutation(len(rows))]
