"""§2–§4: planning chips for images: positive chips over the valid GT (through the batched
``greedy_chip_cover`` op), every chip's GT cropped into chip pixels with valid/invalid flags and
the chip's valid range (§3), and a pool of negative chips from proposals (§4).

The work is vectorised over a batch of images (every image, scale, chip and GT of the batch in
a few array operations; no Python loop per image or chip), and a dataset's batches are
independent: :func:`plan_dataset` can spread them over processes (``workers``) and planning a
subset of the batches (:func:`plan_batches`, for one rank's share) gives exactly their part of
the whole plan."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from ..ops import greedy_chip_cover
from .config import NEGATIVE, POSITIVE, ChipConfig
from .database import ChipDB
from .records import ImageTable

__all__ = ["batch_bounds", "merge_plans", "plan_batches", "plan_dataset", "plan_images", "proposals_for"]

_EMPTY4 = np.zeros((0, 4))


def _batch_scales(widths: np.ndarray, heights: np.ndarray, config: ChipConfig) -> np.ndarray:
    """[I, S] the training scales of each image (:func:`~.validity.image_scales`, vectorised)."""
    longest = np.maximum(widths, heights).astype(np.float64)
    cols = [config.chip_size / longest if s is None else np.full(len(widths), float(s)) for s in config.scales]
    return np.stack(cols, axis=1) if cols else np.zeros((len(widths), 0))


def _valid(boxes: np.ndarray, scale: np.ndarray, si: int, config: ChipConfig, d: int, crowd=None) -> np.ndarray:
    """:func:`~.validity.valid_at_scale` with one scale per box (``scale`` [N])."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size = np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))
    lo, hi = config.valid_ranges[si]
    ok = (size >= lo) & (size < hi) & (np.minimum(w, h) >= config.min_valid_side)
    if si != len(config.scales) - 1:
        ok &= np.maximum(w, h) * scale <= config.chip_size - d
    if crowd is not None:
        ok &= ~crowd
    return ok


def _problems(img: np.ndarray, si: np.ndarray, S: int):
    """Groups rows by (image, scale), image-major: (order of the rows, problem id per ordered row,
    the (image, scale) key of each problem)."""
    key = img * S + si
    order = np.lexsort((np.arange(len(key)), key))
    keys, problem = np.unique(key[order], return_inverse=True)
    return order, problem.reshape(-1), keys


def _cover(boxes, problem, canvas, config: ChipConfig, d: int, seed):
    """One greedy_chip_cover call: (chips [C, 4] float64, chip_problem [C], box_chip [N])."""
    if len(boxes) == 0:
        return _EMPTY4, np.zeros(0, np.int64), np.zeros(0, np.int64)
    chips, chip_group, box_chip = greedy_chip_cover(
        torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float64)),
        torch.from_numpy(np.ascontiguousarray(problem, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(canvas, dtype=np.float64)),
        chip_size=config.chip_size,
        stride=d,
        seed=seed,
    )
    return chips.double().numpy(), chip_group.numpy().astype(np.int64), box_chip.numpy().astype(np.int64)


def _pairs(starts: np.ndarray, counts: np.ndarray):
    """Item a has ``counts[a]`` partners, rows ``starts[a] .. starts[a] + counts[a] - 1``: (item of
    each pair, partner row of each pair), item-major, partners ascending."""
    item = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return item, np.repeat(starts, counts) + (np.arange(len(item)) - first)


def _inside_pairs(boxes, chips):
    """Row-wise: box i entirely inside chip i."""
    return (
        (chips[:, 0] <= boxes[:, 0])
        & (chips[:, 1] <= boxes[:, 1])
        & (boxes[:, 2] <= chips[:, 2])
        & (boxes[:, 3] <= chips[:, 3])
    )


def plan_images(images, config: ChipConfig, stride: int | None = None, seed: int | None = None, proposals=None) -> dict:
    """Plans chips for a batch of images (an ImageTable or ImageRecords): two op calls
    (positives, then negatives) for all of them. ``proposals``: one ``[P, 4]`` array (or None)
    per image, original pixels; default each record's ``proposals``.

    Returns columns (numpy arrays) for :class:`ChipDB`, with ``chip_image`` indexing ``images``.
    """
    if proposals is None and not isinstance(images, ImageTable):
        proposals = [im.proposals for im in images]
    table = ImageTable.from_records(images)
    d = config.stride if stride is None else stride
    S = len(config.scales)
    n_img = len(table)
    scales = _batch_scales(table.widths, table.heights, config)  # [I, S]
    canvas = np.floor(table.sizes[:, None, :] * scales[:, :, None] + 0.5)  # [I, S, 2] (W, H)
    gt = table.boxes
    gimg = np.repeat(np.arange(n_img), table.box_counts())
    gstart = table.box_offsets[:-1]
    valid = np.zeros((len(gt), S), bool)
    for si in range(S):
        valid[:, si] = _valid(gt, scales[gimg, si], si, config, d, table.crowd)

    # §2: positive chips over the valid GT of every (image, scale), one op call.
    rows, row_si = np.nonzero(valid)
    order, problem, pos_keys = _problems(gimg[rows], row_si, S)
    rows, row_si = rows[order], row_si[order]
    p_img, p_si = pos_keys // S, pos_keys % S
    pos_chips, pos_problem, box_chip = _cover(
        gt[rows] * scales[gimg[rows], row_si][:, None], problem, canvas[p_img, p_si], config, d, seed
    )
    uncoverable = int((box_chip < 0).sum())
    pos_img, pos_si = p_img[pos_problem], p_si[pos_problem]

    # §4: proposals valid at the scale and not inside any positive chip of it, one op call.
    neg_chips, neg_img, neg_si = _EMPTY4, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if proposals is not None and any(p is not None and len(p) for p in proposals):
        plist = [np.zeros((0, 4)) if p is None else np.asarray(p, np.float64).reshape(-1, 4) for p in proposals]
        props = np.concatenate(plist)
        pimg = np.repeat(np.arange(n_img), [len(p) for p in plist])
        cand, cand_si = [], []
        for si in range(S):
            ok = np.flatnonzero(_valid(props, scales[pimg, si], si, config, d))
            cand.append(ok)
            cand_si.append(np.full(len(ok), si))
        prow, psi = np.concatenate(cand), np.concatenate(cand_si)
        s = scales[pimg[prow], psi][:, None]
        pc = props[prow] * s
        cw, ch = canvas[pimg[prow], psi, 0], canvas[pimg[prow], psi, 1]
        pc[:, 0] = np.clip(pc[:, 0], 0, cw)
        pc[:, 2] = np.clip(pc[:, 2], 0, cw)
        pc[:, 1] = np.clip(pc[:, 1], 0, ch)
        pc[:, 3] = np.clip(pc[:, 3], 0, ch)
        # drop those inside a positive chip of their (image, scale)
        key = pimg[prow] * S + psi
        pos_key = pos_img * S + pos_si  # ascending (chips come per problem, problems sorted)
        chip_first = np.searchsorted(pos_key, key)
        chip_count = np.searchsorted(pos_key, key, side="right") - chip_first
        pair_p, pair_c = _pairs(chip_first, chip_count)
        inside = np.bincount(pair_p, weights=_inside_pairs(pc[pair_p], pos_chips[pair_c]), minlength=len(key))
        keep = inside == 0
        pc, key = pc[keep], key[keep]
        porder = np.lexsort((prow[keep], key))  # (image, scale), then the proposal's order
        pc, key = pc[porder], key[porder]
        neg_keys, nproblem = np.unique(key, return_inverse=True)
        nproblem = nproblem.reshape(-1)
        nk_img, nk_si = neg_keys // S, neg_keys % S
        chips, chip_problem, _ = _cover(pc, nproblem, canvas[nk_img, nk_si], config, d, seed)
        # a negative chip needs enough of its problem's proposals inside it
        pstart = np.searchsorted(nproblem, np.arange(len(neg_keys)))
        pcount = np.searchsorted(nproblem, np.arange(len(neg_keys)), side="right") - pstart
        pair_c, pair_p = _pairs(pstart[chip_problem], pcount[chip_problem])
        hits = np.bincount(pair_c, weights=_inside_pairs(pc[pair_p], chips[pair_c]), minlength=len(chips))
        need = np.asarray(config.neg_min_proposals, dtype=np.float64)[nk_si[chip_problem]]
        enough = hits >= need
        neg_chips, neg_img, neg_si = chips[enough], nk_img[chip_problem][enough], nk_si[chip_problem][enough]

    # §3: every chip of an (image, scale), positives first, carries the GT it intersects.
    chips = np.concatenate([pos_chips, neg_chips])
    c_img = np.concatenate([pos_img, neg_img]).astype(np.int64)
    c_si = np.concatenate([pos_si, neg_si]).astype(np.int64)
    c_kind = np.concatenate([np.full(len(pos_chips), POSITIVE), np.full(len(neg_chips), NEGATIVE)]).astype(np.int8)
    corder = np.lexsort((np.arange(len(chips)), c_kind, c_si, c_img))
    chips, c_img, c_si, c_kind = chips[corder], c_img[corder], c_si[corder], c_kind[corder]
    c_scale = scales[c_img, c_si]
    pair_c, pair_g = _pairs(gstart[c_img], table.box_counts()[c_img])
    g = gt[pair_g] * c_scale[pair_c][:, None]
    ch = chips[pair_c]
    w = np.minimum(g[:, 2], ch[:, 2]) - np.maximum(g[:, 0], ch[:, 0])
    h = np.minimum(g[:, 3], ch[:, 3]) - np.maximum(g[:, 1], ch[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    # each valid GT belongs to the positive chip of its scale it overlaps most (first on ties)
    pos_pair = c_kind[pair_c] == POSITIVE
    own = np.zeros(len(pair_c), bool)
    if pos_pair.any():
        pp = np.flatnonzero(pos_pair)
        gkey = pair_g[pp] * S + c_si[pair_c[pp]]
        best = np.lexsort((pair_c[pp], -inter[pp], gkey))
        head = np.r_[True, gkey[best][1:] != gkey[best][:-1]]
        own[pp[best[head]]] = True
    crop = np.empty_like(g)
    crop[:, 0::2] = np.clip(g[:, 0::2], ch[:, 0:1], ch[:, 2:3]) - ch[:, 0:1]
    crop[:, 1::2] = np.clip(g[:, 1::2], ch[:, 1:2], ch[:, 3:4]) - ch[:, 1:2]
    carried = (
        (inter > 0)
        & ((crop[:, 2] - crop[:, 0]) >= config.min_box_size)
        & ((crop[:, 3] - crop[:, 1]) >= config.min_box_size)
    )
    sel = np.flatnonzero(carried)
    pc_, pg = pair_c[sel], pair_g[sel]
    lo = np.array([r[0] for r in config.valid_ranges], dtype=np.float64)
    hi = np.array([r[1] for r in config.valid_ranges], dtype=np.float64)
    n_chips = len(chips)
    return {
        "chip_image": c_img,
        "chip_scale_index": c_si.astype(np.int8),
        "chip_scale": c_scale.astype(np.float64),
        "chip_canvas": chips.reshape(n_chips, 4),
        "chip_kind": c_kind,
        "chip_valid_range": np.stack([lo[c_si] * c_scale, hi[c_si] * c_scale], axis=1).reshape(n_chips, 2),
        "gt_offsets": np.concatenate([[0], np.cumsum(np.bincount(pc_, minlength=n_chips), dtype=np.int64)]),
        "gt_boxes": crop[sel].reshape(-1, 4),
        "gt_labels": table.labels[pg].astype(np.int64),
        "gt_valid": valid[pg, c_si[pc_]] & own[sel] & (c_kind[pc_] == POSITIVE),
        "gt_index": (pg - gstart[c_img[pc_]]).astype(np.int64),
        "uncoverable": uncoverable,
    }


def batch_bounds(n: int, batch_size: int) -> list:
    """The (start, end) image ranges of consecutive batches of ``batch_size`` images."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _plan_one(args):
    table, proposals, config, d, seed, start = args
    torch.set_num_threads(1)
    part = plan_images(table, config, stride=d, seed=seed, proposals=proposals)
    part["chip_image"] = part["chip_image"] + start
    return part


def plan_batches(
    table: ImageTable,
    proposals,
    config: ChipConfig,
    batches,
    *,
    stride: int | None = None,
    seed: int | None = None,
    workers: int = 0,
    progress: bool = False,
) -> list:
    """The plans of ``batches`` ((start, end) image ranges of ``table``), each with ``chip_image``
    indexing ``table``; ``proposals``: one array or None per image of ``table`` (or None).
    ``workers`` > 0 plans the batches in that many processes."""
    d = config.stride if stride is None else stride
    jobs = [(table[s:e], None if proposals is None else proposals[s:e], config, d, seed, s) for s, e in batches]
    bar = tqdm(
        total=sum(e - s for s, e in batches), unit="img", desc="planning chips", disable=not progress, mininterval=0.5
    )
    parts = []
    if workers and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            for (s, e), part in zip(batches, pool.map(_plan_one, jobs)):
                parts.append(part)
                bar.update(e - s)
    else:
        for (s, e), job in zip(batches, jobs):
            part = plan_images(job[0], config, stride=d, seed=seed, proposals=job[1])
            part["chip_image"] = part["chip_image"] + s
            parts.append(part)
            bar.update(e - s)
    bar.close()
    return parts


def merge_plans(table: ImageTable, parts: list, config: ChipConfig, stride: int) -> ChipDB:
    """The ChipDB of ``table`` from the plans of its batches, in batch order."""

    def cat(key, empty):
        arrays = [p[key] for p in parts]
        return np.concatenate(arrays) if arrays else empty

    gt_offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        gt_offsets.append(p["gt_offsets"][1:] + base)
        base += p["gt_offsets"][-1]
    return ChipDB(
        config=config,
        stride=stride,
        image_ids=np.asarray(table.image_ids, dtype=np.int64),
        image_sizes=np.asarray(table.sizes, dtype=np.int64).reshape(-1, 2),
        file_names=np.asarray(table.file_names).astype(str),
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
        uncoverable=int(sum(p["uncoverable"] for p in parts)),
    )


def proposals_for(images, proposals) -> list | None:
    """One proposals array (or None) per image: ``proposals[image_id]`` of a dict, or each
    record's own ``proposals`` when ``proposals`` is None (None for a table)."""
    if proposals is None:
        if isinstance(images, ImageTable):
            return None
        got = [im.proposals for im in images]
        return got if any(p is not None for p in got) else None
    ids = images.image_ids.tolist() if isinstance(images, ImageTable) else [im.image_id for im in images]
    return [proposals.get(i) for i in ids]


def plan_dataset(
    images,
    proposals: dict | None = None,
    config: ChipConfig | None = None,
    *,
    stride: int | None = None,
    seed: int | None = None,
    batch_size: int = 1000,
    workers: int = 0,
    progress: bool = True,
) -> ChipDB:
    """Plans a whole dataset (an ImageTable or ImageRecords), ``batch_size`` images per op call,
    with a progress bar. ``proposals``: {image_id: [P, 4]} (default: the records' own).
    ``workers`` > 0 spreads the batches over that many processes; the plan is the same."""
    config = config or ChipConfig()
    d = config.stride if stride is None else stride
    props = proposals_for(images, proposals)
    table = ImageTable.from_records(images)
    if workers is None or workers < 0:
        workers = os.cpu_count() or 1
    parts = plan_batches(
        table,
        props,
        config,
        batch_bounds(len(table), batch_size),
        stride=d,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    return merge_plans(table, parts, config, d)
