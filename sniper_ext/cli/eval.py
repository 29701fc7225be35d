"""``sniper eval``: COCO box evaluation of a results file.

    sniper eval --annotations GT.json --results R.json --out M.json [--per-class] [--backend B]
    sniper eval --annotations GT.json --checkpoint C [--image-root DIR] --out M.json

With ``--checkpoint`` it runs multi-scale inference first (the code of ``sniper infer``; under
torchrun sharded over the processes, the first evaluates) and writes the results beside ``--out``
as ``<out stem>_results.json``.

Prints pycocotools' 12-line table (and a per-class AP table with ``--per-class``) and writes the
numbers as JSON: ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` (null where
pycocotools says -1: nothing to average), ``num_images``, ``num_annotations``, ``num_detections``
and, with ``--per-class``, ``per_class`` {category name: AP}, and ``backend``. An empty results
list is valid and scores 0. A bad file is one line on stderr naming the file and the entry, exit 1.

``--backend``: ``auto`` (faster-coco-eval when installed, else pycocotools), ``faster`` or
``pycocotools`` (the reference); the same numbers (see :mod:`sniper_ext.evaluation.coco_eval`).
``--backend faster`` without faster-coco-eval is one line, exit 1 (like ``--device cuda`` without a
GPU: the command line is fine, the machine lacks it), checked before any long work.
"""

from __future__ import annotations

import os

from ..evaluation import (
    BACKENDS,
    check_ground_truth,
    evaluate_coco,
    format_per_class,
    format_table,
    resolve_backend,
    write_metrics_json,
)
from ..inference import write_results_json
from .common import (
    EXIT_OK,
    CommandError,
    UsageError,
    add_command,
    add_inference_options,
    autofocus_path_for,
    check_output_file,
    check_readable_file,
    run_inference,
    write_autofocus_report,
)

__all__ = ["add_parser", "run"]

DESCRIPTION = """Evaluates COCO detection results against COCO annotations with pycocotools'
COCOeval (boxes), or faster-coco-eval's (the same numbers, several times faster; --backend):
prints the standard 12-number table, writes the numbers as JSON.
With --checkpoint instead of --results it first runs multi-scale inference with a
checkpoint of `sniper train` over the annotations' images (as `sniper infer`) and
writes those results beside --out as <out stem>_results.json; with --autofocus it runs
AutoFocus's cascade instead and also writes <out stem>_autofocus.json (pixels, speed).
Both files are checked first: an entry with an unknown image or category id, a bbox
that is not [x, y, width, height] with width, height >= 0, or a missing score is an
error naming the file and the entry. An empty results list is valid and scores 0."""

EXAMPLE = """example:
  sniper eval --annotations instances_val2017.json --results results.json --out metrics.json --per-class
  sniper eval --annotations val.json --image-root val/ --checkpoint runs/tiny/last.pt --out metrics.json
  sniper eval --annotations val.json --checkpoint runs/af --autofocus --out metrics.json"""


def add_parser(subparsers):
    """Adds the ``eval`` subcommand to the ``sniper`` subparsers."""
    p = add_command(
        subparsers, "eval", help="COCO box AP/AR of a detection results file", description=DESCRIPTION, examples=EXAMPLE
    )
    p.add_argument(
        "--annotations", metavar="GT.json", required=True, help="COCO-format ground truth (required, no default)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--results",
        metavar="R.json",
        help='COCO detection results: a JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"} '
        "(no default; this or --checkpoint)",
    )
    src.add_argument(
        "--checkpoint",
        metavar="C",
        help="run inference with this checkpoint of sniper train (or its run folder) first (no default; this or --results)",
    )
    p.add_argument(
        "--image-root", metavar="DIR", help="with --checkpoint: folder of the images (default: the annotations' folder)"
    )
    p.add_argument("--out", metavar="M.json", help="write the numbers as JSON here (default: print only)")
    p.add_argument("--per-class", action="store_true", help="also print (and write) AP per category (default: off)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="the COCOeval that computes the numbers: faster (faster-coco-eval, pip install faster-coco-eval), "
        "pycocotools (the reference), auto (faster when installed, else pycocotools); the same numbers",
    )
    add_inference_options(p)  # used with --checkpoint only
    return p


def results_path_for(out: str) -> str:
    """Where ``--checkpoint`` mode writes its results: ``<out stem>_results.json`` beside ``out``."""
    return os.path.splitext(out)[0] + "_results.json"


def _results(args):
    """The detections to evaluate: the --results file, or with --checkpoint the results of
    inference over the annotations' images (written beside --out). None on a torchrun
    process other than the first, which evaluates alone."""
    if args.checkpoint is None:
        return args.results
    result = run_inference(args, annotations=args.annotations, image_root=args.image_root)
    return result if result.is_main else None


def run(args) -> int:
    # The backend, options and paths first, before any long work: one line, exit 1 or 2.
    try:
        backend = resolve_backend(args.backend)
    except ImportError as e:
        raise CommandError(f"--backend {args.backend}: {e}") from None
    if args.checkpoint is None:
        used = [
            opt
            for opt, v in (
                ("--image-root", args.image_root),
                ("--single-scale", args.single_scale),
                ("--set", args.overrides),
                ("--autofocus", args.autofocus),
            )
            if v
        ]
        if used:
            raise UsageError(f"argument {used[0]}: only with --checkpoint")
    if args.out:
        check_output_file("--out", args.out, example="metrics.json")
        if args.checkpoint is not None:
            check_output_file("--out", results_path_for(args.out))
            if args.autofocus:
                check_output_file("--out", autofocus_path_for(args.out))
    for path in (args.annotations, args.results):
        if path is not None:
            check_readable_file(path)
    if args.checkpoint is not None:
        check_ground_truth(args.annotations)  # as evaluation reads it, before the long inference

    inference = _results(args)
    if inference is None:  # a torchrun process other than the first: its share is done
        return EXIT_OK
    results = inference if isinstance(inference, str) else inference.results
    metrics = evaluate_coco(args.annotations, results, per_class=args.per_class, backend=backend)
    print(
        f"{metrics['num_detections']} detections on {metrics['num_images']} images "
        f"({metrics['num_annotations']} ground-truth objects), backend {metrics['backend']}"
    )
    print(format_table(metrics))
    if args.per_class:
        print(format_per_class(metrics))
    if args.out:  # written once everything succeeded
        if args.checkpoint is not None:
            print(f"wrote {write_results_json(results_path_for(args.out), results)}")
            if args.autofocus:
                print(f"wrote {write_autofocus_report(autofocus_path_for(args.out), inference)}")
        write_metrics_json(args.out, metrics)
        print(f"wrote {args.out}")
    return EXIT_OK
