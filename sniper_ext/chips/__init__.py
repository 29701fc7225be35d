"""The SNIPER chip planner (``docs/method.md`` §1–§4).

For every image and training scale: which ground truths (GT) are *valid* at that scale (§1), the
positive chips that cover them (§2, through the batched ``greedy_chip_cover`` op), every chip's GT
cropped into chip pixels with valid/invalid flags and the chip's valid range (§3), and a pool of
negative chips from proposals (§4). A :class:`ChipDB` holds the result for a whole dataset, saves
and loads atomically, and samples each epoch's chips (all positives, ``n`` negatives per image,
flips), seeded.

Typical use::

    cfg = ChipConfig()
    db = plan_dataset(records, proposals=None, config=cfg)   # records: sniper_ext.data.load_coco(...)
    db.save("chips.npz")
    print(format_stats(db.stats()))
    chips = db.epoch(epoch=0, seed=0)   # [(chip index, flip), ...]

Modules: :mod:`.config` (ChipConfig and constants), :mod:`.records` (ImageRecord),
:mod:`.validity` (§1 scales and validity), :mod:`.planner` (§2–§4), :mod:`.database` (ChipDB),
:mod:`.sampling` (each epoch's chips), :mod:`.stats` (statistics). The planner reads no files:
its inputs come from :mod:`sniper_ext.data` (``load_coco``, ``load_proposals``).
"""

from .config import INF, NEGATIVE, POSITIVE, ChipConfig
from .database import ChipDB
from .planner import plan_dataset, plan_images
from .records import ImageRecord, ImageTable
from .stats import chip_stats, format_stats
from .validity import canvas_size, image_scales, resolution_scale, valid_at_scale

__all__ = [
    "ChipConfig",
    "ImageRecord",
    "ImageTable",
    "ChipDB",
    "image_scales",
    "canvas_size",
    "valid_at_scale",
    "resolution_scale",
    "plan_images",
    "plan_dataset",
    "chip_stats",
    "format_stats",
    "INF",
    "POSITIVE",
    "NEGATIVE",
]
