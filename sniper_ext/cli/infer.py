"""``sniper infer``: multi-scale inference (method §9) from a checkpoint of ``sniper train``; COCO
detection results (JSON, and JSON lines per image).

    sniper infer --checkpoint runs/tiny/last.pt --annotations val.json --image-root val/ --out results.json
    sniper infer --checkpoint runs/tiny/last.pt --images photos/ --out results.json --jsonl results.jsonl
    torchrun --nproc-per-node 8 -m sniper_ext.cli infer --checkpoint C --annotations GT.json --out R.json

The library side, for scripts: :class:`sniper_ext.inference.MultiScaleInference`.
"""

from __future__ import annotations

from ..inference import write_results_json, write_results_jsonl
from .common import (
    EXIT_OK,
    UsageError,
    add_command,
    add_inference_options,
    autofocus_path_for,
    check_output_file,
    run_inference,
    write_autofocus_report,
)

__all__ = ["add_parser", "run"]

_EXAMPLES_INFER = """examples:
  sniper infer --checkpoint runs/tiny/last.pt --annotations val.json --image-root images/ --out results.json
  sniper infer --checkpoint runs/tiny --images photos/ --out results.json --jsonl results.jsonl --single-scale
  sniper infer --checkpoint C --annotations GT.json --out R.json --set inference.batch_size=8
  sniper infer --checkpoint runs/af --images photos/ --out R.json --autofocus --focus-threshold 0.05 0.3
  torchrun --nproc-per-node 8 -m sniper_ext.cli infer --checkpoint C --annotations GT.json --out R.json"""

_DESCRIPTION_INFER = """Multi-scale inference (method §9) with a checkpoint of `sniper train`: every image
at each of the checkpoint's inference resolutions (batched, padded), detections kept
where their size suits the resolution, all scales merged per class with Gaussian
Soft-NMS, top N per image. Writes COCO detection results (category ids of the
annotations, or of the checkpoint for --images) and prints images/s and the merge's
share of the time. Under torchrun each process takes a slice of the images; the first
writes the files. The images and the checkpoint's class count are checked first.
With --autofocus (a checkpoint trained with the FocusPixel head, e.g. --preset
tiny_autofocus) it runs AutoFocus's cascade instead (method §11) and also writes
<out stem>_autofocus.json: the pixels processed per scale against the full pyramid,
images/s, the settings and every image's FocusChips."""


def add_parser(subparsers):
    p = add_command(
        subparsers,
        "infer",
        help="multi-scale inference with a checkpoint, COCO results JSON",
        description=_DESCRIPTION_INFER,
        examples=_EXAMPLES_INFER,
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
    return p


def run(args) -> int:
    if args.image_root is not None and args.annotations is None:
        raise UsageError("argument --image-root: only with --annotations")
    check_output_file("--out", args.out, example="results.json")
    if args.jsonl:
        check_output_file("--jsonl", args.jsonl)
    if args.autofocus:
        check_output_file("--out", autofocus_path_for(args.out))
    if args.annotations is not None:
        open(args.annotations, "rb").close()  # OSError names the path
    result = run_inference(args, annotations=args.annotations, image_root=args.image_root, images=args.images)
    if result.is_main:
        write_results_json(args.out, result.results)
        print(f"wrote {args.out}")
        if args.jsonl:
            extra = {
                r.image_id: {"file_name": r.file_name, "width": r.width, "height": r.height} for r in result.records
            }
            write_results_jsonl(args.jsonl, result.results, image_ids=[r.image_id for r in result.records], extra=extra)
            print(f"wrote {args.jsonl}")
        if args.autofocus:
            print(f"wrote {write_autofocus_report(autofocus_path_for(args.out), result)}")
    return EXIT_OK
