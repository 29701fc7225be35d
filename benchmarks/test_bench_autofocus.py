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
        [f"data.annotations={train_json}", "data.workers=0", "solver.log_every=10", "solver.checkpoint_every=0"],
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
