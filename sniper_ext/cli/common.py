"""What every ``sniper`` command shares: exit statuses, the CLI's own errors, the parser and help
formatter, option types, output-path checks that run before any long work, the mapping of
library errors to one line and an exit status (:func:`run_command`), and the inference options
and checks of ``infer``, ``detect`` and ``eval --checkpoint``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile

from .._atomic import atomic_write
from ..data import Dataset, open_coco, open_images
from ..errors import ConfigError, DataError, DeviceError, PathError, RunLocked, TrainingDiverged
from ..inference import (
    AutoFocusInference,
    InferenceRun,
    MultiScaleInference,
    check_class_count,
    check_overrides,
    inference_config,
)
from ..runtime import cleanup, init_distributed, load_detector, resolve_checkpoint

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2

EPILOG = """exit status: 0 done; 1 bad input data or an unusable path (one line on stderr naming the
file and the image/annotation); 2 bad command line. `sniper` alone prints this list (exit 0)."""


class CommandError(Exception):
    """A problem the user can fix (an unusable path, a missing folder): one line, exit 1."""

    code = EXIT_DATA


class UsageError(CommandError):
    """A bad combination of options: one line, exit 2."""

    code = EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (with a pointer to --help), exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends each option's default, unless its help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default is None
            or action.default is argparse.SUPPRESS
            or isinstance(action.default, bool)
        ):
            return text
        return text + " (default: %(default)s)"


def add_command(subparsers, name: str, *, help: str, description: str | None = None, examples: str = ""):
    """A subcommand's parser with the shared formatter and epilog (``examples`` above it)."""
    return subparsers.add_parser(
        name,
        help=help,
        formatter_class=Formatter,
        description=description,
        epilog=(examples + "\n\n" if examples else "") + EPILOG,
    )


# ---------------------------------------------------------------------------------------------
# Option types


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    v = _int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def nonnegative_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return v


def unit_float(text: str) -> float:
    """A number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return v


# ---------------------------------------------------------------------------------------------
# Checks that run before any long work


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_writable_in(option: str, path: str, folder: str) -> None:
    """``folder`` (which exists) must be a folder we can create files in: tried with a probe
    file, which also catches read-only file systems and permissions that os.access misses."""
    if not os.path.isdir(folder):
        raise CommandError(f"{option} {path}: {folder} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sniper-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CommandError(f"{option} {path}: cannot write in {folder} ({e.strerror or e})") from None


def check_output_file(option: str, path: str, example: str = "chips.npz") -> None:
    """``path`` can be written as a file: not a directory, under a folder that is (or can be
    made) writable. Nothing is created."""
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a directory (give a file path, such as {os.path.join(path, example)})")
    _check_writable_in(option, path, _existing_ancestor(os.path.dirname(os.path.abspath(path))))


def check_output_dir(option: str, path: str) -> None:
    """``path`` is, or can be made, a writable folder. Nothing is created."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CommandError(f"{option} {path}: exists and is not a directory")
    _check_writable_in(option, path, _existing_ancestor(path))


def check_readable_file(path: str) -> None:
    """``path`` is a file we can open (OSError naming it otherwise, one line, exit 1)."""
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a directory, not a JSON file")
    open(path, "rb").close()


@contextlib.contextmanager
def option(name: str, value=None):
    """Library path and device errors inside the block name the option that gave the value:
    ``--checkpoint runs/x: no such file``, ``--device cuda: ... no GPU``."""
    try:
        yield
    except PathError as e:  # its message starts with the path
        raise CommandError(f"{name} {e}") from None
    except DeviceError as e:
        raise CommandError(f"{name} {value}: {e}") from None


@contextlib.contextmanager
def usage():
    """A ConfigError inside the block is a bad command line (exit 2)."""
    try:
        yield
    except ConfigError as e:
        raise UsageError(str(e)) from None


def progress_wanted(args) -> bool:
    """A progress bar unless ``--quiet`` or stderr is not a terminal."""
    return not args.quiet and sys.stderr.isatty()


# ---------------------------------------------------------------------------------------------
# Running a command: library errors -> one line and an exit status


def run_command(prog: str, fn, args) -> int:
    """``fn(args)``, with every error the user can fix printed as one line ``prog: error: ...`` on
    stderr: exit 2 for a bad command line (UsageError, ConfigError), 1 for bad data, an unusable
    path or device (CommandError, DataError, PathError, DeviceError, OSError naming a path). An
    unexpected exception (a bug) keeps its traceback."""
    try:
        rc = fn(args)
        sys.stdout.flush()  # a closed pipe shows here, not as an error at interpreter exit
        return rc
    except UsageError as e:
        print(f"{prog}: error: {e} (see '{prog} --help')", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"{prog}: error: {e} (see '{prog} --help')", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.code
    except (PathError, DeviceError, TrainingDiverged, RunLocked) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_DATA
    except DataError as e:
        hint = " (--skip-bad skips or repairs such entries)" if e.kind is not None else ""
        print(f"{prog}: error: {e}{hint}", file=sys.stderr)
        return EXIT_DATA
    except BrokenPipeError:  # `sniper ... | head`: the reader left; stop quietly, as cat does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_DATA
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: a bug or the system, keep the traceback
            raise
        names = f"{e.filename} -> {e.filename2}" if e.filename2 else f"{e.filename}"
        print(f"{prog}: error: {names}: {e.strerror or e}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# Inference commands: infer, detect, eval --checkpoint


def add_overrides_option(p, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``; ``help`` says what it overrides."""
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help=f"{help} (repeatable; default: none)",
    )


def add_inference_options(p, *, single_scale: bool = True) -> None:
    """The options every inference command shares (``infer``, ``detect``, ``eval --checkpoint``)."""
    if single_scale:
        p.add_argument(
            "--single-scale",
            action="store_true",
            help="only the middle inference resolution, every box size valid (default: off, all "
            "of the checkpoint's resolutions with their valid ranges)",
        )
    add_overrides_option(
        p,
        "override an inference setting of the checkpoint, e.g. inference.batch_size=8 or "
        'inference.resolutions=[[320,512]] inference.valid_ranges=[[0,"inf"]]',
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
        "--workers", metavar="N", type=nonnegative_int, default=2, help="image-decoding processes (0: in process)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a progress bar on stderr)")
    af = p.add_argument_group("AutoFocus (method §11; a checkpoint trained with the FocusPixel head)")
    af.add_argument(
        "--autofocus",
        action="store_true",
        help="AutoFocus's cascade instead of the full pyramid: the coarsest resolution on whole images, each finer "
        "one only on the FocusChips of the one before (default: off)",
    )
    af.add_argument(
        "--focus-threshold",
        metavar="T",
        type=unit_float,
        nargs="+",
        help="FocusPixel probability threshold per cascade step, coarse to fine (default: the checkpoint's, "
        "0.02 0.2 in the presets)",
    )
    af.add_argument(
        "--focus-dilation",
        metavar="D",
        type=positive_int,
        nargs="+",
        help="dilation (a DxD square, cells) per step (default: the checkpoint's, 3 3)",
    )
    af.add_argument(
        "--focus-min-chip",
        metavar="K",
        type=positive_int,
        nargs="+",
        help="smallest FocusChip side in cells per step (default: the checkpoint's, 16 20 in COCO's preset)",
    )


def autofocus_settings(args, icfg):
    """``icfg`` with the --focus-* options applied (UsageError for one without --autofocus, or
    with --single-scale; ConfigError for a count that does not match the cascade's steps)."""
    given = [
        (opt, v)
        for opt, v in (
            ("--focus-threshold", getattr(args, "focus_threshold", None)),
            ("--focus-dilation", getattr(args, "focus_dilation", None)),
            ("--focus-min-chip", getattr(args, "focus_min_chip", None)),
        )
        if v is not None
    ]
    if not getattr(args, "autofocus", False):
        if given:
            raise UsageError(f"argument {given[0][0]}: only with --autofocus")
        return icfg
    if getattr(args, "single_scale", False):
        raise UsageError("argument --autofocus: not with --single-scale (AutoFocus needs at least two resolutions)")
    steps = len(icfg.resolutions) - 1
    if steps < 1:
        raise UsageError(
            "argument --autofocus: the checkpoint's inference has one resolution; AutoFocus needs two or more"
        )
    changes = {}
    for opt, key in (
        ("--focus-threshold", "autofocus_thresholds"),
        ("--focus-dilation", "autofocus_dilations"),
        ("--focus-min-chip", "autofocus_min_chip"),
    ):
        v = dict(given).get(opt)
        if v is None:
            continue
        if len(v) != steps:
            raise UsageError(
                f"argument {opt}: {len(v)} value(s) for {steps} cascade step(s); give one per step, coarse to fine"
            )
        changes[key] = tuple(v)
    return dataclasses.replace(icfg, **changes)


def run_inference(args, *, annotations=None, image_root=None, images=None) -> InferenceRun:
    """The shared path of ``infer``, ``detect`` and ``eval --checkpoint``: checks (checkpoint,
    inputs, class count) before the long work, then multi-scale inference (sharded under
    torchrun)."""
    with usage():
        check_overrides(args.overrides)
    with option("--checkpoint"):
        checkpoint = resolve_checkpoint(args.checkpoint)
    dataset: Dataset
    if images is not None:
        dataset = open_images(images)
        name = images
    else:
        if image_root is not None and not os.path.isdir(image_root):
            raise CommandError(f"--image-root {image_root}: no such folder")
        with option("--image-root"):
            dataset = open_coco(annotations, image_root, require_categories=True)
        name = annotations
    with option("--device", args.device):
        dist = init_distributed(args.device)
    model, cfg, ckpt_categories = load_detector(checkpoint, dist.device)
    num_classes = int(model.num_classes)
    categories = dataset.categories
    if images is not None:  # images only: the checkpoint names its classes
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
    with usage():
        icfg = inference_config(
            cfg.inference, single_scale=getattr(args, "single_scale", False), overrides=args.overrides
        )
        icfg = autofocus_settings(args, icfg)
    if dist.is_main:
        scales = ", ".join(f"{lo}x{hi}" for lo, hi in icfg.resolutions)
        print(
            f"{len(dataset.records)} images at {len(icfg.resolutions)} resolution(s) ({scales}) on {dist.device}"
            + (f", {dist.world_size} processes" if dist.distributed else ""),
            flush=True,
        )
    engine_class = AutoFocusInference if getattr(args, "autofocus", False) else MultiScaleInference
    engine = engine_class.for_config(
        model,
        cfg,
        config=icfg,
        device=dist.device,
        precision=args.precision,
        workers=args.workers,
        dist=dist,
        progress=progress_wanted(args) and dist.is_main,
    )
    run = engine.run(dataset.records, dataset.image_root, categories)
    run.config = icfg
    cleanup(dist)  # the detections are gathered: no more collectives
    if dist.is_main:
        print(
            f"{len(run.results)} detections in {run.seconds:.2f} s: {run.images_per_s:.2f} images/s; "
            f"Soft-NMS merge {100 * run.merge_share:.1f}% of the inference time",
            flush=True,
        )
        if "pixels" in run.stats:
            print(autofocus_summary(run), flush=True)
    return run


def autofocus_summary(run) -> str:
    """One line: the pixels AutoFocus processed, per scale and in all, against the full pyramid."""
    px = run.stats["pixels"]
    per = ", ".join(
        f"{lo}x{hi} {100 * sh:.1f}%" for (lo, hi), sh in zip(run.stats["resolutions"], px["share_per_scale"])
    )
    chips = sum(px["regions"][1:])
    return (
        f"AutoFocus: {100 * px['share']:.1f}% of the full pyramid's pixels ({per}); {chips} FocusChips; "
        f"{run.images_per_s:.2f} images/s"
    )


def autofocus_report(run) -> dict:
    """What ``--autofocus`` writes beside the results: pixels, speed, settings, FocusChips."""
    icfg = run.config
    return {
        "images": len(run.records),
        "seconds": run.seconds,
        "images_per_s": run.images_per_s,
        "resolutions": run.stats["resolutions"],
        "pixels": run.stats["pixels"],
        "settings": None
        if icfg is None
        else {
            "thresholds": list(icfg.autofocus_thresholds),
            "dilations": list(icfg.autofocus_dilations),
            "min_chip": list(icfg.autofocus_min_chip),
            "border": icfg.autofocus_border,
            "valid_ranges": [
                [float(lo), float(hi) if math.isfinite(float(hi)) else "inf"] for lo, hi in icfg.autofocus_valid_ranges
            ],
        },
        "focus_chips": [
            {"image_id": int(i), "chips": [[int(c[0]), *[round(v, 2) for v in c[1:]]] for c in chips]}
            for i, chips in zip(run.records.image_ids.tolist(), run.stats["chips"])
        ],
    }


def autofocus_path_for(out: str) -> str:
    """Where --autofocus writes its report: ``<out stem>_autofocus.json`` beside ``out``."""
    return os.path.splitext(out)[0] + "_autofocus.json"


def write_autofocus_report(path: str, result) -> str:
    text = json.dumps(autofocus_report(result), indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()), prefix=".af-", suffix=".json.tmp")
