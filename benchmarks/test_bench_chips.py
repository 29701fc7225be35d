"""greedy_chip_cover beside a NumPy implementation of the same greedy algorithm, on a synthetic
dataset with COCO-like statistics (~7 GT and ~300 proposals per image, the three training scales)."""

import numpy as np
import pytest
import torch
from bench_utils import HAS_CUDA, QUICK, cuda_sync

from sniper_ext import ops
from sniper_ext.baselines import greedy_chip_cover_numpy
from sniper_ext.chips import ChipConfig, canvas_size, image_scales, valid_at_scale

IMAGES = 300 if QUICK else 2000


def coco_like_problems(images, proposals, seed=0):
    """(boxes, group, canvas) for every (image, scale) group: the valid GT (positives) or the
    proposals (negatives' cover). COCO-like: 640x480-ish images, 41% small, 34% medium, 24% large."""
    rng = np.random.default_rng(seed)
    cfg = ChipConfig()
    boxes, group, canvas = [], [], []
    for _ in range(images):
        w, h = (640, 480) if rng.random() < 0.6 else (480, 640) if rng.random() < 0.5 else (640, 427)
        n = max(1, int(rng.poisson(7)))
        area = np.where(
            rng.random(n) < 0.41,
            rng.uniform(16, 32**2, n),
            np.where(rng.random(n) < 0.58, rng.uniform(32**2, 96**2, n), rng.uniform(96**2, w * h * 0.6, n)),
        )
        ar = np.exp(rng.uniform(-1, 1, n))
        bw, bh = np.minimum(np.sqrt(area * ar), w - 1), np.minimum(np.sqrt(area / ar), h - 1)
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        gt = np.stack([x, y, x + bw, y + bh], 1)
        if proposals:
            pw, ph = np.exp(rng.uniform(np.log(8), np.log(300), (2, 300)))
            px, py = rng.uniform(0, w - 8, 300), rng.uniform(0, h - 8, 300)
            items = np.stack([px, py, np.minimum(px + pw, w), np.minimum(py + ph, h)], 1)
        for si, s in enumerate(image_scales(w, h, cfg)):
            sel = items if proposals else gt[valid_at_scale(gt, si, s, cfg)]
            if len(sel) == 0:
                continue
            boxes.append(sel * s)
            group.append(np.full(len(sel), len(canvas)))
            canvas.append(canvas_size(w, h, s))
    return np.concatenate(boxes), np.concatenate(group), np.array(canvas, dtype=np.float64)


def numpy_cover(boxes, group, canvas):
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    return [greedy_chip_cover_numpy(boxes[m], *canvas[group[m[0]]]) for m in np.split(order, bounds)]


IMPLS = ["sniper", "numpy"] + (["sniper-cuda"] if HAS_CUDA else [])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["positives", "proposals"])
def test_greedy_chip_cover(benchmark, kind, impl):
    boxes, group, canvas = coco_like_problems(IMAGES, proposals=kind == "proposals")
    benchmark.group = f"chip cover {kind}: {IMAGES} images, {len(canvas)} groups"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = len(canvas)
    tb, tg, tc = torch.from_numpy(boxes), torch.from_numpy(group), torch.from_numpy(canvas)
    if impl == "numpy":
        res = benchmark.pedantic(lambda: numpy_cover(boxes, group, canvas), rounds=1, iterations=1)
        ours = ops.greedy_chip_cover(tb, tg, tc)
        assert sum(len(c) for c, _ in res) == len(ours[0])
    elif impl == "sniper":
        benchmark(lambda: ops.greedy_chip_cover(tb, tg, tc))
    else:
        cb, cg, cc = tb.cuda(), tg.cuda(), tc.cuda()

        def run():
            out = ops.greedy_chip_cover(cb, cg, cc)
            cuda_sync()
            return out

        benchmark(run)


@pytest.mark.skipif(not HAS_CUDA, reason="COCO-sized load is for the GPU")
def test_coco_sized_load_cuda(benchmark):
    """118k images x 3 scales, positives and negatives (issue target: under 10 s on a GPU)."""
    images = 118_000 // (10 if QUICK else 1)
    pos = [torch.from_numpy(a).cuda() for a in coco_like_problems(images, proposals=False, seed=1)]
    neg = [torch.from_numpy(a).cuda() for a in coco_like_problems(images, proposals=True, seed=2)]
    benchmark.group = f"chip cover COCO-sized: {images} images, positives + proposals"
    benchmark.extra_info["impl"] = "sniper-cuda"

    def run():
        ops.greedy_chip_cover(*pos)
        ops.greedy_chip_cover(*neg)
        cuda_sync()

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
