"""AutoFocus (method §11) against full 3-scale inference, the tiny preset on the CPU, in one run:
images/s and pixels processed. The same detector serves both: a tiny_autofocus model trained for
a few dozen iterations on the synthetic set (an untrained FocusPixel head says 0.5 everywhere,
which would make every cell a FocusChip and measure nothing). The baseline is the library's own
batched multi-scale inference (:class:`MultiScaleInference`), not a strawman: AutoFocus must win
by processing fewer pixels, not by better batching. The pixel share is recorded beside the time;
on this tiny model and its short training the share, not the paper's 5x, is the number to read."""

from __future__ import annotations

import os

import pytest
import torch
from bench_utils import QUICK

from sniper_ext.config import apply_overrides, preset
from sniper_ext.data import load_coco, make_synthetic_dataset
from sniper_ext.engine import train
from sniper_ext.inference import AutoFocusInference, MultiScaleInference
from sniper_ext.runtime import load_detector

IMAGES = 8 if QUICK else 32
ROUNDS = 1 if QUICK else 3
ITERS = 20 if QUICK else 80


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench_af"))
    train_json = make_synthetic_dataset(os.path.join(root, "train"), num_images=16, seed=0)
    val_json = make_synthetic_dataset(os.path.join(root, "val"), num_images=IMAGES, seed=1)
    cfg = apply_overrides(
        preset("tiny_autofocus"),
        [
            f"data.annotations={train_json}",
            f"data.image_root={os.path.join(root, 'train', 'images')}",
            "data.workers=0",
            "solver.log_every=10",
            "solver.checkpoint_every=0",
        ],
    )
    run = os.path.join(root, "run")
    train(cfg, run, progress=False, device="cpu", max_iter=ITERS, echo=lambda *a, **k: None)
    model, mcfg, _ = load_detector(run, device="cpu")
    return model, mcfg, load_coco(val_json), os.path.join(root, "val", "images")


@pytest.mark.parametrize("impl", ["sniper-autofocus", "full-pyramid"])
def test_autofocus_vs_full_pyramid(benchmark, trained, impl):
    model, cfg, records, root = trained
    benchmark.group = f"tiny preset, AutoFocus vs full 3-scale inference, CPU: {len(records)} images"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = len(records)  # groups/s = images/s
    engine_class = AutoFocusInference if impl == "sniper-autofocus" else MultiScaleInference
    engine = engine_class.for_config(model, cfg, device="cpu")
    stats: dict = {}

    def run():
        return engine.detect(records, root, stats=stats)

    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert len(out) == len(records)
    benchmark.extra_info["images_per_s"] = len(records) / benchmark.stats.stats.median
    if "pixels" in stats:
        px = stats["pixels"]
        benchmark.extra_info["pixel_share"] = px["share"]
        benchmark.extra_info["pixel_share_per_scale"] = px["share_per_scale"]
        print(f"\nAutoFocus: {100 * px['share']:.1f}% of the full pyramid's pixels, per scale {px['share_per_scale']}")
    torch.set_num_threads(max(1, torch.get_num_threads()))


# -- FocusPixel labels: one batched tensor expression vs painting box by box ----------------------

LABEL_CHIPS = 16 if QUICK else 64
LABEL_BOXES = 24


def labels_box_by_box(boxes, state, canvas, grid, stride=16, rng=(5.0, 64.0), ignore_below=90.0):
    """The baseline, as the original code labels: per chip, paint each box's cell slice with NumPy
    (ignored first, then positives over them), then the padding."""
    import numpy as np

    b = boxes.numpy()
    st = state.numpy()
    cv = canvas.numpy()
    fh, fw = grid
    out = np.zeros((len(b), fh, fw), np.int8)
    for c in range(len(b)):
        lab = out[c]
        pos = np.zeros((fh, fw), bool)
        ign = np.zeros((fh, fw), bool)
        for (x1, y1, x2, y2), s in zip(b[c], st[c]):
            if s < 0 or x2 <= x1 or y2 <= y1:
                continue
            size = ((x2 - x1) * (y2 - y1)) ** 0.5
            sl = (slice(int(y1 // stride), int(-(-y2 // stride))), slice(int(x1 // stride), int(-(-x2 // stride))))
            if rng[0] < size < rng[1]:
                pos[sl] = True
            elif size <= rng[0] or size < ignore_below:
                ign[sl] = True
        outside = np.zeros((fh, fw), bool)
        outside[:, int(-(-cv[c, 0] // stride)) :] = True
        outside[int(-(-cv[c, 1] // stride)) :, :] = True
        lab[ign | outside] = -1
        lab[pos & ~outside] = 1
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def label_batch():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(LABEL_CHIPS, LABEL_BOXES, 2, generator=g) * 480
    wh = torch.rand(LABEL_CHIPS, LABEL_BOXES, 2, generator=g) ** 2 * 150 + 1
    boxes = torch.cat([xy, (xy + wh).clamp(max=512)], dim=2)
    state = torch.randint(-1, 2, (LABEL_CHIPS, LABEL_BOXES), generator=g, dtype=torch.int8)
    canvas = torch.tensor([[512.0, 512.0]]).repeat(LABEL_CHIPS, 1)
    canvas[::3] = torch.tensor([400.0, 300.0])
    return boxes, state, canvas


@pytest.mark.parametrize("impl", ["sniper", "box-by-box-numpy"])
def test_focus_labels(benchmark, label_batch, impl):
    from sniper_ext.modeling import focus_labels

    boxes, state, canvas = label_batch
    benchmark.group = f"FocusPixel labels, CPU: {LABEL_CHIPS} chips of 512 px x {LABEL_BOXES} boxes"
    benchmark.extra_info["impl"] = impl
    if impl == "sniper":
        out = benchmark(focus_labels, boxes, state, canvas, (32, 32))
    else:
        out = benchmark(labels_box_by_box, boxes, state, canvas, (32, 32))
    assert torch.equal(out, focus_labels(boxes, state, canvas, (32, 32)))
