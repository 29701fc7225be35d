"""focus_chips (AutoFocus's FocusChips) beside a per-map NumPy implementation of the same rules, on
64 FocusPixel maps of 88 x 125 cells (a 1400 x 2000 image at stride 16) with a few blobs each, at
threshold 0.5, dilation 3, min_size 16 (AutoFocus's settings).

The baseline is the straightforward vectorised one: the dilation as shifted ORs of whole arrays, the
8-connected labelling by scipy.ndimage.label (and find_objects for the boxes) when scipy is installed,
else a NumPy label propagation (3 x 3 minimum with pointer jumping), the growth vectorised, and the
merge loop painting the boxes with slices until the set of boxes stays the same. It must return the
op's chips exactly."""

import numpy as np
import pytest
import torch
from bench_utils import HAS_CUDA, QUICK, cuda_sync

from sniper_ext import ops

try:
    from scipy import ndimage
except ImportError:  # the NumPy labelling below
    ndimage = None

MAPS = 16 if QUICK else 64
H, W = 88, 125
THRESHOLD, DILATION, MIN_SIZE = 0.5, 3, 16


def focus_maps(maps, h, w, seed=0):
    """Sparse maps: 1-4 Gaussian blobs (peak 1, sigma 1-4 cells) per map, float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    prob = np.zeros((maps, h, w), dtype=np.float64)
    for m in range(maps):
        for _ in range(rng.integers(1, 5)):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, 4)
            prob[m] = np.maximum(prob[m], np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    return prob.astype(np.float32)


def _window_any(a, before, after, axis):
    """out[i] = a[i - before .. i + after] holds a True (clipped to the axis)."""
    a = np.moveaxis(a, axis, 0)
    out = a.copy()
    n = a.shape[0]
    for s in range(1, min(before, n - 1) + 1):
        out[s:] |= a[:-s]
    for s in range(1, min(after, n - 1) + 1):
        out[:-s] |= a[s:]
    return np.moveaxis(out, 0, axis)


def _label_numpy(mask):
    """8-connected labels: every on cell takes the least cell index of its 3 x 3 neighbourhood, then
    the label of the cell it names (pointer jumping), until nothing changes."""
    h, w = mask.shape
    off = h * w
    lab = np.where(mask, np.arange(off).reshape(h, w), off)
    while True:
        padded = np.pad(lab, 1, constant_values=off)
        m = lab
        for dy in range(3):
            for dx in range(3):
                m = np.minimum(m, padded[dy : dy + h, dx : dx + w])
        flat = np.append(np.where(mask, m, off).ravel(), off)
        new = flat[flat[:-1]].reshape(h, w)
        if np.array_equal(new, lab):
            break
        lab = new
    return lab, off


def _boxes(mask):
    """[n, 4] (x1, y1, x2, y2) of the 8-connected components of mask."""
    if ndimage is not None:
        lab, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(lab)]).reshape(
            -1, 4
        )
    lab, off = _label_numpy(mask)
    ys, xs = np.nonzero(mask)
    roots, comp = np.unique(lab[ys, xs], return_inverse=True)
    n = len(roots)
    x1, y1 = np.full(n, off), np.full(n, off)
    x2, y2 = np.full(n, -1), np.full(n, -1)
    np.minimum.at(x1, comp, xs)
    np.minimum.at(y1, comp, ys)
    np.maximum.at(x2, comp, xs + 1)
    np.maximum.at(y2, comp, ys + 1)
    return np.stack([x1, y1, x2, y2], 1)


def _grow(boxes, min_size, h, w):
    boxes = boxes.copy()
    for lo, hi, extent in ((0, 2, w), (1, 3, h)):
        kk = min(min_size, extent)
        length = boxes[:, hi] - boxes[:, lo]
        short = length < kk
        start = np.clip(boxes[:, lo] - (kk - length) // 2, 0, extent - kk)  # about the centre, shifted inside
        boxes[short, lo] = start[short]
        boxes[short, hi] = start[short] + kk
    return boxes


def _unique_sorted(boxes):
    boxes = np.unique(boxes, axis=0)
    return boxes[np.lexsort((boxes[:, 2], boxes[:, 3], boxes[:, 0], boxes[:, 1]))]


def numpy_focus_map(prob, threshold=THRESHOLD, dilation=DILATION, min_size=MIN_SIZE):
    """FocusChips of one [h, w] map -> [n, 4] (x1, y1, x2, y2) sorted by (y1, x1, y2, x2)."""
    h, w = prob.shape
    mask = _window_any(prob >= threshold, dilation // 2, (dilation - 1) // 2, 1)
    mask = _window_any(mask, dilation // 2, (dilation - 1) // 2, 0)
    boxes = _unique_sorted(_grow(_boxes(mask), min_size, h, w))
    while len(boxes) > 0:
        painted = np.zeros((h, w), dtype=bool)
        for x1, y1, x2, y2 in boxes:
            painted[y1:y2, x1:x2] = True
        again = _unique_sorted(_grow(_boxes(painted), min_size, h, w))
        if np.array_equal(again, boxes):
            break
        boxes = again
    return boxes


def numpy_focus(prob):
    rows = [np.insert(numpy_focus_map(p), 0, m, axis=1) for m, p in enumerate(prob)]
    return np.concatenate(rows).astype(np.int64).reshape(-1, 5)


IMPLS = ["sniper", "numpy"] + (["sniper-cuda"] if HAS_CUDA else [])


@pytest.mark.parametrize("impl", IMPLS)
def test_focus_chips(benchmark, impl):
    prob = focus_maps(MAPS, H, W)
    benchmark.group = f"focus chips: {MAPS} maps of {H}x{W}"
    benchmark.extra_info["impl"] = impl
    tp = torch.from_numpy(prob)
    want = ops.focus_chips(tp, None, THRESHOLD, DILATION, MIN_SIZE)
    assert MAPS <= len(want) <= 5 * MAPS  # a few chips per map
    if impl == "numpy":
        benchmark.extra_info["labelling"] = "scipy.ndimage.label" if ndimage is not None else "NumPy propagation"
        got = benchmark.pedantic(lambda: numpy_focus(prob), rounds=3, iterations=1, warmup_rounds=1)
        assert np.array_equal(got, want.numpy())
    elif impl == "sniper":
        got = benchmark(lambda: ops.focus_chips(tp, None, THRESHOLD, DILATION, MIN_SIZE))
        assert torch.equal(got, want)
    else:
        tc = tp.cuda()

        def run():
            out = ops.focus_chips(tc, None, THRESHOLD, DILATION, MIN_SIZE)
            cuda_sync()
            return out

        assert torch.equal(benchmark(run).cpu(), want)
