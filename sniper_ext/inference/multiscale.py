"""Multi-scale inference (method §9) and the RPN pass that finds negative-chip regions (§4).

Every image runs at each inference resolution in padded batches; detections scoring above the
threshold whose size (original pixels) lies in that resolution's valid range are kept; all scales
are merged per class with Soft-NMS in one batched call (:func:`~sniper_ext.inference.merge.
merge_detections`), top N per image. With ``torchrun`` each rank takes every world_size-th image
and the results are gathered on every rank."""

from __future__ import annotations

import contextlib
import time
from functools import partial

import numpy as np
import torch

from .images import image_loader, resolution_scale

__all__ = ["detect_images", "rpn_proposals", "autocast_for"]


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA for "auto"/"bf16", fp16 for "fp16"; nothing for fp32 or on the CPU
    with "auto"."""
    if precision in ("fp32",) or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def _scale_fn(resolution):
    return partial(resolution_scale, resolution=tuple(resolution))


def _shard(records, rank: int, world: int):
    idx = list(range(rank, len(records), world))
    return [records[i] for i in idx], idx


def _gather(dist, local_idx, local_out, n):
    from ..engine.distributed import all_gather_objects

    out: list = [None] * n
    for idx, res in all_gather_objects(dist, (local_idx, local_out)):
        for i, r in zip(idx, res):
            out[i] = r
    return out


def _start(model, records, icfg, dist, progress: bool, desc: str):
    """This rank's slice of ``records`` (and their indices), the model in eval mode, a progress bar
    over its images x resolutions (rank 0 only)."""
    from tqdm import tqdm

    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    mine, idx = _shard(records, rank, world)
    model.eval()
    bar = tqdm(
        total=len(mine) * len(icfg.resolutions),
        unit="img",
        desc=desc,
        disable=not progress or rank != 0,
        mininterval=0.5,
    )
    return world, mine, idx, bar


def _passes(model, records, image_root, icfg, device, precision, workers, bar, pixel_mean, **detect_kw):
    """Yields (resolution index, record index, output of model.detect with boxes in original pixels).
    Images are batched in order of aspect ratio (landscape with landscape), so that a batch pads
    little; the results do not depend on the grouping except through that padding."""
    order = sorted(range(len(records)), key=lambda i: (records[i].width / records[i].height, i))
    grouped = [records[i] for i in order]
    for ri, res in enumerate(icfg.resolutions):
        loader = image_loader(
            grouped,
            image_root,
            _scale_fn(res),
            batch_size=icfg.batch_size,
            workers=workers,
            divisibility=icfg.size_divisibility,
            pixel_mean=pixel_mean,
        )
        for images, wh, scales, index in loader:
            with autocast_for(device, precision):
                outs = model.detect(images.to(device, non_blocking=True), wh.to(device), **detect_kw)
            for k, o in enumerate(outs):
                s = float(scales[k])
                yield (
                    ri,
                    order[int(index[k])],
                    {key: (v / s if key in ("boxes", "proposals") else v) for key, v in o.items()},
                )
            if bar is not None:
                bar.update(len(index))


@torch.no_grad()
def rpn_proposals(
    model,
    records,
    image_root,
    icfg,
    *,
    device,
    precision="auto",
    workers=0,
    nms_iou=0.7,
    dist=None,
    progress=True,
    pixel_mean=None,
) -> dict:
    """§4 step 2: the top ``icfg.proposals_per_scale`` RPN proposals per image at each inference
    resolution, merged over the scales with NMS at ``nms_iou``. Returns {image_id: float64 [P, 4]}
    in original pixels."""
    from ..ops import batched_nms

    device = torch.device(device)  # also a string such as "cpu" (autocast_for reads .type)
    world, mine, idx, bar = _start(model, records, icfg, dist, progress, "RPN proposals")
    boxes: list = [[] for _ in mine]
    scores: list = [[] for _ in mine]
    for _, i, o in _passes(
        model,
        mine,
        image_root,
        icfg,
        device,
        precision,
        workers,
        bar,
        pixel_mean,
        proposals_per_image=icfg.proposals_per_scale,
        rpn_only=True,
    ):
        boxes[i].append(o["proposals"].float().cpu())
        scores[i].append(o["objectness"].float().cpu())
    bar.close()
    out = []
    if mine:
        b = [torch.cat(x) for x in boxes]
        s = [torch.cat(x) for x in scores]
        img = torch.cat([torch.full((len(x),), k, dtype=torch.int64) for k, x in enumerate(b)])
        allb, alls = torch.cat(b), torch.cat(s)
        keep = batched_nms(allb, alls, img, nms_iou)
        kept_img = img[keep]
        for k in range(len(mine)):
            out.append(allb[keep[kept_img == k]].double().numpy())
    gathered = _gather(dist, idx, out, len(records)) if world > 1 else out
    return {r.image_id: p for r, p in zip(records, gathered)}


@torch.no_grad()
def detect_images(
    model,
    records,
    image_root,
    icfg,
    *,
    device,
    precision="auto",
    workers=0,
    dist=None,
    progress=True,
    pixel_mean=None,
    stats=None,
) -> list:
    """Multi-scale detection of ``records``: one ``(boxes [N, 4] float32, scores [N], labels [N]
    int64 1..C)`` per record, original pixels, at most ``icfg.detections_per_image``. A single
    resolution in ``icfg.resolutions`` is single-scale inference. ``stats`` (a dict) receives
    timings: ``seconds``, ``merge_seconds``, ``images``."""
    from .merge import in_valid_range, merge_detections

    device = torch.device(device)  # also a string such as "cpu" (autocast_for reads .type)
    t0 = time.perf_counter()
    world, mine, idx, bar = _start(model, records, icfg, dist, progress, "detecting")
    c = model.num_classes
    parts: list = [[] for _ in mine]
    for ri, i, o in _passes(
        model,
        mine,
        image_root,
        icfg,
        device,
        precision,
        workers,
        bar,
        pixel_mean,
        proposals_per_image=icfg.proposals_per_scale,
    ):
        boxes, probs = o["boxes"].float(), o["scores"].float()
        # clipped in the resized image (round(W*s) x round(H*s)), so up to 0.5/s px beyond (W, H)
        w, h = float(mine[i].width), float(mine[i].height)
        boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
        lo, hi = icfg.valid_ranges[ri]
        ok = in_valid_range(boxes, lo, hi)
        boxes, probs = boxes[ok], probs[ok, 1:]
        r, k = (probs > icfg.score_threshold).nonzero(as_tuple=True)
        parts[i].append((boxes[r].cpu(), probs[r, k].cpu(), (k + 1).cpu()))
    bar.close()
    per_image = []
    for p in parts:
        if p:
            per_image.append(tuple(torch.cat([x[j] for x in p]) for j in range(3)))
        else:
            per_image.append((torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)))
    t1 = time.perf_counter()
    merged = merge_detections(
        per_image,
        num_classes=c,
        method=icfg.nms_method,
        sigma=icfg.soft_nms_sigma,
        iou_threshold=icfg.nms_iou,
        score_threshold=icfg.score_threshold,
        top_k=icfg.detections_per_image,
    )
    t2 = time.perf_counter()
    out = [(b.numpy(), s.numpy(), lab.numpy()) for b, s, lab in merged]
    if stats is not None:
        stats.update(seconds=t2 - t0, merge_seconds=t2 - t1, images=len(mine))
    if world > 1:
        out = _gather(dist, idx, out, len(records))
    return [(np.asarray(b, np.float32), np.asarray(s, np.float32), np.asarray(lab, np.int64)) for b, s, lab in out]
