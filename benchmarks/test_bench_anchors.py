"""label_anchors at SNIPER's size (21,504 anchors per 512 chip, 50 GT) beside a vectorised
plain-PyTorch implementation of the same rules."""

import pytest
import torch
from bench_utils import HAS_CUDA, QUICK, cuda_sync

from sniper_ext import modeling, ops
from sniper_ext.baselines import label_anchors_torch


def sniper_batch(chips, gt_per_chip=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(chips, gt_per_chip, 2, generator=g) * 480
    wh = 4 + torch.rand(chips, gt_per_chip, 2, generator=g) ** 2 * 300
    gt = torch.cat([xy, xy + wh], dim=-1)
    state = torch.randint(-1, 2, (chips, gt_per_chip), generator=g, dtype=torch.int8)
    canvas = torch.full((chips, 2), 512.0)
    canvas[::3, 1] = 384.0
    return modeling.make_anchors((32, 32)), gt, state, canvas


CHIPS = [4] if QUICK else [16, 128]
IMPLS = ["sniper", "torch"] + (["sniper-cuda", "torch-cuda"] if HAS_CUDA else [])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chips", CHIPS)
def test_label_anchors(benchmark, chips, impl):
    anchors, gt, state, canvas = sniper_batch(chips)
    benchmark.group = f"label_anchors {chips} chips x 21504 anchors x 50 GT"
    benchmark.extra_info["impl"] = impl
    if impl.endswith("cuda"):
        anchors, gt, state, canvas = anchors.cuda(), gt.cuda(), state.cuda(), canvas.cuda()
    fn = ops.label_anchors if impl.startswith("sniper") else label_anchors_torch

    def run():
        out = fn(anchors, gt, state, canvas)
        cuda_sync()
        return out

    labels, matched = benchmark.pedantic(run, rounds=3 if chips > 16 else 8, iterations=1, warmup_rounds=1)
    if impl == "sniper":
        want = label_anchors_torch(anchors, gt, state, canvas)
        assert (labels == want[0]).float().mean() > 0.9999


def _filter_per_chip_loop(anchors, objectness, deltas, canvas, valid_range):
    """Plain PyTorch per chip, with the NumPy greedy NMS: what one writes without batched ops."""
    import numpy as np

    from sniper_ext.baselines import nms_numpy

    out = []
    for c in range(len(objectness)):
        boxes = modeling.decode_boxes(anchors, deltas[c], clip_wh=canvas[c])
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        lo, hi = valid_range[c]
        keep = (w >= 3) & (h >= 3) & (w * h >= lo * lo) & (w * h < hi * hi)
        b, s = boxes[keep].numpy(), objectness[c][keep].numpy()
        k = nms_numpy(b, s, 0.7)[:300]
        out.append((b[k], s[k], np.full(len(k), c)))
    return out


@pytest.mark.parametrize("impl", ["sniper", "torch-loop"] + (["sniper-cuda"] if HAS_CUDA else []))
def test_filter_proposals(benchmark, impl):
    chips = 4 if QUICK else 16
    g = torch.Generator().manual_seed(1)
    anchors = modeling.make_anchors((32, 32))
    objectness = torch.rand(chips, len(anchors), generator=g)
    deltas = torch.randn(chips, len(anchors), 4, generator=g) * 0.2
    canvas = torch.full((chips, 2), 512.0)
    valid_range = torch.tensor([[0.0, 240.0]] * chips)
    benchmark.group = f"filter_proposals {chips} chips x 21504 anchors"
    benchmark.extra_info["impl"] = impl
    args = (anchors, objectness, deltas, canvas, valid_range)
    if impl == "torch-loop":
        benchmark.pedantic(lambda: _filter_per_chip_loop(*args), rounds=3, iterations=1)
        return
    if impl == "sniper-cuda":
        args = tuple(t.cuda() for t in args)

    def run():
        out = modeling.filter_proposals(*args)
        cuda_sync()
        return out

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
