"""``sniper detect``: a checkpoint's detections drawn on images (multi-scale inference as ``sniper
infer``): a PNG per image and ``detections.json``.

    sniper detect photos/ --checkpoint runs/tiny/last.pt --out pictures/
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._atomic import atomic_write
from ..data import open_image
from ..inference import cascade_order, detections_to_coco
from ..viz import SCALE_COLOURS, draw_detections, save_png
from .common import EXIT_OK, add_command, add_inference_options, check_output_dir, run_inference, unit_float

__all__ = ["add_parser", "run"]

_DESCRIPTION_DETECT = """Detects objects in an image or a folder of jpg/png images with a checkpoint of
`sniper train` (multi-scale inference as `sniper infer`) and draws them: DIR/<name>_detections.png
per image (boxes, class names and scores, a title and a legend) and DIR/detections.json
({"images": [...], "categories": [...], "detections": [COCO results scoring >= the threshold]}).
With --autofocus (AutoFocus's cascade, method §11) each picture also outlines the FocusChips of
every finer scale, one colour per scale, named in the legend."""

_EXAMPLES_DETECT = """examples:
  sniper detect photo.jpg --checkpoint runs/tiny/last.pt --out pictures/
  sniper detect photos/ --checkpoint runs/tiny --out pictures/ --score-threshold 0.5 --single-scale
  sniper detect photos/ --checkpoint runs/af --out pictures/ --autofocus"""


def add_parser(subparsers):
    p = add_command(
        subparsers,
        "detect",
        help="draw a checkpoint's detections on images (PNG + JSON)",
        description=_DESCRIPTION_DETECT,
        examples=_EXAMPLES_DETECT,
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
        "--score-threshold",
        metavar="S",
        type=unit_float,
        default=0.3,
        help="draw and list detections scoring at least S",
    )
    add_inference_options(p)
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


def _chip_layers(result):
    """With --autofocus: (resolution index, legend name, colour) per cascade step after the first."""
    if "chips" not in result.stats:
        return None
    res = result.config.resolutions
    order = cascade_order(res)
    return [
        (ri, f"FocusChips at {res[ri][0]}x{res[ri][1]}", SCALE_COLOURS[k % len(SCALE_COLOURS)])
        for k, ri in enumerate(order[1:])
    ]


def run(args) -> int:
    check_output_dir("--out", args.out)
    result = run_inference(args, images=args.images)
    if not result.is_main:
        return EXIT_OK
    os.makedirs(args.out, exist_ok=True)
    names = [c["name"] for c in result.categories]
    chip_layers = _chip_layers(result)
    kept = []
    for i, (rec, (boxes, scores, labels), pic) in enumerate(
        zip(result.records, result.detections, _picture_names(result.records))
    ):
        sel = scores >= args.score_threshold
        kept.append((boxes[sel], scores[sel], labels[sel]))
        image = open_image(os.path.join(result.image_root or "", rec.file_name), rec.image_id, (rec.width, rec.height))
        n = int(np.count_nonzero(sel))
        title = f"{rec.file_name}: {n} detection{'s' if n != 1 else ''} scoring >= {args.score_threshold:g}"
        regions = None
        if chip_layers is not None:
            chips = result.stats["chips"][i]
            regions = [(name, colour, [c[1:] for c in chips if c[0] == ri]) for ri, name, colour in chip_layers]
            title += f"; {len(chips)} FocusChips"
        picture = draw_detections(
            image, boxes, scores, labels, names, title=title, score_threshold=args.score_threshold, regions=regions
        )
        path = save_png(picture, os.path.join(args.out, pic))
        print(f"wrote {path} ({n} detections)")
    doc = {
        "images": [
            {"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height} for r in result.records
        ],
        "categories": result.categories,
        "score_threshold": args.score_threshold,
        "detections": detections_to_coco([r.image_id for r in result.records], kept, result.category_ids),
    }
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    path = atomic_write(
        os.path.join(args.out, "detections.json"), lambda f: f.write(text.encode()), prefix=".det-", suffix=".json.tmp"
    )
    print(f"wrote {path}")
    return EXIT_OK
