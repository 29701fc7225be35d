"""Benchmark of the multi-scale merge (method §9): all scales of a batch of images merged per
class with Gaussian Soft-NMS and cut to the top 200 per image. ``sniper`` is
:func:`sniper_ext.inference.merge_detections` (one batched ``soft_nms`` call over images x
classes); the in-run baselines are the same op called per image and per class from a Python
loop (``loop``), and the NumPy Soft-NMS of sniper_ext.baselines per image (``numpy``)."""

import os

import numpy as np
import pytest
import torch
from bench_utils import HAS_CUDA, QUICK, cuda_sync, synthetic_detections

from sniper_ext import ops
from sniper_ext.baselines import batched_soft_nms_numpy
from sniper_ext.inference import merge_detections

IMAGES, SCALES, PER_SCALE, CLASSES = (4, 3, 1000, 80) if QUICK else (8, 3, 3000, 80)
TOP_K, SIGMA = 200, 0.55
GROUP = f"merge {IMAGES}img x {SCALES}scales x {PER_SCALE} dets, {CLASSES}cls"


def _batch(device="cpu"):
    """Per image: SCALES x PER_SCALE detector-like detections over CLASSES classes."""
    per_image = []
    for i in range(IMAGES):
        n = SCALES * PER_SCALE
        boxes, scores, gid = synthetic_detections(1, CLASSES, n // CLASSES, seed=i, canvas=1000.0)
        labels = gid + 1
        per_image.append((boxes.to(device), scores.to(device), labels.to(device)))
    return per_image


def _loop(per_image):
    """The same op, one call per image and class, then top-k per image."""
    out = []
    for boxes, scores, labels in per_image:
        keep_parts, score_parts = [], []
        for c in labels.unique().tolist():
            members = (labels == c).nonzero().squeeze(1)
            k, s = ops.soft_nms(boxes[members], scores[members], sigma=SIGMA)
            keep_parts.append(members[k])
            score_parts.append(s)
        keep, s = torch.cat(keep_parts), torch.cat(score_parts)
        order = torch.sort(s, descending=True, stable=True).indices[:TOP_K]
        out.append((boxes[keep[order]], s[order], labels[keep[order]]))
    return out


def _numpy(per_image):
    out = []
    for boxes, scores, labels in per_image:
        keep, s = batched_soft_nms_numpy(boxes, scores, labels, sigma=SIGMA)
        out.append((boxes[keep[:TOP_K]], s[:TOP_K], labels[keep[:TOP_K]]))
    return out


IMPLS = ["sniper", "loop", "numpy"] + (["sniper-cuda"] if HAS_CUDA else [])


@pytest.mark.parametrize("impl", IMPLS)
def test_merge(benchmark, impl):
    benchmark.group = GROUP
    benchmark.extra_info["impl"] = impl
    per_image = _batch()
    want = merge_detections(per_image, num_classes=CLASSES, sigma=SIGMA, top_k=TOP_K)
    if impl == "sniper":
        got = benchmark(lambda: merge_detections(per_image, num_classes=CLASSES, sigma=SIGMA, top_k=TOP_K))
    elif impl == "loop":
        got = benchmark.pedantic(lambda: _loop(per_image), rounds=3, iterations=1, warmup_rounds=1)
    elif impl == "numpy":
        as_np = [tuple(t.numpy() for t in d) for d in per_image]
        got = benchmark.pedantic(lambda: _numpy(as_np), rounds=1, iterations=1)
        got = [tuple(torch.from_numpy(np.asarray(t)) for t in d) for d in got]
    else:
        on_gpu = _batch("cuda")

        def run():
            out = merge_detections(on_gpu, num_classes=CLASSES, sigma=SIGMA, top_k=TOP_K)
            cuda_sync()
            return out

        got = [tuple(t.cpu() for t in d) for d in benchmark(run)]
    for (wb, ws, _), (gb, gs, _) in zip(want, got):  # same survivors, same decayed scores
        assert len(gb) == len(wb) == TOP_K
        assert torch.allclose(gs.float(), ws, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Negative mining (method §4): the kept RPN proposals of many images split per image. `sniper`
# is split_by_image (one stable sort, a split by counts: linear); the in-run baseline `loop` is
# the scan it replaced, every kept proposal compared with every image id (images x proposals).

# The measure is 8,000 images (SNIPER_BENCH_SPLIT_IMAGES=8000: the loop takes minutes).
SPLIT_IMAGES = int(os.environ.get("SNIPER_BENCH_SPLIT_IMAGES", 300 if QUICK else 2000))
SPLIT_PER_IMAGE = 600  # kept of ~900 (300 per scale x 3) after NMS at 0.7
SPLIT_GROUP = f"negative mining: split {SPLIT_IMAGES} images x {SPLIT_PER_IMAGE} kept proposals per image"


def _kept(seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.arange(SPLIT_IMAGES).repeat_interleave(900)
    keep = torch.randperm(len(image), generator=g)[: SPLIT_IMAGES * SPLIT_PER_IMAGE]  # NMS order: any
    return keep, image


def _scan(keep, image):
    kept_img = image[keep]
    return [keep[kept_img == k] for k in range(SPLIT_IMAGES)]


@pytest.mark.parametrize("impl", ["sniper", "loop"])
def test_negative_mining_split(benchmark, impl):
    from sniper_ext.inference.merge import split_by_image

    benchmark.group = SPLIT_GROUP
    benchmark.extra_info["impl"] = impl
    keep, image = _kept()
    fn = (lambda: split_by_image(keep, image, SPLIT_IMAGES)) if impl == "sniper" else (lambda: _scan(keep, image))
    out = benchmark.pedantic(fn, rounds=3 if impl == "sniper" else 1, iterations=1, warmup_rounds=0)
    assert len(out) == SPLIT_IMAGES
    for k in range(0, SPLIT_IMAGES, max(1, SPLIT_IMAGES // 50)):  # the same split as the scan
        assert torch.equal(out[k], keep[image[keep] == k])
