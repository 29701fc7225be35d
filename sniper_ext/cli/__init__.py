"""The `sniper` command line: one module per command on top of the library, which never imports
this package. Library errors (:mod:`sniper_ext.errors`) become one line and an exit status in
:func:`~sniper_ext.cli.common.run_command`.

    sniper chips [ANNOTATIONS.json] [--proposals P] [--out DB] [--viz DIR] [--skip-bad]
                                plan SNIPER chips for a COCO-format dataset (default: an
                                embedded synthetic one), print statistics, draw pictures
    sniper info                 what was built and what runs here
    sniper train --out DIR [--preset tiny] [--max-iter N] [--checkpoint-every K] [--resume]
                                train a SNIPER detector (two-stage schedule, resumable)
    sniper infer --checkpoint C (--annotations GT.json | --images IMAGE_OR_DIR) --out R.json
                                multi-scale inference with a checkpoint: COCO results JSON
    sniper detect IMAGE_OR_DIR --checkpoint C --out DIR
                                pictures of a checkpoint's detections (PNG + JSON)
    sniper eval --annotations GT.json (--results R.json | --checkpoint C) [--out M.json] [--per-class]
                                COCO box AP/AR of a results file or of a checkpoint (pycocotools)
    sniper export --checkpoint C --out MODEL.pt2 [--resolution MIN MAX] [--device cpu|cuda]
                                the detector as an AOTInductor package for deployment
                                (Python-free: examples/cpp/sniper_detect)
    sniper demo [--out DIR] [--quick]
                                SNIPER end to end on a CPU (chips, two-stage training,
                                multi-scale inference, COCO evaluation) and the paper's
                                claims in miniature: claims.json, a table, pictures
    sniper nms-demo [--out DIR] Soft-NMS / NMS on synthetic detections: timings beside
                                NumPy, the published fixture, and a picture

`sniper` alone prints this command list (exit 0). Errors are one line on stderr, ``sniper CMD:
error: ...``, naming the file and the image/annotation at fault, and come before any long work:
exit 2 for a bad command line, 1 for bad input data or an unusable path. No traceback for those;
an unexpected exception (a bug) keeps its traceback.
"""

from __future__ import annotations

import argparse

from . import chips, demo, detect, export, infer, info, nms_demo, train
from . import eval as eval_
from .common import EPILOG, EXIT_DATA, EXIT_OK, EXIT_USAGE, CommandError, Formatter, Parser, UsageError, run_command

__all__ = ["main", "build_parser", "CommandError", "UsageError", "EXIT_OK", "EXIT_DATA", "EXIT_USAGE"]

#: the commands, in the order of `sniper --help`
COMMANDS = (chips, info, nms_demo, demo, train, eval_, infer, detect, export)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="sniper",
        description="SNIPER multi-scale training and detection ops",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    sub = p.add_subparsers(dest="cmd", title="commands", metavar="COMMAND")
    for command in COMMANDS:
        cmd = command.add_parser(sub)
        cmd.set_defaults(fn=command.run, parser=cmd)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command's parser, so the line says `sniper chips: error: ...`
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0), or a usage error already printed as one line (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.cmd is None:
        parser.print_help()
        return EXIT_OK
    return run_command(f"sniper {args.cmd}", args.fn, args)
