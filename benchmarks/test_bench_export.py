"""Deployment: the AOTInductor package of `sniper export` (the whole detector: three resolutions,
proposals, R-CNN head, valid ranges and the Soft-NMS merge, one compiled program) against the
eager detector on the same batches, in the same run: images/s of the tiny preset on the CPU.

Both sides get the same prepared batches (decoded, resized and padded once, before timing; 4
images per batch) and produce the same detections (checked): the eager side is what
MultiScaleInference does per batch -- ``SniperRCNN.detect`` at each resolution, the valid-range
filter, the score threshold and one batched Soft-NMS merge. The model is untrained (seeded
random weights: a full 100 detections per image reach the merge). Quick mode (CI) compiles a
single-resolution package to save time.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch
from bench_utils import QUICK

from sniper_ext.config import preset
from sniper_ext.data import load_coco, make_synthetic_dataset
from sniper_ext.export import compile_package, export_detector, load_package, program_batches, unpack
from sniper_ext.inference import MultiScaleInference
from sniper_ext.modeling import build_model

IMAGES = 8 if QUICK else 32
BATCH = 4


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench_export"))
    path = make_synthetic_dataset(root, num_images=IMAGES, seed=0)
    cfg = preset("tiny")
    icfg = dataclasses.replace(cfg.inference, batch_size=BATCH)
    if QUICK:
        icfg = dataclasses.replace(icfg, resolutions=(icfg.resolutions[1],), valid_ranges=((0.0, math.inf),))
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data).eval()
    batches = list(program_batches(load_coco(path), os.path.join(root, "images"), icfg, cfg.data.pixel_mean))
    pkg = compile_package(export_detector(model, icfg), os.path.join(root, "model.pt2"))
    return model, icfg, batches, load_package(pkg)


@torch.no_grad()
def eager(model, icfg, batches):
    """MultiScaleInference's per-batch work on the prepared batches."""
    engine = MultiScaleInference(model, icfg)
    out = []
    for _, inputs in batches:
        orig = inputs[0]
        parts: list = [[] for _ in range(orig.shape[0])]
        for r in range(len(icfg.resolutions)):
            images, wh, scale = inputs[1 + 3 * r : 4 + 3 * r]
            for k, o in enumerate(model.detect(images, wh, proposals_per_image=icfg.proposals_per_scale)):
                parts[k].append(engine._scale_part(r, o["boxes"] / float(scale[k]), o["scores"], orig[k].tolist()))
        out += engine._merge(parts)
    return out


@torch.no_grad()
def compiled(package, batches):
    out = []
    for _, inputs in batches:
        out += unpack(package(*inputs))
    return out


@pytest.mark.parametrize("impl", ["sniper-aoti", "eager"])
def test_package_vs_eager_images_per_s(benchmark, workload, impl):
    model, icfg, batches, package = workload
    scales = len(icfg.resolutions)
    benchmark.group = f"tiny preset detector, CPU: {IMAGES} images x {scales} resolution(s), batches of {BATCH}"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = IMAGES  # the summary's groups/s are images/s
    fn = (lambda: compiled(package, batches)) if impl == "sniper-aoti" else (lambda: eager(model, icfg, batches))
    result = benchmark.pedantic(fn, rounds=1 if QUICK else 3, warmup_rounds=1)
    reference = eager(model, icfg, batches) if impl == "sniper-aoti" else compiled(package, batches)
    assert len(result) == IMAGES and sum(len(r[0]) for r in result) > 0
    # The same detections up to float rounding; the random model's many near-equal scores may
    # swap two neighbours (or, rarely, change which of two overlapping boxes Soft-NMS takes
    # first), so each detection is matched to one of the other side's, and 98% must match.
    matched = total = 0
    for (b, s, lab), (rb, rs, rl) in zip(result, reference, strict=True):
        assert len(b) == len(rb)
        used = np.zeros(len(rb), dtype=bool)
        for k in range(len(b)):
            close = (rl == lab[k]) & (np.abs(rs - s[k]) <= 1e-7 + 1e-5 * np.abs(rs))
            close &= np.abs(rb - b[k]).max(axis=1) <= 1e-3
            hit = np.flatnonzero(close & ~used)
            if len(hit):
                used[hit[0]] = True
                matched += 1
        total += len(b)
    assert matched >= 0.98 * total, f"{matched} of {total} detections match"
