"""The detector's throughput: SNIPER chip training against single-scale training on whole images,
and multi-scale inference, in the same run.

On a GPU: the R101 preset in bf16, a batch of 16 chips of 512 px against 2 images of 800x1333
(the paper's per-GPU batches): chips/s, images/s, pixels/s (issue target: >= 167 chips/s on one
H100); inference at the three resolutions (target >= 25 images/s), with the Soft-NMS merge's
share. On the CPU the same code runs with the tiny preset (192-px chips, 8 per batch, against 2
images of 320x533), so the path is exercised everywhere; absolute CPU numbers are noisy, the ratio
is what counts."""

from __future__ import annotations

import pytest
import torch
from bench_utils import HAS_CUDA, QUICK, cuda_sync

from sniper_ext.config import preset
from sniper_ext.modeling import build_model

DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")


def _setup():
    if HAS_CUDA:
        cfg = preset("sniper_r101_coco")
        chips, k, images, (h, w) = 16, 512, 2, (800, 1344)
    else:
        cfg = preset("tiny")
        chips, k, images, (h, w) = (4, 192, 1, (320, 544)) if QUICK else (8, 192, 2, (320, 544))
    return cfg, chips, k, images, (h, w)


def _batch(n, h, w, num_classes, g):
    """n padded samples of h x w with a few GT each (boxes inside, all valid)."""
    gt = 6
    xy = torch.rand(n, gt, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = 8 + torch.rand(n, gt, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
    return {
        "images": torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g),
        "gt_boxes": torch.cat([xy, xy + wh], dim=2),
        "gt_labels": torch.randint(1, num_classes + 1, (n, gt), generator=g),
        "gt_state": torch.ones(n, gt, dtype=torch.int8),
        "canvas_wh": torch.tensor([[float(w), float(h)]]).repeat(n, 1),
        "valid_range": torch.tensor([[0.0, float("inf")]]).repeat(n, 1),
        "seed": torch.arange(n, dtype=torch.int64),
    }


def _step_fn(model, opt, batch):
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if HAS_CUDA else torch.autocast("cpu", enabled=False)

    def step():
        with amp:
            loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cuda_sync()

    return step


@pytest.mark.parametrize("impl", ["sniper", "single-scale"])
def test_train_step_throughput(benchmark, impl):
    cfg, chips, k, images, (h, w) = _setup()
    torch.manual_seed(0)
    model = build_model(cfg.model).to(DEVICE).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    n, bh, bw = (chips, k, k) if impl == "sniper" else (images, h, w)
    step = _step_fn(model, opt, _batch(n, bh, bw, cfg.model.num_classes, g))
    step()  # warm-up (allocator, cudnn autotune, anchors)
    benchmark.group = f"train step ({cfg.name}, {DEVICE.type}): {chips} chips of {k}^2 vs {images} images of {h}x{w}"
    benchmark.extra_info["impl"] = impl
    benchmark.pedantic(step, rounds=3 if QUICK else 5, iterations=1)
    t = benchmark.stats.stats.median
    benchmark.extra_info.update(
        samples_per_s=n / t,
        pixels_per_s=n * bh * bw / t,
        **({"chips_per_s": n / t} if impl == "sniper" else {"images_per_s": n / t}),
    )


def test_multiscale_inference_throughput(benchmark, tmp_path):
    """Images/s of MultiScaleInference at the preset's inference resolutions on synthetic images, and the
    Soft-NMS merge's share of the time; beside the same model run image by image at batch 1."""
    from sniper_ext.data import load_coco, make_synthetic_dataset
    from sniper_ext.inference import MultiScaleInference

    cfg, *_ = _setup()
    n = 4 if QUICK else 16
    ann = make_synthetic_dataset(tmp_path, num_images=n, seed=3, split="val")
    records = load_coco(ann)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(DEVICE).eval()
    stats: dict = {}
    root = str(tmp_path / "images")

    def run():
        MultiScaleInference.for_config(model, cfg, device=DEVICE).detect(records, root, stats=stats)
        cuda_sync()

    run()
    benchmark.group = (
        f"multi-scale inference ({cfg.name}, {DEVICE.type}, {n} images x {len(cfg.inference.resolutions)} resolutions)"
    )
    benchmark.extra_info["impl"] = "sniper"
    benchmark.pedantic(run, rounds=2 if QUICK else 3, iterations=1)
    benchmark.extra_info.update(
        images_per_s=n / benchmark.stats.stats.median, soft_nms_share=stats["merge_seconds"] / stats["seconds"]
    )
