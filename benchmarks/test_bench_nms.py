"""Benchmarks of box_iou, NMS and Soft-NMS beside NumPy / plain-PyTorch
baselines (and torchvision plus our CPU kernel when a GPU is present)."""

import numpy as np
import pytest
import torch
from bench_utils import HAS_CUDA, QUICK, cuda_sync, synthetic_detections

from sniper_ext import ops
from sniper_ext.baselines import batched_soft_nms_numpy, box_iou_torch, nms_numpy, soft_nms_numpy

try:
    import torchvision
except Exception:  # noqa: BLE001 - not importable on the CPU machines
    torchvision = None

SINGLE_SIZES = [1000, 2000] if QUICK else [1000, 5000, 20000]
BATCH = (20, 80, 50) if QUICK else (200, 80, 50)  # images x classes x boxes per class


def _run(benchmark, group, impl, fn, rounds=None):
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    if rounds is not None:
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1 if rounds > 1 else 0)
    return benchmark(fn)


def _single(n, seed=0):
    boxes, scores, _ = synthetic_detections(1, 1, n, seed=seed, canvas=2000.0)
    return boxes, scores


def _cuda(fn):
    def run():
        out = fn()
        cuda_sync()
        return out

    return run


IMPLS = ["sniper", "numpy"] + (["sniper-cuda"] if HAS_CUDA else [])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", SINGLE_SIZES)
def test_soft_nms_single_group(benchmark, n, impl):
    boxes, scores = _single(n)
    if impl == "numpy":
        b, s = boxes.numpy(), scores.numpy()
        _run(benchmark, f"soft_nms single group N={n}", impl, lambda: soft_nms_numpy(b, s), rounds=3)
    elif impl == "sniper":
        keep, _ = _run(benchmark, f"soft_nms single group N={n}", impl, lambda: ops.soft_nms(boxes, scores))
        ref_keep, _ = soft_nms_numpy(boxes.numpy(), scores.numpy())
        assert len(keep) == len(ref_keep)
    else:  # the windowed 1024-thread kernel for N > 1024 (soft_nms_kernel.cu)
        bc, sc = boxes.cuda(), scores.cuda()
        keep, out = _run(benchmark, f"soft_nms single group N={n}", impl, _cuda(lambda: ops.soft_nms(bc, sc)))
        want_keep, want_scores = ops.soft_nms(boxes, scores)
        assert torch.equal(keep.cpu(), want_keep) and torch.equal(out.cpu(), want_scores)


@pytest.mark.parametrize("impl", IMPLS)
def test_soft_nms_batched(benchmark, impl):
    images, classes, per = BATCH
    boxes, scores, gid = synthetic_detections(images, classes, per)
    group = f"soft_nms batched {images}img x {classes}cls x {per}"
    if impl == "numpy":
        b, s, g = boxes.numpy(), scores.numpy(), gid.numpy()
        _run(benchmark, group, impl, lambda: batched_soft_nms_numpy(b, s, g), rounds=1)
    elif impl == "sniper":
        keep, _ = _run(benchmark, group, impl, lambda: ops.soft_nms(boxes, scores, gid))
        assert len(keep) > 0
    else:
        bc, sc, gc = boxes.cuda(), scores.cuda(), gid.cuda()
        _run(benchmark, group, impl, _cuda(lambda: ops.soft_nms(bc, sc, gc)))


NMS_IMPLS = ["sniper", "numpy"] + (["sniper-cuda", "torchvision-cuda"] if HAS_CUDA and torchvision else [])


@pytest.mark.parametrize("impl", NMS_IMPLS)
@pytest.mark.parametrize("n", [2000] if QUICK else [5000, 20000])
def test_nms_single_group(benchmark, n, impl):
    boxes, scores = _single(n, seed=1)
    group = f"nms single group N={n}"
    if impl == "numpy":
        b, s = boxes.numpy(), scores.numpy()
        _run(benchmark, group, impl, lambda: nms_numpy(b, s, 0.5), rounds=3)
    elif impl == "sniper":
        keep = _run(benchmark, group, impl, lambda: ops.nms(boxes, scores, 0.5))
        assert np.array_equal(keep.numpy(), nms_numpy(boxes.numpy(), scores.numpy(), 0.5))
    elif impl == "sniper-cuda":
        bc, sc = boxes.cuda(), scores.cuda()
        _run(benchmark, group, impl, _cuda(lambda: ops.nms(bc, sc, 0.5)))
    else:
        bc, sc = boxes.cuda(), scores.cuda()
        _run(benchmark, group, impl, _cuda(lambda: torchvision.ops.nms(bc, sc, 0.5)))


BNMS_IMPLS = ["sniper", "numpy-loop"] + (["sniper-cuda", "torchvision-cuda"] if HAS_CUDA and torchvision else [])


@pytest.mark.parametrize("impl", BNMS_IMPLS)
def test_batched_nms(benchmark, impl):
    images, classes, per = BATCH
    boxes, scores, gid = synthetic_detections(images, classes, per, seed=2)
    group = f"batched_nms {images}img x {classes}cls x {per}"
    if impl == "numpy-loop":
        # NumPy greedy NMS per group (what users write without a batched op).
        b, s, g = boxes.numpy(), scores.numpy(), gid.numpy()
        order = np.argsort(g, kind="stable")
        parts = np.split(order, np.flatnonzero(np.diff(g[order])) + 1)
        _run(benchmark, group, impl, lambda: [m[nms_numpy(b[m], s[m], 0.5)] for m in parts], rounds=1)
    elif impl == "sniper":
        _run(benchmark, group, impl, lambda: ops.batched_nms(boxes, scores, gid, 0.5))
    elif impl == "sniper-cuda":
        bc, sc, gc = boxes.cuda(), scores.cuda(), gid.cuda()
        _run(benchmark, group, impl, _cuda(lambda: ops.batched_nms(bc, sc, gc, 0.5)))
    else:
        bc, sc, gc = boxes.cuda(), scores.cuda(), gid.cuda()
        _run(benchmark, group, impl, _cuda(lambda: torchvision.ops.batched_nms(bc, sc, gc, 0.5)))


IOU_IMPLS = ["sniper", "torch"] + (["sniper-cuda", "torchvision-cuda"] if HAS_CUDA and torchvision else [])


@pytest.mark.parametrize("impl", IOU_IMPLS)
def test_box_iou(benchmark, impl):
    n = 500 if QUICK else 2000
    a, _ = _single(n, seed=3)
    b, _ = _single(n, seed=4)
    group = f"box_iou {n}x{n}"
    fns = {
        "sniper": lambda: ops.box_iou(a, b),
        "torch": lambda: box_iou_torch(a, b),
    }
    if HAS_CUDA:
        ac, bc = a.cuda(), b.cuda()
        fns["sniper-cuda"] = _cuda(lambda: ops.box_iou(ac, bc))
        if torchvision:
            fns["torchvision-cuda"] = _cuda(lambda: torchvision.ops.box_iou(ac, bc))
    _run(benchmark, group, impl, fns[impl])


# Large groups on the GPU (skipped without CUDA): the bitmask paths of
# nms / batched_nms against torchvision and our CPU kernel.
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="GPU benchmark: needs CUDA")
LARGE_IMPLS = ["sniper", "sniper-cuda"] + (["torchvision-cuda"] if torchvision else [])


def _proposals(chips, per_chip, seed, canvas):
    """RPN-proposal-like boxes: uniform centres, log-uniform sizes 8..256."""
    g = torch.Generator().manual_seed(seed)
    n = chips * per_chip
    c = torch.rand(n, 2, generator=g) * canvas
    wh = torch.pow(2.0, 3 + 5 * torch.rand(n, 2, generator=g))
    return (
        torch.cat([c - wh / 2, c + wh / 2], dim=1),
        torch.rand(n, generator=g),
        torch.arange(chips).repeat_interleave(per_chip),
    )


def _run_nms_impl(benchmark, group, impl, boxes, scores, idxs, rounds=5):
    if impl == "sniper":
        fn = (
            (lambda: ops.nms(boxes, scores, 0.7))
            if idxs is None
            else (lambda: ops.batched_nms(boxes, scores, idxs, 0.7))
        )
        return _run(benchmark, group, impl, fn, rounds=rounds)
    bc, sc = boxes.cuda(), scores.cuda()
    ic = None if idxs is None else idxs.cuda()
    if impl == "sniper-cuda":
        fn = (lambda: ops.nms(bc, sc, 0.7)) if ic is None else (lambda: ops.batched_nms(bc, sc, ic, 0.7))
    else:
        fn = (
            (lambda: torchvision.ops.nms(bc, sc, 0.7))
            if ic is None
            else (lambda: torchvision.ops.batched_nms(bc, sc, ic, 0.7))
        )
    keep = _run(benchmark, group, impl, _cuda(fn), rounds=rounds)
    if impl == "sniper-cuda":  # exact: the CPU kernel's result
        want = ops.nms(boxes, scores, 0.7) if idxs is None else ops.batched_nms(boxes, scores, idxs, 0.7)
        assert torch.equal(keep.cpu(), want)


@requires_cuda
@pytest.mark.parametrize("impl", LARGE_IMPLS)
def test_batched_nms_proposals(benchmark, impl):
    """filter_proposals' NMS: 4 chips x 18k proposals, four large groups."""
    boxes, scores, idxs = _proposals(4, 18_000, seed=5, canvas=512.0)
    _run_nms_impl(benchmark, "batched_nms 4 groups x 18k proposals", impl, boxes, scores, idxs)


@requires_cuda
@pytest.mark.parametrize("impl", LARGE_IMPLS)
@pytest.mark.parametrize("n", [50_000, 200_000])
def test_nms_large_single_group(benchmark, n, impl):
    """One group of 50k (one mask of 312 MB: over the default budget, 2 tiles)
    and 200k boxes (5 tiles; torchvision builds and copies a 5 GB mask)."""
    boxes, scores, _ = _proposals(1, n, seed=6, canvas=4000.0)
    _run_nms_impl(benchmark, f"nms single group N={n}", impl, boxes, scores, None, rounds=3)


# Fixed capacity (sync-free, static shapes) beside the variable-size op on the same input: the RPN
# case, 4 images x 1000 proposals, 100 kept per image; and the per-class Soft-NMS merge. The variable
# op (impl "batched_nms" / "soft_nms", the baseline) returns every kept box; the fixed one the first
# `capacity` of each group, which equal its first boxes of that group (asserted).
FIXED_DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
RPN = (4, 250, 100) if QUICK else (4, 1000, 100)  # images x proposals, capacity


def _first_per_group(keep, idxs, groups, capacity):
    rows = torch.full((groups, capacity), -1, dtype=torch.int64)
    for g in range(groups):
        k = keep[idxs[keep] == g][:capacity]
        rows[g, : len(k)] = k
    return rows


@pytest.mark.parametrize("impl", ["sniper-fixed", "batched_nms"])
@pytest.mark.parametrize("device", FIXED_DEVICES)
def test_batched_nms_fixed_rpn(benchmark, device, impl):
    images, per, cap = RPN
    boxes, scores, idxs = (t.to(device) for t in _proposals(images, per, seed=7, canvas=512.0))
    group = f"batched_nms {images}img x {per} proposals, capacity {cap} ({device})"
    if impl == "batched_nms":
        _run(benchmark, group, impl, _cuda(lambda: ops.batched_nms(boxes, scores, idxs, 0.7)))
        return
    keep, _ = _run(benchmark, group, impl, _cuda(lambda: ops.batched_nms_fixed(boxes, scores, idxs, 0.7, images, cap)))
    want = _first_per_group(ops.batched_nms(boxes, scores, idxs, 0.7).cpu(), idxs.cpu(), images, cap)
    assert torch.equal(keep.cpu(), want)


@pytest.mark.parametrize("impl", ["sniper-fixed", "soft_nms"])
@pytest.mark.parametrize("device", FIXED_DEVICES)
def test_soft_nms_fixed_merge(benchmark, device, impl):
    images, classes, per = (4, 20, 50) if QUICK else (8, 80, 50)
    boxes, scores, gid = (t.to(device) for t in synthetic_detections(images, classes, per, seed=8))
    groups, cap = images * classes, 20
    group = f"soft_nms {images}img x {classes}cls x {per}, capacity {cap} ({device})"
    if impl == "soft_nms":
        _run(benchmark, group, impl, _cuda(lambda: ops.soft_nms(boxes, scores, gid)))
        return
    keep, _, _ = _run(benchmark, group, impl, _cuda(lambda: ops.soft_nms_fixed(boxes, scores, gid, groups, cap)))
    want = _first_per_group(ops.soft_nms(boxes, scores, gid)[0].cpu(), gid.cpu(), groups, cap)
    assert torch.equal(keep.cpu(), want)
