"""``sniper demo``: the end-to-end run of :mod:`sniper_ext.demo` from the command line.

sniper demo --out DIR [--quick]
"""

from __future__ import annotations

from ..demo import VARIANTS, run_demo
from .common import EXIT_OK, UsageError, add_command, check_output_dir, nonnegative_int, positive_int

__all__ = ["add_parser", "run"]

DESCRIPTION = """SNIPER end to end on a CPU, on an embedded synthetic multi-scale dataset (shape
classes from a few pixels to most of the image, textured backgrounds, look-alike
distractors): chip planning, two-stage training (RPN, negative chips, detector), multi-scale
inference with Soft-NMS and COCO evaluation, for six variants under one protocol (the same
learning-rate rule, equal detector iterations, whole images padded per batch, anchors matched
to each variant's object sizes; docs/method.md §10): (a) SNIPER, (b) without negative chips,
(c) two scales, (d) single-scale training on whole images, (e) training on the whole 3-scale
image pyramid, (f) SNIPER with AutoFocus's FocusPixel head, tested with full 3-scale inference
and with AutoFocus's cascade (AP, pixels, images/s, and AP over the threshold). --seeds N trains each with N seeds; claims are judged on the spread. Prints a
table beside the paper's claims and writes DIR/claims.json (per variant: the metrics' mean,
spread and per-seed values, pixels, iterations, anchors), DIR/summary.json (every claim with
its verdict), detection and chip pictures, and each run's folder. About 15 minutes on 2 CPU
cores for one seed; --quick takes a few minutes."""


def add_parser(subparsers):
    p = add_command(
        subparsers,
        "demo",
        help="SNIPER end to end and the paper's claims in miniature (the main job)",
        description=DESCRIPTION,
        examples="examples:\n  sniper demo --out sniper_out/demo\n  sniper demo --quick --out /tmp/demo",
    )
    p.add_argument("--out", metavar="DIR", default="sniper_out/demo", help="output folder")
    p.add_argument(
        "--quick", action="store_true", help="a run of a few minutes: fewer images and iterations (default: off)"
    )
    p.add_argument(
        "--iters",
        metavar="N",
        type=positive_int,
        help="detector iterations per variant (default: 600, 150 with --quick)",
    )
    p.add_argument(
        "--train-images", metavar="N", type=positive_int, help="training images (default: 64, 24 with --quick)"
    )
    p.add_argument(
        "--val-images", metavar="N", type=positive_int, help="held-out images (default: 32, 12 with --quick)"
    )
    p.add_argument(
        "--variants", metavar="LIST", default=",".join(VARIANTS),
        help="comma-separated subset of " + ", ".join(VARIANTS),
    )  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    p.add_argument("--seed", metavar="S", type=nonnegative_int, default=0, help="seed of the data and of the first run")
    p.add_argument(
        "--seeds",
        metavar="N",
        type=positive_int,
        default=1,
        help="train every variant with N seeds (S, S+1, ...) on the same data; the table shows mean and "
        "spread and a claim reproduces only when the gap exceeds the spread",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    return p


def run(args) -> int:
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UsageError(f"--variants: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(VARIANTS)}")
    check_output_dir("--out", args.out)
    run_demo(
        args.out,
        quick=args.quick,
        iters=args.iters,
        train_images=args.train_images,
        val_images=args.val_images,
        variants=variants,
        seed=args.seed,
        seeds=args.seeds,
        device=args.device,
        progress=not args.quiet,
    )
    print(f"\nwrote {args.out}/claims.json, {args.out}/summary.json and the pictures in {args.out}")
    return EXIT_OK
