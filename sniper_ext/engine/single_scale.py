"""The baselines of method §10 as chip databases whose "chips" are whole images, so that the same
data pipeline and model train them:

* ``single_scale_db``: every image at one resolution, every GT valid (crowd boxes invalid);
* ``pyramid_db``: every image at each training scale of the chip configuration (SNIP-style
  multi-scale training on the whole image pyramid), a GT valid at a scale when its size lies in
  that scale's valid range (crowd boxes never), as for chips but without a chip boundary.

A whole image is not padded to a common size: the database is marked ``extra["whole_images"]``,
the chip dataset pads each image only to a multiple of 16, the stream groups images of the same
orientation into a batch, and a batch is padded to its own largest image (see
:mod:`sniper_ext.data.chip_dataset` and :mod:`sniper_ext.data.sampler`)."""

from __future__ import annotations

import math

import numpy as np

from ..chips import ChipDB
from ..chips.config import INF, POSITIVE, ChipConfig
from ..chips.records import ImageTable
from ..chips.validity import canvas_size, image_scales, resolution_scale

__all__ = ["pyramid_db", "single_scale_db", "whole_image_db"]

#: whole images are padded to a multiple of this (the stride of the features)
DIVISIBILITY = 16


def whole_image_db(records, samples: list, chips: ChipConfig) -> ChipDB:
    """A ChipDB of whole images: ``samples`` = [(image index, scale index, scale, (lo, hi) valid
    range in original pixels)] in order. A GT is valid when its size sqrt(w*h) lies in the range,
    its sides are at least ``chips.min_valid_side`` and it is not a crowd box; every GT of at
    least ``chips.min_box_size`` (canvas pixels) per side is carried."""
    table = ImageTable.from_records(records)
    canvases = [canvas_size(table.sizes[i, 0], table.sizes[i, 1], s) for i, _, s, _ in samples]
    k = max((max(c) for c in canvases), default=DIVISIBILITY)
    k = int(math.ceil(k / DIVISIBILITY) * DIVISIBILITY)
    config = ChipConfig(
        scales=chips.scales if len({si for _, si, _, _ in samples}) > 1 else (1.0,),
        valid_ranges=chips.valid_ranges if len({si for _, si, _, _ in samples}) > 1 else ((0.0, INF),),
        chip_size=k,
        stride=min(chips.stride, k - 1),
        min_box_size=chips.min_box_size,
        min_valid_side=chips.min_valid_side,
        neg_min_proposals=chips.neg_min_proposals if len({si for _, si, _, _ in samples}) > 1 else (1,),
        negatives_per_image=0,
        flip=chips.flip,
    )
    gt_boxes, gt_labels, gt_valid, gt_index, counts = [], [], [], [], []
    for (i, _, s, (lo, hi)), (cw, ch) in zip(samples, canvases):
        r = table[i]
        raw = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        w, h = raw[:, 2] - raw[:, 0], raw[:, 3] - raw[:, 1]
        size = np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))
        valid = (size >= lo) & (size < hi) & (np.minimum(w, h) >= chips.min_valid_side) & ~np.asarray(r.crowd, bool)
        b = raw * s
        b[:, 0::2] = np.clip(b[:, 0::2], 0, cw)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, ch)
        keep = ((b[:, 2] - b[:, 0]) >= chips.min_box_size) & ((b[:, 3] - b[:, 1]) >= chips.min_box_size)
        idx = np.flatnonzero(keep)
        gt_boxes.append(b[idx])
        gt_labels.append(np.asarray(r.labels, np.int64)[idx])
        gt_valid.append(valid[idx])
        gt_index.append(idx)
        counts.append(len(idx))
    n = len(samples)
    return ChipDB(
        config=config,
        stride=config.stride,
        image_ids=np.asarray(table.image_ids, dtype=np.int64),
        image_sizes=np.asarray(table.sizes, dtype=np.int64).reshape(-1, 2),
        file_names=np.asarray(table.file_names).astype(str),
        chip_image=np.array([i for i, _, _, _ in samples], dtype=np.int64),
        chip_scale_index=np.array([si for _, si, _, _ in samples], dtype=np.int8),
        chip_scale=np.array([s for _, _, s, _ in samples], dtype=np.float64),
        chip_canvas=np.array([[0, 0, cw, ch] for cw, ch in canvases], dtype=np.float64).reshape(n, 4),
        chip_kind=np.full(n, POSITIVE, np.int8),
        chip_valid_range=np.array([[lo * s, hi * s] for _, _, s, (lo, hi) in samples], dtype=np.float64).reshape(n, 2),
        gt_offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        gt_boxes=np.concatenate(gt_boxes) if n else np.zeros((0, 4)),
        gt_labels=np.concatenate(gt_labels) if n else np.zeros(0, np.int64),
        gt_valid=np.concatenate(gt_valid) if n else np.zeros(0, bool),
        gt_index=np.concatenate(gt_index) if n else np.zeros(0, np.int64),
        extra={"whole_images": True},
    )


def single_scale_db(records, resolution, chips: ChipConfig) -> ChipDB:
    """Every image at ``resolution`` (min side, max side); all GT valid (crowd boxes invalid),
    valid range [0, inf)."""
    table = ImageTable.from_records(records)
    samples = [
        (i, 0, resolution_scale(int(w), int(h), resolution), (0.0, INF))
        for i, (w, h) in enumerate(table.sizes.tolist())
    ]
    return whole_image_db(table, samples, chips)


def pyramid_db(records, chips: ChipConfig) -> ChipDB:
    """Every image at each training scale of ``chips`` (the chips' scales and valid ranges, on
    whole images: the image pyramid SNIPER's chips are cut from)."""
    table = ImageTable.from_records(records)
    samples = []
    for i, (w, h) in enumerate(table.sizes.tolist()):
        for si, s in enumerate(image_scales(w, h, chips)):
            samples.append((i, si, s, tuple(chips.valid_ranges[si])))
    return whole_image_db(table, samples, chips)
