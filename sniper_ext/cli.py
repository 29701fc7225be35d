"""The `sniper` command line.

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
import os
import sys
import tempfile
import time

from .errors import DataError, DataIssues

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A problem the user can fix (an unusable path, a missing folder): one line, exit 1."""

    code = EXIT_DATA


class UsageError(CommandError):
    """A bad combination of options: one line, exit 2."""

    code = EXIT_USAGE


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


def _check_output_file(option: str, path: str) -> None:
    """``path`` can be written as a file: not a directory, under a folder that is (or can be
    made) writable. Nothing is created."""
    if os.path.isdir(path):
        raise CommandError(
            f"{option} {path}: is a directory (give a file path, such as {os.path.join(path, 'chips.npz')})"
        )
    _check_writable_in(option, path, _existing_ancestor(os.path.dirname(os.path.abspath(path))))


def _check_output_dir(option: str, path: str) -> None:
    """``path`` is, or can be made, a writable folder. Nothing is created."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CommandError(f"{option} {path}: exists and is not a directory")
    _check_writable_in(option, path, _existing_ancestor(path))


def _positive_int(text: str) -> int:
    v = _int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _nonnegative_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


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

    import torch

    from . import ops
    from .baselines import batched_soft_nms_numpy
    from .viz import draw_boxes, save_png

    _check_output_dir("--out", args.out)

    print("1. Published fixture (mmcv): 4 boxes, sigma 0.5, iou 0.3, score threshold 0.01")
    b = torch.tensor([[6.0, 3, 8, 7], [3, 6, 9, 11], [3, 7, 10, 12], [1, 4, 13, 7]])
    s = torch.tensor([0.6, 0.9, 0.7, 0.2])
    for m in ("linear", "gaussian", "hard"):
        k, ns = ops.soft_nms(b, s, method=m, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
        print(f"   {m:<8} keep {k.tolist()} scores {[round(v, 6) for v in ns.tolist()]}")

    images, classes = args.images, 80
    print(f"\n2. Batched Soft-NMS over {images} images x {classes} classes (one call)")
    box_list, score_list, idx_list = [], [], []
    for i in range(images):
        bb, ss, size = _synthetic_image(i, objects=4, per_object=12)
        box_list.append(bb.repeat(classes // 4, 1)[: len(bb) * classes // 4])
        score_list.append(torch.rand(len(box_list[-1]), generator=torch.Generator().manual_seed(i)))
        idx_list.append(i * classes + torch.arange(len(box_list[-1])) % classes)
        if (i + 1) % max(1, images // 5) == 0 or i + 1 == images:
            print(f"   generated {i + 1}/{images} images", flush=True)
    boxes, scores, idxs = torch.cat(box_list), torch.cat(score_list), torch.cat(idx_list)
    t_ours = _time(lambda: ops.soft_nms(boxes, scores, idxs, sigma=0.55))
    keep, _ = ops.soft_nms(boxes, scores, idxs, sigma=0.55)
    bn, sn, gn = boxes.numpy(), scores.numpy(), idxs.numpy()
    t_np = _time(lambda: batched_soft_nms_numpy(bn, sn, gn, sigma=0.55), repeat=1)
    print(
        f"   {len(boxes)} boxes in {images * classes} groups -> {len(keep)} kept; "
        f"sniper_ext CPU {t_ours * 1e3:.1f} ms, NumPy {t_np * 1e3:.1f} ms ({t_np / t_ours:.1f}x)"
    )
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
    img = draw_boxes(
        size,
        [(bb, (190, 190, 190), 1, None), (bb[k[strong]], (220, 30, 30), 3, [f"{v:.2f}" for v in ns[strong].tolist()])],
    )
    path = save_png(img, os.path.join(args.out, "soft_nms_demo.png"))
    print(f"   {len(bb)} detections -> {int(strong.sum())} strong survivors; wrote {path}")
    print(
        "\nSummary: fixture reproduced; batched Soft-NMS "
        f"{len(boxes)} boxes in {t_ours * 1e3:.1f} ms on the CPU; picture in {args.out}"
    )
    return 0


def _cmd_chips(args) -> int:
    from .chips import ChipConfig, format_stats, load_coco, load_proposals, plan_dataset

    # 1. Options, output paths and folders: all checked before anything is read or planned.
    if args.stride >= args.chip_size:
        raise UsageError(f"argument --stride: must be smaller than --chip-size ({args.stride} >= {args.chip_size})")
    cfg = ChipConfig(chip_size=args.chip_size, stride=args.stride, negatives_per_image=args.negatives_per_image)
    if args.out:
        _check_output_file("--out", args.out)
    if args.viz:
        _check_output_dir("--viz", args.viz)
    if args.images is not None and not os.path.isdir(args.images):
        what = "is not a directory" if os.path.lexists(args.images) else "no such directory"
        raise CommandError(f"--images {args.images}: {what}")
    for path in (args.annotations, args.proposals):  # readable files (OSError names the path), before reading either
        if path:
            open(path, "rb").close()
    progress = not args.quiet and sys.stderr.isatty()

    # 2. Inputs, every annotation and proposal checked (DataError names the file and the entry).
    issues = DataIssues(skip=args.skip_bad)
    if args.annotations is None:
        from .datasets import synthetic_coco

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
            proposals = load_proposals(args.proposals, records, issues=issues)
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
    if args.images is not None:
        for i in shown:
            rec = records[i]
            if not rec.file_name or not os.path.isfile(os.path.join(args.images, rec.file_name)):
                raise CommandError(
                    f"--images {args.images}: no image file {rec.file_name or '(no file_name)'!r} "
                    f"for image {rec.image_id} (drawn by --viz)"
                )

    # 3. The long work.
    t = time.perf_counter()
    db = plan_dataset(records, proposals, cfg, seed=args.order_seed, progress=progress)
    elapsed = time.perf_counter() - t
    print(format_stats(db.stats()), flush=True)
    if args.out:
        db.save(args.out)
    print(f"planned {len(records)} images in {elapsed:.2f} s" + (f"; chip database: {args.out}" if args.out else ""))
    if shown:
        from PIL import Image

        from .viz import draw_chips, save_png

        for i in shown:
            rec = records[i]
            image = None
            if args.images is not None:
                file = os.path.join(args.images, rec.file_name)
                try:
                    with Image.open(file) as f:
                        image = f.convert("RGB")
                except OSError as e:  # PIL's "cannot identify image file" carries no filename
                    raise CommandError(f"{file}: cannot read image {rec.image_id} ({e})") from None
            path = save_png(draw_chips(db, i, rec, image=image), os.path.join(args.viz, f"chips_{rec.image_id}.png"))
            print(f"wrote {path}")
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (with a pointer to --help), exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
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


_EPILOG = """exit status: 0 done; 1 bad input data or an unusable path (one line on stderr naming the
file and the image/annotation); 2 bad command line. `sniper` alone prints this list (exit 0)."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sniper",
        description="SNIPER multi-scale training and detection ops",
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    sub = p.add_subparsers(dest="cmd", title="commands", metavar="COMMAND")

    c = sub.add_parser(
        "chips",
        help="plan SNIPER chips for a COCO-format dataset",
        formatter_class=_Formatter,
        description="Plans SNIPER chips (positive chips over the valid GT of every image and\n"
        "scale, a pool of negative chips from proposals), prints statistics, writes\n"
        "the chip database and draws a few images' chips. Annotations and proposals\n"
        "are checked first: any bad entry is an error unless --skip-bad.",
        epilog=_EPILOG,
    )
    c.add_argument(
        "annotations",
        nargs="?",
        metavar="ANNOTATIONS.json",
        help="COCO-format annotations (default: the embedded synthetic dataset)",
    )
    c.add_argument(
        "--proposals",
        metavar="P.json",
        help="proposals: COCO detection results or {image_id: [[x1,y1,x2,y2],...]}, for negative "
        "chips (default: none, so no negative chips; the synthetic dataset brings its own)",
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
    c.add_argument("--num-viz", metavar="N", type=_nonnegative_int, default=4, help="images drawn with --viz")
    c.add_argument(
        "--limit",
        metavar="N",
        type=_nonnegative_int,
        default=0,
        help="plan only the first N images, by image id (0: all)",
    )
    c.add_argument("--chip-size", metavar="K", type=_positive_int, default=512, help="chip side K, pixels")
    c.add_argument(
        "--stride",
        metavar="D",
        type=_positive_int,
        default=32,
        help="stride d of the candidate chip grid, pixels (< K)",
    )
    c.add_argument(
        "--negatives-per-image",
        metavar="N",
        type=_nonnegative_int,
        default=2,
        help="negative chips sampled per image per epoch",
    )
    c.add_argument(
        "--order-seed",
        metavar="S",
        type=_nonnegative_int,
        default=None,
        help="seeded candidate order of the greedy cover (default: the canonical row-major order)",
    )
    c.add_argument(
        "--synthetic-images",
        metavar="N",
        type=_positive_int,
        default=200,
        help="images in the synthetic dataset (without ANNOTATIONS.json)",
    )
    c.add_argument("--seed", metavar="S", type=_nonnegative_int, default=0, help="seed of the synthetic dataset")
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
    c.set_defaults(fn=_cmd_chips, parser=c)

    i = sub.add_parser("info", help="build and runtime information", formatter_class=_Formatter, epilog=_EPILOG)
    i.set_defaults(fn=_cmd_info, parser=i)

    d = sub.add_parser(
        "nms-demo", help="NMS-family demo with timings and a picture", formatter_class=_Formatter, epilog=_EPILOG
    )
    d.add_argument("--out", metavar="DIR", default="sniper_out/nms", help="folder for the picture")
    d.add_argument("--images", metavar="N", type=_positive_int, default=50, help="images in the batched load")
    d.add_argument("--seed", metavar="S", type=_nonnegative_int, default=0, help="seed of the pictured image")
    d.set_defaults(fn=_cmd_demo, parser=d)
    from .demo_command import add_parser as add_demo_parser  # sniper demo

    add_demo_parser(sub)
    from .engine.command import add_parser as add_train_parser  # sniper train

    add_train_parser(sub)
    from .evaluation.command import add_parser as add_eval_parser  # sniper eval

    add_eval_parser(sub)
    from .inference.command import add_detect_parser, add_infer_parser  # sniper infer, sniper detect

    add_infer_parser(sub)
    add_detect_parser(sub)
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
    import sniper_ext  # noqa: F401  (loads the ops)

    prog = f"sniper {args.cmd}"
    try:
        rc = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, not as an error at interpreter exit
        return rc
    except UsageError as e:
        print(f"{prog}: error: {e} (see '{prog} --help')", file=sys.stderr)
        return e.code
    except CommandError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.code
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


if __name__ == "__main__":  # run the package's own module, whose exception classes the subcommands raise
    from sniper_ext.cli import main as _main

    sys.exit(_main())
