"""What a chip plan costs: chips per image and per scale, pixels against single-scale training
and against the full image pyramid; and their short text summary."""

from __future__ import annotations

import numpy as np

from .config import POSITIVE
from .validity import canvas_size, image_scales

__all__ = ["chip_stats", "format_stats"]


def chip_stats(db) -> dict:
    """Chips per image (and per scale), and pixels processed per image per epoch (positives
    plus sampled negatives, each K² as chips are padded) relative to single-scale 800×1333 and
    to the full pyramid of the training scales. Flipping scales both sides alike, so it is left out."""
    cfg, K = db.config, db.config.chip_size
    n_img = max(1, len(db.image_ids))
    pos = db.chip_kind == POSITIVE
    neg = ~pos
    neg_pool = np.bincount(db.chip_image[neg], minlength=len(db.image_ids))
    sampled_neg = np.minimum(neg_pool, cfg.negatives_per_image).sum()
    chips_per_epoch = int(pos.sum() + sampled_neg)
    single, pyramid = 0.0, 0.0
    for w, h in db.image_sizes:
        s = min(800 / min(w, h), 1333 / max(w, h))
        cw, ch = canvas_size(w, h, s)
        single += cw * ch
        for sc in image_scales(w, h, cfg):
            pw, ph = canvas_size(w, h, sc)
            pyramid += pw * ph
    chip_pixels = chips_per_epoch * K * K
    per_scale = [int((pos & (db.chip_scale_index == i)).sum()) for i in range(len(cfg.scales))]
    return {
        "images": len(db.image_ids),
        "positive_chips": int(pos.sum()),
        "negative_pool": int(neg.sum()),
        "chips_per_epoch": chips_per_epoch,
        "positive_chips_per_image": float(pos.sum() / n_img),
        "positive_chips_per_image_per_scale": [c / n_img for c in per_scale],
        "negative_pool_per_image": float(neg.sum() / n_img),
        "chips_per_image_per_epoch": chips_per_epoch / n_img,
        "pixels_vs_single_scale_800x1333": chip_pixels / single if single else 0.0,
        "pixels_vs_full_pyramid": chip_pixels / pyramid if pyramid else 0.0,
        "pyramid_vs_single_scale": pyramid / single if single else 0.0,
        "valid_gt_assignments": int(db.gt_valid.sum()),
        "uncoverable_valid_gt": int(db.uncoverable),
        "stride": db.stride,
    }


def format_stats(s: dict) -> str:
    per_scale = ", ".join(f"{v:.2f}" for v in s["positive_chips_per_image_per_scale"])
    return "\n".join(
        [
            f"images                          {s['images']}",
            f"positive chips                  {s['positive_chips']} ({s['positive_chips_per_image']:.2f} per image; "
            f"per scale, finest first: {per_scale})",
            f"negative chip pool              {s['negative_pool']} ({s['negative_pool_per_image']:.2f} per image)",
            f"chips per epoch                 {s['chips_per_epoch']} ({s['chips_per_image_per_epoch']:.2f} per image, "
            "before flipping)",
            f"pixels vs single-scale 800x1333 {s['pixels_vs_single_scale_800x1333']:.2f}x",
            f"pixels vs full 3-scale pyramid  {s['pixels_vs_full_pyramid']:.2f}x "
            f"(the pyramid is {s['pyramid_vs_single_scale']:.2f}x single-scale)",
            f"valid GT assigned to chips      {s['valid_gt_assignments']} "
            f"({s['uncoverable_valid_gt']} valid GT could not be covered)",
        ]
    )
