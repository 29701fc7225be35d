"""``sniper infer`` and ``sniper detect``: multi-scale inference (method §9) from a checkpoint of
``sniper train``; also the inference half of ``sniper eval --checkpoint``.

    sniper infer --checkpoint runs/tiny/last.pt --annotations val.json --image-root val/ --out results.json
    sniper infer --checkpoint runs/tiny/last.pt --images photos/ --out results.json --jsonl results.jsonl
    sniper detect photos/ --checkpoint runs/tiny/last.pt --out pictures/
    torchrun --nproc-per-node 8 -m sniper_ext.cli infer --checkpoint C --annotations GT.json --out R.json

The library side, for scripts:

    model, cfg, categories = load_inference_model("runs/tiny/last.pt", device="cpu")
    records, root = image_records("photos/")                 # ids 1..N in sorted file order
    run = infer(model, cfg, records, root, categories)       # InferenceRun: detections, COCO results, timings

Registered in :func:`sniper_ext.cli.build_parser` through :func:`add_infer_parser` and
:func:`add_detect_parser`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy

from .. import cli
from ..errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "InferenceRun",
    "add_detect_parser",
    "add_infer_parser",
    "add_inference_options",
    "annotation_records",
    "check_class_count",
    "image_records",
    "inference_config",
    "infer",
    "load_inference_model",
    "run_detect",
    "run_infer",
]

#: file name endings (lower case) that ``--images`` picks up in a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------------------------------------
# Library


@dataclass
class InferenceRun:
    """What :func:`infer` returns. ``detections``: one ``(boxes [N, 4] xyxy, scores [N], labels [N]
    1..C)`` per record, original pixels (every rank holds all of them under torchrun);
    ``results``: the COCO results list (category ids mapped back); ``seconds``: wall time of
    the whole run on this rank; ``stats``: :func:`detect_images`' timings of this rank's share
    (``seconds``, ``merge_seconds``, ``images``)."""

    records: list
    detections: list
    results: list
    category_ids: list
    seconds: float
    stats: dict = field(default_factory=dict)
    is_main: bool = True
    image_root: str | None = None
    categories: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else math.inf

    @property
    def merge_share(self) -> float:
        """The Soft-NMS merge as a share of this rank's inference time."""
        total = self.stats.get("seconds", 0.0)
        return self.stats.get("merge_seconds", 0.0) / total if total > 0 else 0.0


def inference_config(icfg, *, single_scale: bool = False, overrides=()):
    """``icfg`` (an :class:`~sniper_ext.config.InferenceConfig`) with ``inference.key=value``
    ``overrides`` applied; ``single_scale`` keeps only the middle resolution, valid for every
    box size ([0, inf)). Raises :class:`~sniper_ext.config.ConfigError` for an override outside
    ``inference.``, an unknown key, or an inconsistent result (a resolution count that differs
    from the valid-range count, a range with lo >= hi)."""
    from ..config import ConfigError, TrainConfig, apply_overrides

    for item in overrides:
        if not item.strip().startswith("inference."):
            raise ConfigError(f"override {item!r}: only inference.* keys can be set here (e.g. inference.batch_size=8)")
    icfg = apply_overrides(TrainConfig(inference=icfg), list(overrides)).inference
    res, ranges = tuple(icfg.resolutions), tuple(icfg.valid_ranges)
    if not res:
        raise ConfigError("inference.resolutions: needs at least one (min side, max side) pair")
    if len(ranges) != len(res):
        raise ConfigError(
            f"inference: {len(res)} resolutions but {len(ranges)} valid ranges; give one (lo, hi) range per resolution"
        )
    for k, r in enumerate(res):
        if len(r) != 2 or not all(isinstance(v, (int, float)) and 0 < v < math.inf for v in r):
            raise ConfigError(f"inference.resolutions[{k}]: must be (min side, max side) > 0, got {list(r)}")
    for k, r in enumerate(ranges):
        if len(r) != 2 or not (0 <= float(r[0]) < float(r[1])):
            raise ConfigError(f"inference.valid_ranges[{k}]: must be (lo, hi) with 0 <= lo < hi, got {list(r)}")
    for key in ("batch_size", "detections_per_image", "proposals_per_scale", "size_divisibility"):
        v = getattr(icfg, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"inference.{key}: must be a positive integer, got {v!r}")
    if icfg.nms_method not in ("gaussian", "linear", "hard"):
        raise ConfigError(f"inference.nms_method: must be gaussian, linear or hard, got {icfg.nms_method!r}")
    if single_scale:
        mid = len(res) // 2
        icfg = dataclasses.replace(icfg, resolutions=(tuple(res[mid]),), valid_ranges=((0.0, math.inf),))
    return icfg


def _resolve_checkpoint(path: str, option: str = "--checkpoint") -> str:
    """``path`` itself, or ``path/last.pt`` for a run folder; CommandError when neither exists."""
    if os.path.isdir(path):
        last = os.path.join(path, "last.pt")
        if os.path.isfile(last):
            return last
        raise cli.CommandError(f"{option} {path}: is a directory without last.pt (give the checkpoint file)")
    if not os.path.exists(path):
        raise cli.CommandError(f"{option} {path}: no such file")
    return path


def load_inference_model(checkpoint: str, device="cpu"):
    """(model in eval mode on ``device``, TrainConfig, categories [{"id", "name"}]) of a checkpoint
    of ``sniper train`` (a run folder means its ``last.pt``). A missing file raises
    CommandError; a file that is not a checkpoint raises DataError naming it."""
    from ..engine import load_detector

    return load_detector(_resolve_checkpoint(os.fspath(checkpoint)), device)


def image_records(path) -> tuple:
    """(ImageRecords, image root) for an image file or a folder of them (``.jpg``, ``.jpeg``,
    ``.png``, any case; not recursive; hidden files skipped): image ids 1..N in sorted file
    order, sizes from the file headers, no boxes. DataError for an unreadable image file or a
    folder without images; OSError (naming ``path``) for a path that does not exist."""
    from ..chips import ImageRecord
    from ..data import image_header

    path = os.fspath(path)
    if os.path.isdir(path):
        root = path
        names = sorted(
            n
            for n in os.listdir(path)
            if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, n))
        )
        if not names:
            raise DataError(path, None, f"no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    elif os.path.exists(path):
        root, names = os.path.dirname(path) or ".", [os.path.basename(path)]
    else:
        raise FileNotFoundError(2, "no such file or directory", path)
    records = []
    for k, name in enumerate(names, 1):
        w, h = image_header(os.path.join(root, name), k)
        records.append(
            ImageRecord(
                image_id=k,
                width=w,
                height=h,
                boxes=numpy.zeros((0, 4)),
                labels=numpy.zeros(0, numpy.int64),
                file_name=name,
            )
        )
    return records, root


def annotation_records(annotations, image_root=None) -> tuple:
    """(ImageRecords of a COCO annotations file, image root, categories [{"id", "name"}] sorted
    by id). The image root defaults to the annotations' folder (as ``sniper train``); every
    image file is checked (header and end marker) before any inference. DataError names the
    file and image at fault."""
    from ..chips import load_coco
    from ..chips.coco import read_json
    from ..data import check_images

    path = os.fspath(annotations)
    data = read_json(path)
    records = load_coco(data, name=path)
    if not records:
        raise DataError(path, None, "lists no images")
    cats: list = (data.get("categories") if isinstance(data, dict) else None) or []
    pairs = sorted((int(c["id"]), str(c.get("name") or c["id"])) for c in cats)
    categories = [{"id": i, "name": n} for i, n in pairs]
    if not categories:
        raise DataError(path, None, 'no "categories": the class count of the checkpoint cannot be checked')
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(root):
        raise DataError(root, None, "image folder not found (give --image-root)")
    return check_images(records, root), root, categories


def check_class_count(num_classes: int, categories, name: str) -> None:
    """DataError unless the model's ``num_classes`` equals the number of ``categories`` of ``name``."""
    if int(num_classes) != len(categories):
        raise DataError(
            name, None, f"checkpoint has {int(num_classes)} classes, {name} has {len(categories)} categories"
        )


def infer(
    model,
    cfg,
    records,
    image_root,
    categories,
    *,
    icfg=None,
    device="cpu",
    precision="auto",
    workers: int = 0,
    dist=None,
    progress: bool = False,
) -> InferenceRun:
    """Multi-scale inference of ``records`` (:func:`~sniper_ext.inference.multiscale.detect_images`
    with ``icfg``, default the checkpoint's ``cfg.inference``) and the COCO results, labels
    mapped to ``categories`` (sorted by id; label c is the c-th). ``dist`` (from
    :func:`~sniper_ext.engine.distributed.init_distributed`) shards the images over the ranks
    and gathers the detections on every rank."""
    from .multiscale import detect_images
    from .results import detections_to_coco

    icfg = icfg if icfg is not None else cfg.inference
    stats: dict = {}
    t = time.perf_counter()
    dets = detect_images(
        model,
        records,
        image_root,
        icfg,
        device=device,
        precision=precision,
        workers=workers,
        dist=dist,
        progress=progress,
        pixel_mean=cfg.data.pixel_mean,
        stats=stats,
    )
    seconds = time.perf_counter() - t
    cat_ids = [int(c["id"]) for c in categories]
    results = detections_to_coco([r.image_id for r in records], dets, cat_ids)
    return InferenceRun(
        records=list(records),
        detections=dets,
        results=results,
        category_ids=cat_ids,
        seconds=seconds,
        stats=stats,
        is_main=dist is None or dist.is_main,
        image_root=image_root,
        categories=list(categories),
    )


# ---------------------------------------------------------------------------------------------
# Command line


def add_inference_options(p, *, single_scale: bool = True) -> None:
    """The options every inference command shares (``infer``, ``detect``, ``eval --checkpoint``)."""
    if single_scale:
        p.add_argument(
            "--single-scale",
            action="store_true",
            help="only the middle inference resolution, every box size valid (default: off, all "
            "of the checkpoint's resolutions with their valid ranges)",
        )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override an inference setting of the checkpoint, e.g. inference.batch_size=8 or "
        'inference.resolutions=[[320,512]] inference.valid_ranges=[[0,"inf"]] (repeatable; default: none)',
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (auto: the GPU if any)"
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default="auto",
        help="autocast on the GPU (auto: bf16 on the GPU, fp32 on the CPU)",
    )
    p.add_argument(
        "--workers", metavar="N", type=cli._nonnegative_int, default=2, help="image-decoding processes (0: in process)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a progress bar on stderr)")


def _infer_config(args, cfg):
    from ..config import ConfigError

    try:
        return inference_config(
            cfg.inference, single_scale=getattr(args, "single_scale", False), overrides=args.overrides
        )
    except ConfigError as e:
        raise cli.UsageError(str(e)) from None


def _check_overrides(args) -> None:
    """--set keys and value types checked before any file is read (exit 2 early); their
    consistency with the checkpoint's settings is checked once it is loaded."""
    from ..config import ConfigError, TrainConfig, apply_overrides

    try:
        for item in args.overrides:
            if not item.strip().startswith("inference."):
                raise ConfigError(
                    f"override {item!r}: only inference.* keys can be set here (e.g. inference.batch_size=8)"
                )
        apply_overrides(TrainConfig(), list(args.overrides))
    except ConfigError as e:
        raise cli.UsageError(str(e)) from None


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def run_inference(args, *, annotations=None, image_root=None, images=None) -> InferenceRun:
    """The shared path of ``infer``, ``detect`` and ``eval --checkpoint``: checks (checkpoint,
    inputs, class count) before the long work, then :func:`infer` (sharded under torchrun)."""
    from ..engine.distributed import cleanup, init_distributed

    _check_overrides(args)
    checkpoint = _resolve_checkpoint(args.checkpoint)
    if images is not None:
        records, root = image_records(images)
        categories = None
        name = images
    else:
        if image_root is not None and not os.path.isdir(image_root):
            raise cli.CommandError(f"--image-root {image_root}: no such folder")
        records, root, categories = annotation_records(annotations, image_root)
        name = annotations
    try:
        dist = init_distributed(args.device)
    except RuntimeError as e:
        raise cli.CommandError(f"--device {args.device}: {e}") from None
    model, cfg, ckpt_categories = load_inference_model(checkpoint, dist.device)
    num_classes = int(model.num_classes)
    if categories is None:  # images only: the checkpoint names its classes
        categories = ckpt_categories or [{"id": c, "name": f"class {c}"} for c in range(1, num_classes + 1)]
        check_class_count(num_classes, categories, checkpoint)
    else:
        check_class_count(num_classes, categories, name)
        if ckpt_categories and [c["id"] for c in ckpt_categories] != [c["id"] for c in categories] and dist.is_main:
            print(
                f"warning: the checkpoint's category ids {[c['id'] for c in ckpt_categories][:8]} differ from "
                f"{name}'s; label c is reported as the c-th category of {name}",
                file=sys.stderr,
            )
    icfg = _infer_config(args, cfg)
    progress = _progress(args) and dist.is_main
    if dist.is_main:
        scales = ", ".join(f"{lo}x{hi}" for lo, hi in icfg.resolutions)
        print(
            f"{len(records)} images at {len(icfg.resolutions)} resolution(s) ({scales}) on {dist.device}"
            + (f", {dist.world_size} processes" if dist.distributed else ""),
            flush=True,
        )
    run = infer(
        model,
        cfg,
        records,
        root,
        categories,
        icfg=icfg,
        device=dist.device,
        precision=args.precision,
        workers=args.workers,
        dist=dist if dist.distributed else None,
        progress=progress,
    )
    cleanup(dist)  # the detections are gathered: no more collectives
    if dist.is_main:
        print(
            f"{len(run.results)} detections in {run.seconds:.2f} s: {run.images_per_s:.2f} images/s; "
            f"Soft-NMS merge {100 * run.merge_share:.1f}% of the inference time",
            flush=True,
        )
    return run


_EXAMPLES_INFER = """examples:
  sniper infer --checkpoint runs/tiny/last.pt --annotations val.json --image-root images/ --out results.json
  sniper infer --checkpoint runs/tiny --images photos/ --out results.json --jsonl results.jsonl --single-scale
  sniper infer --checkpoint C --annotations GT.json --out R.json --set inference.batch_size=8
  torchrun --nproc-per-node 8 -m sniper_ext.cli infer --checkpoint C --annotations GT.json --out R.json"""

_DESCRIPTION_INFER = """Multi-scale inference (method §9) with a checkpoint of `sniper train`: every image
at each of the checkpoint's inference resolutions (batched, padded), detections kept
where their size suits the resolution, all scales merged per class with Gaussian
Soft-NMS, top N per image. Writes COCO detection results (category ids of the
annotations, or of the checkpoint for --images) and prints images/s and the merge's
share of the time. Under torchrun each process takes a slice of the images; the first
writes the files. The images and the checkpoint's class count are checked first."""


def add_infer_parser(subparsers):
    """Adds the ``infer`` subcommand to the ``sniper`` subparsers."""
    p = subparsers.add_parser(
        "infer",
        help="multi-scale inference with a checkpoint, COCO results JSON",
        formatter_class=cli._Formatter,
        description=_DESCRIPTION_INFER,
        epilog=_EXAMPLES_INFER + "\n\n" + cli._EPILOG,
    )
    p.add_argument(
        "--checkpoint",
        metavar="C",
        required=True,
        help="checkpoint of sniper train, or its run folder (required, no default)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--annotations", metavar="GT.json", help="COCO-format file listing the images (default: none; this or --images)"
    )
    src.add_argument(
        "--images",
        metavar="IMAGE_OR_DIR",
        help="an image file or a folder of jpg/png images, ids 1..N in sorted order (default: none)",
    )
    p.add_argument(
        "--image-root", metavar="DIR", help="folder of the --annotations images (default: the annotations' folder)"
    )
    p.add_argument(
        "--out", metavar="R.json", required=True, help="COCO detection results to write (required, no default)"
    )
    p.add_argument("--jsonl", metavar="R.jsonl", help="also write one JSON line per image (default: none)")
    add_inference_options(p)
    p.set_defaults(fn=run_infer, parser=p)
    return p


def run_infer(args) -> int:
    from .results import write_results_json, write_results_jsonl

    if args.image_root is not None and args.annotations is None:
        raise cli.UsageError("argument --image-root: only with --annotations")
    cli._check_output_file("--out", args.out)
    if args.jsonl:
        cli._check_output_file("--jsonl", args.jsonl)
    if args.annotations is not None:
        open(args.annotations, "rb").close()  # OSError names the path
    run = run_inference(args, annotations=args.annotations, image_root=args.image_root, images=args.images)
    if run.is_main:
        write_results_json(args.out, run.results)
        print(f"wrote {args.out}")
        if args.jsonl:
            extra = {r.image_id: {"file_name": r.file_name, "width": r.width, "height": r.height} for r in run.records}
            write_results_jsonl(args.jsonl, run.results, image_ids=[r.image_id for r in run.records], extra=extra)
            print(f"wrote {args.jsonl}")
    return cli.EXIT_OK


_DESCRIPTION_DETECT = """Detects objects in an image or a folder of jpg/png images with a checkpoint of
`sniper train` (multi-scale inference as `sniper infer`) and draws them: DIR/<name>_detections.png
per image (boxes, class names and scores, a title and a legend) and DIR/detections.json
({"images": [...], "categories": [...], "detections": [COCO results scoring >= the threshold]})."""

_EXAMPLES_DETECT = """examples:
  sniper detect photo.jpg --checkpoint runs/tiny/last.pt --out pictures/
  sniper detect photos/ --checkpoint runs/tiny --out pictures/ --score-threshold 0.5 --single-scale"""


def _score(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return v


def add_detect_parser(subparsers):
    """Adds the ``detect`` subcommand to the ``sniper`` subparsers."""
    p = subparsers.add_parser(
        "detect",
        help="draw a checkpoint's detections on images (PNG + JSON)",
        formatter_class=cli._Formatter,
        description=_DESCRIPTION_DETECT,
        epilog=_EXAMPLES_DETECT + "\n\n" + cli._EPILOG,
    )
    p.add_argument(
        "images", metavar="IMAGE_OR_DIR", help="an image file or a folder of jpg/png images (required, no default)"
    )
    p.add_argument(
        "--checkpoint",
        metavar="C",
        required=True,
        help="checkpoint of sniper train, or its run folder (required, no default)",
    )
    p.add_argument(
        "--out", metavar="DIR", required=True, help="folder for the pictures and detections.json (required, no default)"
    )
    p.add_argument(
        "--score-threshold", metavar="S", type=_score, default=0.3, help="draw and list detections scoring at least S"
    )
    add_inference_options(p)
    p.set_defaults(fn=run_detect, parser=p)
    return p


def _picture_names(records) -> list:
    """``<stem>_detections.png`` per record; ``<stem>_<ext>_detections.png`` where two files share a stem."""
    stems = [os.path.splitext(r.file_name)[0] for r in records]
    dup = {s for s in stems if stems.count(s) > 1}
    return [
        f"{s}_{os.path.splitext(r.file_name)[1].lstrip('.').lower()}_detections.png"
        if s in dup
        else f"{s}_detections.png"
        for s, r in zip(stems, records)
    ]


def run_detect(args) -> int:
    import json

    import numpy as np

    from .._atomic import atomic_write
    from ..data import open_image
    from ..viz import draw_detections, save_png
    from .results import detections_to_coco

    cli._check_output_dir("--out", args.out)
    run = run_inference(args, images=args.images)
    if not run.is_main:
        return cli.EXIT_OK
    os.makedirs(args.out, exist_ok=True)
    names = [c["name"] for c in run.categories]
    kept = []
    for rec, (boxes, scores, labels), pic in zip(run.records, run.detections, _picture_names(run.records)):
        sel = scores >= args.score_threshold
        kept.append((boxes[sel], scores[sel], labels[sel]))
        image = open_image(os.path.join(run.image_root or "", rec.file_name), rec.image_id, (rec.width, rec.height))
        n = int(np.count_nonzero(sel))
        title = f"{rec.file_name}: {n} detection{'s' if n != 1 else ''} scoring >= {args.score_threshold:g}"
        picture = draw_detections(
            image, boxes, scores, labels, names, title=title, score_threshold=args.score_threshold
        )
        path = save_png(picture, os.path.join(args.out, pic))
        print(f"wrote {path} ({n} detections)")
    doc = {
        "images": [
            {"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height} for r in run.records
        ],
        "categories": run.categories,
        "score_threshold": args.score_threshold,
        "detections": detections_to_coco([r.image_id for r in run.records], kept, run.category_ids),
    }
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    path = atomic_write(
        os.path.join(args.out, "detections.json"), lambda f: f.write(text.encode()), prefix=".det-", suffix=".json.tmp"
    )
    print(f"wrote {path}")
    return cli.EXIT_OK
