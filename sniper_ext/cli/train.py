"""``sniper train``: the two-stage SNIPER schedule from the command line.

    sniper train --preset tiny --out DIR [--max-iter N] [--checkpoint-every K] [--resume]
    torchrun --nproc-per-node 8 -m sniper_ext.cli train --preset sniper_r101_coco \\
        --annotations instances_train2017.json --image-root train2017 \\
        --backbone-weights resnet101-63fe2227.pth --out runs/r101
"""

from __future__ import annotations

import os

from ..config import TrainConfig, apply_overrides, load_config, preset
from ..engine import stages_of, train
from .common import (
    EXIT_OK,
    CommandError,
    UsageError,
    add_command,
    add_overrides_option,
    check_output_dir,
    nonnegative_int,
    positive_int,
    usage,
)

__all__ = ["add_parser", "run"]

DESCRIPTION = """Trains a SNIPER Faster R-CNN (method §4-§8). Mode two_stage (default): (1) the
RPN alone on positive chips, (2) its proposals over the training images at the three
inference resolutions give each image's negative-chip pool, (3) the detector on positive
chips plus sampled negatives. Without --annotations it trains on the embedded synthetic
dataset (rendered once under OUT/data). OUT receives config.json, metrics.jsonl (one JSON
object per logged iteration: stage, iter, loss, ...), last.pt (written atomically every
--checkpoint-every iterations and at every stage end), rpn.pt, chips.npz and loss.png.
A run killed at any moment and restarted with the same arguments plus --resume ends with
the same weights as an uninterrupted one. Multi-GPU/multi-node: run it under torchrun."""

EXAMPLE = """examples:
  sniper train --preset tiny --out runs/tiny --max-iter 50
  sniper train --preset tiny --out runs/tiny --resume
  sniper train --preset sniper_r101_coco --annotations coco/annotations/instances_train2017.json \\
      --image-root coco/train2017 --backbone-weights resnet101-63fe2227.pth --out runs/r101
  torchrun --nproc-per-node 8 -m sniper_ext.cli train --preset sniper_r101_coco ... --out runs/r101
  sniper train --preset tiny --out runs/x --set solver.base_lr=0.01 --set chips.chip_size=256"""


def add_parser(subparsers):
    p = add_command(
        subparsers,
        "train",
        help="train a SNIPER detector (two-stage schedule, resumable)",
        description=DESCRIPTION,
        examples=EXAMPLE,
    )
    p.add_argument("--out", metavar="DIR", required=True, help="run folder (required, no default)")
    p.add_argument(
        "--preset",
        default="tiny",
        help="named configuration: tiny, r50, sniper_r101_coco; with AutoFocus's FocusPixel head: "
        "tiny_autofocus, r101_autofocus",
    )
    p.add_argument("--config", metavar="FILE", help="a config.json to start from instead of --preset (default: none)")
    add_overrides_option(p, "override a configuration value, e.g. solver.base_lr=0.01")
    p.add_argument("--annotations", metavar="JSON", help="COCO-format training annotations (default: synthetic data)")
    p.add_argument("--image-root", metavar="DIR", help="folder of the images (default: the annotations' folder)")
    p.add_argument(
        "--backbone-weights",
        metavar="PTH",
        help="torchvision ImageNet checkpoint of the backbone (default: random init)",
    )
    p.add_argument(
        "--mode",
        choices=("two_stage", "positives", "single_scale", "pyramid"),
        help="schedule (default: the config's, two_stage); single_scale and pyramid are the whole-image baselines",
    )
    p.add_argument(
        "--max-iter",
        metavar="N",
        type=positive_int,
        help="cap every training stage at N iterations (default: no cap)",
    )
    p.add_argument(
        "--checkpoint-every",
        metavar="K",
        type=positive_int,
        help="write last.pt every K iterations (default: the config's)",
    )
    p.add_argument("--batch-size", metavar="B", type=positive_int, help="chips per process (default: the config's)")
    p.add_argument(
        "--workers",
        metavar="W",
        type=nonnegative_int,
        help="data-loading processes per training process (default: the config's)",
    )
    p.add_argument(
        "--stage", choices=("rpn", "negatives", "detector"), default="detector",
        help="stop after this stage (the schedule stage by stage: --stage rpn, then --stage negatives --resume, ...)",
    )  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (from the start when there is none yet). Settings that change the "
        "model, the data, the chips, the mode, the seed or the batch are refused (start a new --out); the "
        "others (learning rate and schedule, precision, logging, checkpoints, workers, inference) are applied "
        "from the checkpoint on and reported (default: off)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip bad images/annotations and count them instead of stopping (default: off)",
    )
    p.add_argument("--seed", metavar="S", type=nonnegative_int, help="seed of the run (default: the config's, 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    return p


def build_config(args) -> TrainConfig:
    """The run's TrainConfig from --preset/--config, the options and --set overrides."""
    if args.config and not os.path.isfile(args.config):
        raise CommandError(f"--config {args.config}: no such file")
    with usage():
        cfg = load_config(args.config) if args.config else preset(args.preset)
        if args.annotations:
            cfg.data.annotations = args.annotations
        if args.image_root:
            cfg.data.image_root = args.image_root
        if args.backbone_weights:
            cfg.backbone_weights = args.backbone_weights
        if args.mode:
            cfg.mode = args.mode
        if args.checkpoint_every:
            cfg.solver.checkpoint_every = args.checkpoint_every
        if args.batch_size:
            cfg.solver.batch_size = args.batch_size
        if args.workers is not None:
            cfg.data.workers = args.workers
        if args.skip_bad:
            cfg.data.bad_data = "skip"
        if args.seed is not None:
            cfg.seed = args.seed
        if args.max_iter:
            cfg.solver.max_iter = args.max_iter
        return apply_overrides(cfg, args.overrides)


def run(args) -> int:
    cfg = build_config(args)
    if args.stage not in stages_of(cfg.mode):
        raise UsageError(f"--stage {args.stage}: mode {cfg.mode} has the stages {', '.join(stages_of(cfg.mode))}")
    check_output_dir("--out", args.out)
    for opt, path in (("--annotations", cfg.data.annotations), ("--backbone-weights", cfg.backbone_weights)):
        if path and not os.path.isfile(path):
            raise CommandError(f"{opt} {path}: no such file")
    if cfg.data.image_root and not os.path.isdir(cfg.data.image_root):
        raise CommandError(f"--image-root {cfg.data.image_root}: no such folder")
    summary = train(
        cfg,
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        device=args.device,
        max_iter=cfg.solver.max_iter,
        stop_after=None if args.stage == "detector" else args.stage,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return EXIT_OK
    print(f"trained {cfg.name} ({cfg.mode}) in {summary.seconds:.0f} s:")
    for line in summary.lines():
        print("  " + line)
    print(
        f"checkpoint {summary.checkpoint}; metrics {os.path.join(args.out, 'metrics.jsonl')}; "
        f"loss curve {os.path.join(args.out, 'loss.png')}"
    )
    return EXIT_OK
