"""The planner as it was written first: a plain loop over images, scales and chips (numpy per chip),
kept as the reference that the vectorised planner (sniper_ext.chips.planner) must equal byte for
byte (python_tests/test_chips.py)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from sniper_ext.chips.config import NEGATIVE, POSITIVE, ChipConfig
from sniper_ext.chips.database import ChipDB
from sniper_ext.chips.validity import canvas_size, image_scales, valid_at_scale
from sniper_ext.ops import greedy_chip_cover

__all__ = ["plan_images", "plan_dataset"]


def _cover(problems, config: ChipConfig, stride: int, seed):
    """Runs one greedy_chip_cover call over many (canvas, boxes) problems.
    Returns per problem (chips [C, 4] canvas coords, box_chip [N])."""
    if not problems:
        return []
    boxes = np.concatenate([p[1] for p in problems])
    group = np.concatenate([np.full(len(p[1]), k, dtype=np.int64) for k, p in enumerate(problems)])
    canvas = np.array([p[0] for p in problems], dtype=np.float64)
    chips, chip_group, box_chip = greedy_chip_cover(
        torch.from_numpy(boxes),
        torch.from_numpy(group),
        torch.from_numpy(canvas),
        chip_size=config.chip_size,
        stride=stride,
        seed=seed,
    )
    chips_np, groups_np, box_chip_np = chips.double().numpy(), chip_group.numpy(), box_chip.numpy()
    first = np.searchsorted(groups_np, np.arange(len(problems)))
    last = np.searchsorted(groups_np, np.arange(len(problems)), side="right")
    out, start = [], 0
    for k, p in enumerate(problems):
        n = len(p[1])
        bc = box_chip_np[start : start + n]
        out.append((chips_np[first[k] : last[k]], np.where(bc >= 0, bc - first[k], -1)))
        start += n
    return out


def _inside(boxes, chips):
    """[N, C]: box entirely inside chip (both in the same coordinates)."""
    return (
        (chips[None, :, 0] <= boxes[:, None, 0])
        & (chips[None, :, 1] <= boxes[:, None, 1])
        & (boxes[:, None, 2] <= chips[None, :, 2])
        & (boxes[:, None, 3] <= chips[None, :, 3])
    )


def _intersection(boxes, chips):
    w = np.minimum(boxes[:, None, 2], chips[None, :, 2]) - np.maximum(boxes[:, None, 0], chips[None, :, 0])
    h = np.minimum(boxes[:, None, 3], chips[None, :, 3]) - np.maximum(boxes[:, None, 1], chips[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _clip(boxes, w, h):
    b = boxes.copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    return b


def plan_images(images: list, config: ChipConfig, stride: int | None = None, seed: int | None = None) -> dict:
    """Plans chips for a batch of images: two op calls (positives, then negatives) for all of them.

    Returns columns (numpy arrays) for :class:`ChipDB`, with ``chip_image`` indexing ``images``.
    """
    d = config.stride if stride is None else stride
    per_image = []
    pos_problems, pos_keys = [], []
    for ii, im in enumerate(images):
        scales = image_scales(im.width, im.height, config)
        info = {"scales": scales, "canvas": [], "valid": []}
        for si, s in enumerate(scales):
            cw, ch = canvas_size(im.width, im.height, s)
            valid = valid_at_scale(im.boxes, si, s, config, d, im.crowd)
            info["canvas"].append((cw, ch))
            info["valid"].append(valid)
            if valid.any():
                pos_problems.append(((cw, ch), im.boxes[valid] * s))
                pos_keys.append((ii, si))
        per_image.append(info)
    pos = dict(zip(pos_keys, _cover(pos_problems, config, d, seed)))

    # §4: proposals valid at the scale and not inside any positive chip of it.
    neg_problems, neg_keys = [], []
    for ii, im in enumerate(images):
        if im.proposals is None or len(im.proposals) == 0:
            continue
        info = per_image[ii]
        for si, s in enumerate(info["scales"]):
            cw, ch = info["canvas"][si]
            p = im.proposals[valid_at_scale(im.proposals, si, s, config, d)]
            if len(p) == 0:
                continue
            pc = _clip(p * s, cw, ch)
            if (ii, si) in pos and len(pos[ii, si][0]):
                pc = pc[~_inside(pc, pos[ii, si][0]).any(axis=1)]
            if len(pc):
                neg_problems.append(((cw, ch), pc))
                neg_keys.append((ii, si))
    neg = {}
    for key, problem, (chips, _) in zip(neg_keys, neg_problems, _cover(neg_problems, config, d, seed)):
        if len(chips):
            enough = _inside(problem[1], chips).sum(axis=0) >= config.neg_min_proposals[key[1]]
            if enough.any():
                neg[key] = chips[enough]

    cols: dict[str, list] = {
        k: []
        for k in (
            "chip_image",
            "chip_scale_index",
            "chip_scale",
            "chip_canvas",
            "chip_kind",
            "chip_valid_range",
            "gt_count",
            "gt_boxes",
            "gt_labels",
            "gt_valid",
            "gt_index",
        )
    }
    for ii, im in enumerate(images):
        info = per_image[ii]
        for si, s in enumerate(info["scales"]):
            cw, ch = info["canvas"][si]
            pos_chips = pos[ii, si][0] if (ii, si) in pos else np.zeros((0, 4))
            neg_chips = neg.get((ii, si), np.zeros((0, 4)))
            chips = np.concatenate([pos_chips, neg_chips])
            if len(chips) == 0:
                continue
            gt = im.boxes * s
            valid = info["valid"][si]
            inter_all = _intersection(gt, chips) if len(gt) else np.zeros((0, len(chips)))
            # §3: each valid GT belongs to the positive chip it overlaps most (first on ties);
            # positive chips come first in `chips`.
            owner = np.full(len(gt), -1)
            if len(pos_chips) and valid.any():
                owner[valid] = np.argmax(inter_all[valid][:, : len(pos_chips)], axis=1)
            lo, hi = config.valid_ranges[si]
            for c, chip in enumerate(chips):
                hit = np.flatnonzero(inter_all[:, c] > 0)
                crop = np.empty((len(hit), 4))
                crop[:, 0::2] = np.clip(gt[hit][:, 0::2], chip[0], chip[2]) - chip[0]
                crop[:, 1::2] = np.clip(gt[hit][:, 1::2], chip[1], chip[3]) - chip[1]
                keep = ((crop[:, 2] - crop[:, 0]) >= config.min_box_size) & (
                    (crop[:, 3] - crop[:, 1]) >= config.min_box_size
                )
                hit, crop = hit[keep], crop[keep]
                kind = POSITIVE if c < len(pos_chips) else NEGATIVE
                cols["chip_image"].append(ii)
                cols["chip_scale_index"].append(si)
                cols["chip_scale"].append(s)
                cols["chip_canvas"].append(chip)
                cols["chip_kind"].append(kind)
                cols["chip_valid_range"].append((lo * s, hi * s))
                cols["gt_count"].append(len(hit))
                cols["gt_boxes"].append(crop)
                cols["gt_labels"].append(im.labels[hit])
                cols["gt_valid"].append(valid[hit] & (owner[hit] == c) & (kind == POSITIVE))
                cols["gt_index"].append(hit)
    n_chips = len(cols["chip_image"])
    out = {
        "chip_image": np.array(cols["chip_image"], dtype=np.int64),
        "chip_scale_index": np.array(cols["chip_scale_index"], dtype=np.int8),
        "chip_scale": np.array(cols["chip_scale"], dtype=np.float64),
        "chip_canvas": np.array(cols["chip_canvas"], dtype=np.float64).reshape(n_chips, 4),
        "chip_kind": np.array(cols["chip_kind"], dtype=np.int8),
        "chip_valid_range": np.array(cols["chip_valid_range"], dtype=np.float64).reshape(n_chips, 2),
        "gt_offsets": np.concatenate([[0], np.cumsum(cols["gt_count"], dtype=np.int64)]).astype(np.int64),
        "gt_boxes": np.concatenate(cols["gt_boxes"]) if n_chips else np.zeros((0, 4)),
        "gt_labels": np.concatenate(cols["gt_labels"]).astype(np.int64) if n_chips else np.zeros(0, np.int64),
        "gt_valid": np.concatenate(cols["gt_valid"]).astype(bool) if n_chips else np.zeros(0, bool),
        "gt_index": np.concatenate(cols["gt_index"]).astype(np.int64) if n_chips else np.zeros(0, np.int64),
        "uncoverable": sum(int((bc < 0).sum()) for _, bc in pos.values()),
    }
    return out


def plan_dataset(
    images: list,
    proposals: dict | None = None,
    config: ChipConfig | None = None,
    *,
    stride: int | None = None,
    seed: int | None = None,
    batch_size: int = 1000,
    progress: bool = True,
) -> ChipDB:
    """Plans a whole dataset, ``batch_size`` images per op call, with a progress bar."""
    config = config or ChipConfig()
    d = config.stride if stride is None else stride
    if proposals:
        for im in images:
            if im.image_id in proposals:
                im.proposals = proposals[im.image_id]
    parts, offset = [], 0
    bar = tqdm(total=len(images), unit="img", desc="planning chips", disable=not progress, mininterval=0.5)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        part = plan_images(batch, config, stride=d, seed=seed)
        part["chip_image"] = part["chip_image"] + offset
        parts.append(part)
        offset += len(batch)
        bar.update(len(batch))
    bar.close()

    def cat(key, empty):
        arrays = [p[key] for p in parts]
        return np.concatenate(arrays) if arrays else empty

    gt_offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        gt_offsets.append(p["gt_offsets"][1:] + base)
        base += p["gt_offsets"][-1]
    return ChipDB(
        config=config,
        stride=d,
        image_ids=np.array([im.image_id for im in images], dtype=np.int64),
        image_sizes=np.array([[im.width, im.height] for im in images], dtype=np.int64).reshape(-1, 2),
        file_names=np.array([im.file_name for im in images], dtype=str),
        chip_image=cat("chip_image", np.zeros(0, np.int64)),
        chip_scale_index=cat("chip_scale_index", np.zeros(0, np.int8)),
        chip_scale=cat("chip_scale", np.zeros(0)),
        chip_canvas=cat("chip_canvas", np.zeros((0, 4))),
        chip_kind=cat("chip_kind", np.zeros(0, np.int8)),
        chip_valid_range=cat("chip_valid_range", np.zeros((0, 2))),
        gt_offsets=np.concatenate(gt_offsets),
        gt_boxes=cat("gt_boxes", np.zeros((0, 4))),
        gt_labels=cat("gt_labels", np.zeros(0, np.int64)),
        gt_valid=cat("gt_valid", np.zeros(0, bool)),
        gt_index=cat("gt_index", np.zeros(0, np.int64)),
        uncoverable=sum(p["uncoverable"] for p in parts),
    )
