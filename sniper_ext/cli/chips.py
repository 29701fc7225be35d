"""``sniper chips``: plan SNIPER chips for a COCO-format dataset (or the embedded synthetic one),
print statistics, write the chip database and draw a few images' chips."""

from __future__ import annotations

import os
import sys
import time

from ..chips import ChipConfig, format_stats, plan_dataset
from ..data import load_coco, load_proposals, open_image, read_proposals, synthetic_coco
from ..errors import DataError, DataIssues
from ..viz import draw_chips, save_png
from .common import (
    EXIT_OK,
    CommandError,
    UsageError,
    add_command,
    check_output_dir,
    check_output_file,
    nonnegative_int,
    positive_int,
    progress_wanted,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    c = add_command(
        subparsers,
        "chips",
        help="plan SNIPER chips for a COCO-format dataset",
        description="Plans SNIPER chips (positive chips over the valid GT of every image and\n"
        "scale, a pool of negative chips from proposals), prints statistics, writes\n"
        "the chip database and draws a few images' chips. Annotations and proposals\n"
        "are checked first: any bad entry is an error unless --skip-bad.",
    )
    c.add_argument(
        "annotations",
        nargs="?",
        metavar="ANNOTATIONS.json",
        help="COCO-format annotations (default: the embedded synthetic dataset)",
    )
    c.add_argument(
        "--proposals",
        metavar="P",
        help="proposals for negative chips: the binary .npz format (what sniper train's RPN stage writes, "
        "see docs/api.md), COCO detection results or {image_id: [[x1,y1,x2,y2],...]} (default: "
        "none, so no negative chips; the synthetic dataset brings its own)",
    )
    c.add_argument(
        "--workers",
        metavar="N",
        type=nonnegative_int,
        default=0,
        help="planning processes (0: in this process); the plan is the same for any N",
    )
    c.add_argument(
        "--out",
        metavar="DB",
        default=os.path.join("sniper_out", "chips.npz"),
        help="chip database to write ('' writes none)",
    )
    c.add_argument("--viz", metavar="DIR", help="folder for pictures of a few images' chips (default: no pictures)")
    c.add_argument(
        "--images",
        metavar="DIR",
        help="image folder (file_name of each image), to draw on the real images (default: blank canvases)",
    )
    c.add_argument("--num-viz", metavar="N", type=nonnegative_int, default=4, help="images drawn with --viz")
    c.add_argument(
        "--limit",
        metavar="N",
        type=nonnegative_int,
        default=0,
        help="plan only the first N images, by image id (0: all)",
    )
    c.add_argument("--chip-size", metavar="K", type=positive_int, default=512, help="chip side K, pixels")
    c.add_argument(
        "--stride",
        metavar="D",
        type=positive_int,
        default=32,
        help="stride d of the candidate chip grid, pixels (< K)",
    )
    c.add_argument(
        "--negatives-per-image",
        metavar="N",
        type=nonnegative_int,
        default=2,
        help="negative chips sampled per image per epoch",
    )
    c.add_argument(
        "--order-seed",
        metavar="S",
        type=nonnegative_int,
        default=None,
        help="seeded candidate order of the greedy cover (default: the canonical row-major order)",
    )
    c.add_argument(
        "--synthetic-images",
        metavar="N",
        type=positive_int,
        default=200,
        help="images in the synthetic dataset (without ANNOTATIONS.json)",
    )
    c.add_argument("--seed", metavar="S", type=nonnegative_int, default=0, help="seed of the synthetic dataset")
    c.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip or repair bad annotations and proposals instead of stopping at the first: boxes "
        "partly outside their image are clipped; zero-size, negative, non-finite or outside "
        "boxes, unknown image or category ids and malformed entries are skipped; counts by "
        "kind go to stderr (default: off, any of them is an error)",
    )
    c.add_argument(
        "--quiet", action="store_true", help="no progress bar (default: a progress bar on stderr when it is a terminal)"
    )
    return c


def run(args) -> int:
    # 1. Options, output paths and folders: all checked before anything is read or planned.
    if args.stride >= args.chip_size:
        raise UsageError(f"argument --stride: must be smaller than --chip-size ({args.stride} >= {args.chip_size})")
    cfg = ChipConfig(chip_size=args.chip_size, stride=args.stride, negatives_per_image=args.negatives_per_image)
    if args.out:
        check_output_file("--out", args.out)
    if args.viz:
        check_output_dir("--viz", args.viz)
    if args.images is not None and not os.path.isdir(args.images):
        what = "is not a directory" if os.path.lexists(args.images) else "no such directory"
        raise CommandError(f"--images {args.images}: {what}")
    for path in (args.annotations, args.proposals):  # readable files (OSError names the path), before reading either
        if path:
            open(path, "rb").close()
    progress = progress_wanted(args)

    # 2. Inputs, every annotation and proposal checked (DataError names the file and the entry).
    issues = DataIssues(skip=args.skip_bad)
    if args.annotations is None:
        coco, proposals = synthetic_coco(args.synthetic_images, seed=args.seed)
        print(
            f"no annotations given: using the embedded synthetic dataset ({len(coco['images'])} images, "
            f"{len(coco['annotations'])} objects, synthetic proposals)"
        )
        records = load_coco(coco, issues=issues, name="<synthetic dataset>")
        proposals = load_proposals(proposals, records, issues=issues, name="<synthetic proposals>")
    else:
        if progress:
            print(f"reading {args.annotations}", file=sys.stderr, flush=True)
        records = load_coco(args.annotations, issues=issues)
        proposals = None
        if args.proposals:
            if progress:
                print(f"reading {args.proposals}", file=sys.stderr, flush=True)
            proposals = read_proposals(args.proposals, records, issues=issues)
    if args.skip_bad:
        lines = issues.summary()
        head = (
            f"sniper chips: --skip-bad: skipped or repaired {len(issues)} entries"
            if lines
            else "sniper chips: --skip-bad: nothing to skip or repair"
        )
        print("\n".join([head] + [f"  {line}" for line in lines]), file=sys.stderr)
    if args.limit:
        records = records[: args.limit]
    shown = [i for i in range(len(records)) if len(records[i].boxes)][: args.num_viz] if args.viz else []
    pictures = {}  # the drawn images, read (and so checked) before anything is written
    if args.images is not None:
        for i in shown:
            rec = records[i]
            if not rec.file_name or not os.path.isfile(os.path.join(args.images, rec.file_name)):
                raise CommandError(
                    f"--images {args.images}: no image file {rec.file_name or '(no file_name)'!r} "
                    f"for image {rec.image_id} (drawn by --viz)"
                )
            file = os.path.join(args.images, rec.file_name)
            try:
                pictures[i] = open_image(file, rec.image_id, (rec.width, rec.height))
            except DataError as e:  # --skip-bad does not skip a picture: no hint
                raise CommandError(f"{e} (drawn by --viz)") from None

    # 3. The long work.
    t = time.perf_counter()
    db = plan_dataset(records, proposals, cfg, seed=args.order_seed, workers=args.workers, progress=progress)
    elapsed = time.perf_counter() - t
    print(format_stats(db.stats()), flush=True)
    if args.out:
        db.save(args.out)
    print(f"planned {len(records)} images in {elapsed:.2f} s" + (f"; chip database: {args.out}" if args.out else ""))
    if shown:
        for i in shown:
            rec = records[i]
            image = pictures.get(i)
            path = save_png(draw_chips(db, i, rec, image=image), os.path.join(args.viz, f"chips_{rec.image_id}.png"))
            print(f"wrote {path}")
    return EXIT_OK
