"""label_anchors at SNIPER's size (21,504 anchors per 512 chip, 50 GT) beside a vectorised
plain-PyTorch implementation of the same rules."""
import pytest
import torch
from conftest import HAS_CUDA, QUICK, cuda_sync

from sniper_ext import ops
from sniper_ext.baselines import label_anchors_torch


def sniper_batch(chips, gt_per_chip=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(chips, gt_per_chip, 2, generator=g) * 480
    wh = 4 + torch.rand(chips, gt_per_chip, 2, generator=g) ** 2 * 300
    gt = torch.cat([xy, xy + wh], dim=-1)
    state = torch.randint(-1, 2, (chips, gt_per_chip), generator=g, dtype=torch.int8)
    canvas = torch.full((chips, 2), 512.0)
    canvas[::3, 1] = 384.0
    return ops.make_anchors((32, 32)), gt, state, canvas


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
