"""``sniper nms-demo``: Soft-NMS / NMS on synthetic detections: the published fixture, timings of
the batched op beside NumPy (and CUDA when there is a GPU), and a picture."""

from __future__ import annotations

import os
import time

import torch

from .. import ops
from ..baselines import batched_soft_nms_numpy
from ..viz import draw_boxes, save_png
from .common import add_command, check_output_dir, nonnegative_int, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    d = add_command(subparsers, "nms-demo", help="NMS-family demo with timings and a picture")
    d.add_argument("--out", metavar="DIR", default="sniper_out/nms", help="folder for the picture")
    d.add_argument("--images", metavar="N", type=positive_int, default=50, help="images in the batched load")
    d.add_argument("--seed", metavar="S", type=nonnegative_int, default=0, help="seed of the pictured image")
    return d


def _synthetic_image(seed: int, objects: int = 12, per_object: int = 40, size=(1024, 768)):
    """Detector-like output for one image: jittered boxes around a few objects."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    centres = torch.rand(objects, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8]) + torch.tensor([w * 0.1, h * 0.1])
    extent = 30 + torch.rand(objects, 2, generator=g) * 150
    obj = torch.arange(objects).repeat_interleave(per_object)
    c = centres[obj] + torch.randn(len(obj), 2, generator=g) * extent[obj] * 0.08
    half = extent[obj] / 2 * (1 + torch.randn(len(obj), 2, generator=g) * 0.08)
    boxes = torch.cat([c - half, c + half], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    scores = torch.rand(len(obj), generator=g) ** 2
    return boxes, scores, size


def _time(fn, repeat=3):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(args) -> int:
    check_output_dir("--out", args.out)

    print("1. Published fixture (mmcv): 4 boxes, sigma 0.5, iou 0.3, score threshold 0.01")
    b = torch.tensor([[6.0, 3, 8, 7], [3, 6, 9, 11], [3, 7, 10, 12], [1, 4, 13, 7]])
    s = torch.tensor([0.6, 0.9, 0.7, 0.2])
    for m in ("linear", "gaussian", "hard"):
        k, ns = ops.soft_nms(b, s, method=m, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
        print(f"   {m:<8} keep {k.tolist()} scores {[round(v, 6) for v in ns.tolist()]}")

    images, classes = args.images, 80
    print(f"\n2. Batched Soft-NMS over {images} images x {classes} classes (one call)")
    box_list, score_list, idx_list = [], [], []
    for i in range(images):
        bb, ss, size = _synthetic_image(i, objects=4, per_object=12)
        box_list.append(bb.repeat(classes // 4, 1)[: len(bb) * classes // 4])
        score_list.append(torch.rand(len(box_list[-1]), generator=torch.Generator().manual_seed(i)))
        idx_list.append(i * classes + torch.arange(len(box_list[-1])) % classes)
        if (i + 1) % max(1, images // 5) == 0 or i + 1 == images:
            print(f"   generated {i + 1}/{images} images", flush=True)
    boxes, scores, idxs = torch.cat(box_list), torch.cat(score_list), torch.cat(idx_list)
    t_ours = _time(lambda: ops.soft_nms(boxes, scores, idxs, sigma=0.55))
    keep, _ = ops.soft_nms(boxes, scores, idxs, sigma=0.55)
    bn, sn, gn = boxes.numpy(), scores.numpy(), idxs.numpy()
    t_np = _time(lambda: batched_soft_nms_numpy(bn, sn, gn, sigma=0.55), repeat=1)
    print(
        f"   {len(boxes)} boxes in {images * classes} groups -> {len(keep)} kept; "
        f"sniper_ext CPU {t_ours * 1e3:.1f} ms, NumPy {t_np * 1e3:.1f} ms ({t_np / t_ours:.1f}x)"
    )
    if torch.cuda.is_available() and torch.ops.sniper.soft_nms.default is not None:
        try:
            bc, sc, ic = boxes.cuda(), scores.cuda(), idxs.cuda()

            def run():
                ops.soft_nms(bc, sc, ic, sigma=0.55)
                torch.cuda.synchronize()

            t_gpu = _time(run)
            print(f"   CUDA {t_gpu * 1e3:.2f} ms ({t_ours / t_gpu:.1f}x the CPU kernel)")
        except (RuntimeError, NotImplementedError) as e:
            print(f"   CUDA not run: {e}")

    print("\n3. Picture: raw detections (grey) and Soft-NMS survivors scoring > 0.3 (red)")
    bb, ss, size = _synthetic_image(args.seed)
    k, ns = ops.soft_nms(bb, ss, sigma=0.55)
    strong = ns > 0.3
    img = draw_boxes(
        size,
        [(bb, (190, 190, 190), 1, None), (bb[k[strong]], (220, 30, 30), 3, [f"{v:.2f}" for v in ns[strong].tolist()])],
    )
    path = save_png(img, os.path.join(args.out, "soft_nms_demo.png"))
    print(f"   {len(bb)} detections -> {int(strong.sum())} strong survivors; wrote {path}")
    print(
        "\nSummary: fixture reproduced; batched Soft-NMS "
        f"{len(boxes)} boxes in {t_ours * 1e3:.1f} ms on the CPU; picture in {args.out}"
    )
    return 0
