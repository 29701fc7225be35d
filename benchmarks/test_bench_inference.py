"""Inference: images/s of the tiny preset on the CPU through MultiScaleInference (multi-scale: three
resolutions, batched per scale, one batched Soft-NMS merge), beside a baseline in the same run:
the same model run image by image (batch 1, no DataLoader, each image decoded and resized once
per resolution, per-image merge). Records the Soft-NMS merge's share of the inference time.

The model is untrained (random weights, fixed seed): the work per image is the same (proposals
are capped per image, detections scoring above 1e-3 go to the merge), and no training is needed."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from bench_utils import QUICK
from PIL import Image

from sniper_ext.chips import resolution_scale
from sniper_ext.config import preset
from sniper_ext.data import load_coco, make_synthetic_dataset, open_image
from sniper_ext.inference import MultiScaleInference, in_valid_range, merge_detections
from sniper_ext.modeling import build_model

IMAGES = 8 if QUICK else 32
ROUNDS = 1 if QUICK else 3


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench_infer"))
    path = make_synthetic_dataset(root, num_images=IMAGES, seed=0)
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data).eval()
    return model, cfg, load_coco(path), os.path.join(root, "images")


@torch.no_grad()
def image_by_image(model, cfg, records, root):
    """The baseline: per image and resolution, decode, resize, one forward pass of batch 1."""
    icfg = cfg.inference
    mean = torch.tensor([round(255 * m) for m in cfg.data.pixel_mean], dtype=torch.uint8).view(3, 1, 1)
    out = []
    for r in records:
        img = open_image(os.path.join(root, r.file_name))
        parts = []
        for res, (lo, hi) in zip(icfg.resolutions, icfg.valid_ranges):
            s = resolution_scale(r.width, r.height, res)
            w, h = max(1, round(r.width * s)), max(1, round(r.height * s))
            x = torch.from_numpy(np.array(img.resize((w, h), Image.BILINEAR))).permute(2, 0, 1)
            d = icfg.size_divisibility
            pad = mean.expand(3, -(-h // d) * d, -(-w // d) * d).clone()
            pad[:, :h, :w] = x
            o = model.detect(
                pad[None], torch.tensor([[w, h]], dtype=torch.float32), proposals_per_image=icfg.proposals_per_scale
            )[0]
            boxes, probs = o["boxes"] / s, o["scores"][:, 1:]
            ok = in_valid_range(boxes, lo, hi)
            rr, k = (probs[ok] > icfg.score_threshold).nonzero(as_tuple=True)
            parts.append((boxes[ok][rr], probs[ok][rr, k], k + 1))
        dets = tuple(torch.cat([p[j] for p in parts]) for j in range(3))
        out.append(
            merge_detections(
                [dets], num_classes=model.num_classes, sigma=icfg.soft_nms_sigma, top_k=icfg.detections_per_image
            )[0]
        )
    return out


@pytest.mark.parametrize("impl", ["sniper", "image-by-image"])
def test_inference_images_per_s(benchmark, workload, impl):
    model, cfg, records, root = workload
    torch.set_num_threads(max(1, torch.get_num_threads()))
    benchmark.group = f"tiny preset inference, CPU: {len(records)} images x 3 resolutions"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = len(records)  # the summary's groups/s are images/s
    stats: dict = {}
    engine = MultiScaleInference.for_config(model, cfg, device="cpu")
    if impl == "sniper":

        def run():
            return engine.detect(records, root, stats=stats)
    else:

        def run():
            return image_by_image(model, cfg, records, root)

    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert len(out) == len(records)
    benchmark.extra_info["images_per_s"] = len(records) / benchmark.stats.stats.median
    if stats:
        benchmark.extra_info["merge_share"] = stats["merge_seconds"] / stats["seconds"]
        print(f"\nmerge share {100 * stats['merge_seconds'] / stats['seconds']:.2f}% of {stats['seconds']:.2f} s")
