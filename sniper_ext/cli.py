"""The `sniper` command line.

    sniper chips [ANNOTATIONS.json] [--proposals P] [--out DB] [--viz DIR]
                                plan SNIPER chips for a COCO-format dataset (default: an
                                embedded synthetic one), print statistics, draw pictures
    sniper info                 what was built and what runs here
    sniper demo [--out DIR]     Soft-NMS / NMS on synthetic detections: timings beside
                                NumPy, the published fixture, and a picture
"""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_info(args) -> int:
    from .info import report

    print(report())
    return 0


def _synthetic_image(seed: int, objects: int = 12, per_object: int = 40, size=(1024, 768)):
    """Detector-like output for one image: jittered boxes around a few objects."""
    import torch

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


def _cmd_demo(args) -> int:
    import os

    import numpy as np
    import torch

    from . import ops
    from .viz import draw_boxes, save_png

    from .baselines import batched_soft_nms_numpy

    print("1. Published fixture (mmcv): 4 boxes, sigma 0.5, iou 0.3, score threshold 0.01")
    b = torch.tensor([[6.0, 3, 8, 7], [3, 6, 9, 11], [3, 7, 10, 12], [1, 4, 13, 7]])
    s = torch.tensor([0.6, 0.9, 0.7, 0.2])
    for m in ("linear", "gaussian", "hard"):
        k, ns = ops.soft_nms(b, s, method=m, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
        print(f"   {m:<8} keep {k.tolist()} scores {[round(v, 6) for v in ns.tolist()]}")

    images, classes = args.images, 80
    print(f"\n2. Batched Soft-NMS over {images} images x {classes} classes (one call)")
    boxes, scores, idxs = [], [], []
    for i in range(images):
        bb, ss, size = _synthetic_image(i, objects=4, per_object=12)
        boxes.append(bb.repeat(classes // 4, 1)[: len(bb) * classes // 4])
        scores.append(torch.rand(len(boxes[-1]), generator=torch.Generator().manual_seed(i)))
        idxs.append(i * classes + torch.arange(len(boxes[-1])) % classes)
        if (i + 1) % max(1, images // 5) == 0 or i + 1 == images:
            print(f"   generated {i + 1}/{images} images", flush=True)
    boxes, scores, idxs = torch.cat(boxes), torch.cat(scores), torch.cat(idxs)
    t_ours = _time(lambda: ops.soft_nms(boxes, scores, idxs, sigma=0.55))
    keep, _ = ops.soft_nms(boxes, scores, idxs, sigma=0.55)
    bn, sn, gn = boxes.numpy(), scores.numpy(), idxs.numpy()
    t_np = _time(lambda: batched_soft_nms_numpy(bn, sn, gn, sigma=0.55), repeat=1)
    print(f"   {len(boxes)} boxes in {images * classes} groups -> {len(keep)} kept; "
          f"sniper_ext CPU {t_ours * 1e3:.1f} ms, NumPy {t_np * 1e3:.1f} ms ({t_np / t_ours:.1f}x)")
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
    img = draw_boxes(size, [(bb, (190, 190, 190), 1, None),
                            (bb[k[strong]], (220, 30, 30), 3, [f"{v:.2f}" for v in ns[strong].tolist()])])
    path = save_png(img, os.path.join(args.out, "soft_nms_demo.png"))
    print(f"   {len(bb)} detections -> {int(strong.sum())} strong survivors; wrote {path}")
    print("\nSummary: fixture reproduced; batched Soft-NMS "
          f"{len(boxes)} boxes in {t_ours * 1e3:.1f} ms on the CPU; picture in {args.out}")
    return 0


def _cmd_chips(args) -> int:
    import os

    from PIL import Image

    from .chips import ChipConfig, format_stats, load_coco, load_proposals, plan_dataset
    from .viz import draw_chips, save_png

    if args.annotations is None:
        from .datasets import synthetic_coco

        coco, proposals = synthetic_coco(args.synthetic_images, seed=args.seed)
        print(f"no annotations given: using the embedded synthetic dataset ({len(coco['images'])} images, "
              f"{len(coco['annotations'])} objects, synthetic proposals)")
        records = load_coco(coco)
    else:
        if not os.path.exists(args.annotations):
            print(f"sniper chips: annotations file not found: {args.annotations}", file=sys.stderr)
            return 2
        records = load_coco(args.annotations)
        proposals = load_proposals(args.proposals) if args.proposals else None
    if args.limit:
        records = records[: args.limit]
    cfg = ChipConfig(chip_size=args.chip_size, stride=args.stride,
                     negatives_per_image=args.negatives_per_image)
    t = time.perf_counter()
    db = plan_dataset(records, proposals, cfg, seed=args.order_seed, progress=not args.quiet)
    elapsed = time.perf_counter() - t
    if args.out:
        db.save(args.out)
    print(format_stats(db.stats()))
    print(f"planned {len(records)} images in {elapsed:.2f} s" + (f"; chip database: {args.out}" if args.out else ""))
    if args.viz:
        shown = [i for i in range(len(records)) if len(records[i].boxes)][: args.num_viz]
        for i in shown:
            rec = records[i]
            image = None
            if args.images and rec.file_name and os.path.exists(os.path.join(args.images, rec.file_name)):
                image = Image.open(os.path.join(args.images, rec.file_name))
            path = save_png(draw_chips(db, i, rec, image=image), os.path.join(args.viz, f"chips_{rec.image_id}.png"))
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sniper", description="SNIPER multi-scale training and detection ops")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chips", help="plan SNIPER chips for a COCO-format dataset")
    c.add_argument("annotations", nargs="?", help="COCO annotations JSON (default: embedded synthetic dataset)")
    c.add_argument("--proposals", help="proposals JSON (COCO results, or {image_id: [[x1,y1,x2,y2],...]})")
    c.add_argument("--out", default="sniper_out/chips.npz", help="chip database to write (default sniper_out/chips.npz)")
    c.add_argument("--viz", help="folder for pictures of a few images' chips")
    c.add_argument("--images", help="image folder, to draw on the real images")
    c.add_argument("--num-viz", type=int, default=4)
    c.add_argument("--limit", type=int, help="plan only the first N images")
    c.add_argument("--chip-size", type=int, default=512)
    c.add_argument("--stride", type=int, default=32)
    c.add_argument("--negatives-per-image", type=int, default=2)
    c.add_argument("--order-seed", type=int, default=None, help="seeded candidate order (default: canonical)")
    c.add_argument("--synthetic-images", type=int, default=200)
    c.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(fn=_cmd_chips)
    sub.add_parser("info", help="build and runtime information").set_defaults(fn=_cmd_info)
    d = sub.add_parser("demo", help="NMS-family demo with timings and a picture")
    d.add_argument("--out", default="sniper_out", help="folder for pictures (default: sniper_out)")
    d.add_argument("--images", type=int, default=50, help="images in the batched load (default 50)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=_cmd_demo)
    args = p.parse_args(argv)
    import sniper_ext  # noqa: F401  (loads the ops)

    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
