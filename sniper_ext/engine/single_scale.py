"""The baseline of method §10: training on whole images at one resolution, expressed as a ChipDB
with one "chip" per image (the whole resized image, padded to the largest size of the set), so
the same data pipeline and model train it."""

from __future__ import annotations

import math

import numpy as np

from ..chips import ChipDB
from ..chips.config import INF, POSITIVE, ChipConfig
from ..chips.validity import resolution_scale

__all__ = ["single_scale_db"]


def single_scale_db(records, resolution, chips: ChipConfig, divisibility: int = 16) -> ChipDB:
    """Every image at ``resolution`` (min side, max side); all GT valid (crowd boxes invalid), valid
    range [0, inf); the chip size is the largest resized side rounded up to ``divisibility``."""
    scales = [resolution_scale(r.width, r.height, resolution) for r in records]
    canvases = [(round(r.width * s), round(r.height * s)) for r, s in zip(records, scales)]
    k = max((max(c) for c in canvases), default=divisibility)
    k = int(math.ceil(k / divisibility) * divisibility)
    config = ChipConfig(
        scales=(1.0,),
        valid_ranges=((0.0, INF),),
        chip_size=k,
        stride=min(chips.stride, k - 1),
        min_box_size=chips.min_box_size,
        min_valid_side=chips.min_valid_side,
        neg_min_proposals=(1,),
        negatives_per_image=0,
        flip=chips.flip,
    )
    gt_boxes, gt_labels, gt_valid, gt_index, counts = [], [], [], [], []
    for r, s, (cw, ch) in zip(records, scales, canvases):
        b = np.asarray(r.boxes, np.float64).reshape(-1, 4) * s
        b[:, 0::2] = np.clip(b[:, 0::2], 0, cw)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, ch)
        keep = ((b[:, 2] - b[:, 0]) >= chips.min_box_size) & ((b[:, 3] - b[:, 1]) >= chips.min_box_size)
        idx = np.flatnonzero(keep)
        gt_boxes.append(b[idx])
        gt_labels.append(np.asarray(r.labels, np.int64)[idx])
        gt_valid.append(~np.asarray(r.crowd, bool)[idx])
        gt_index.append(idx)
        counts.append(len(idx))
    n = len(records)
    return ChipDB(
        config=config,
        stride=config.stride,
        image_ids=np.array([r.image_id for r in records], dtype=np.int64),
        image_sizes=np.array([[r.width, r.height] for r in records], dtype=np.int64).reshape(-1, 2),
        file_names=np.array([r.file_name for r in records], dtype=str),
        chip_image=np.arange(n, dtype=np.int64),
        chip_scale_index=np.zeros(n, np.int8),
        chip_scale=np.array(scales, dtype=np.float64),
        chip_canvas=np.array([[0, 0, cw, ch] for cw, ch in canvases], dtype=np.float64).reshape(n, 4),
        chip_kind=np.full(n, POSITIVE, np.int8),
        chip_valid_range=np.tile(np.array([[0.0, INF]]), (n, 1)),
        gt_offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        gt_boxes=np.concatenate(gt_boxes) if n else np.zeros((0, 4)),
        gt_labels=np.concatenate(gt_labels) if n else np.zeros(0, np.int64),
        gt_valid=np.concatenate(gt_valid) if n else np.zeros(0, bool),
        gt_index=np.concatenate(gt_index) if n else np.zeros(0, np.int64),
    )
