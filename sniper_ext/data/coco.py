"""COCO-format files, checked: annotations into an :class:`ImageTable`, proposals, and the one
row checker that every reader of a COCO list uses (the annotations and proposals loaders here,
the ground-truth and results checks of :mod:`sniper_ext.evaluation`).

Every problem raises :class:`~sniper_ext.errors.DataError` naming the file, the image and the
annotation (``ann.json: image 17, annotation 4: box has negative width (w=-3.0)``) before any
record is returned. Problems that real datasets have — a box partly outside its image (clipped),
a zero-size, inverted, non-finite or entirely-outside box, an annotation of an unknown image or
category, a malformed annotation (skipped) — are skipped or repaired instead when the caller
passes ``issues=DataIssues(skip=True)``, which counts them by kind. A file that is not JSON, not
COCO, has no images, or an image without a valid id and size always raises. Missing or
unreadable files raise OSError (with ``filename`` set).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, TypeGuard

import numpy as np

from ..chips.records import ImageTable
from ..errors import DataError, DataIssues

__all__ = [
    "read_json",
    "read_annotations_json",
    "load_coco",
    "load_proposals",
    "categories_of",
    "category_list",
    "check_proposal_rows",
    "MAX_IMAGE_SIDE",
    "RowChecker",
    "json_type",
    "is_int",
    "is_number",
    "short",
]


def read_json(path) -> object:
    """The parsed JSON of a file. Bad JSON (or not UTF-8 text) raises DataError with the line and
    column; a missing file, a directory or an unreadable file raises OSError."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _parse(path, f.read())


# A "segmentation" value: a polygon list (numbers, brackets, commas, blanks) or an RLE object
# (no nested braces). Matched on the raw bytes, so the parser never builds it.
_SEGMENTATION = re.compile(rb'"segmentation"\s*:\s*(?:\[[\[\]0-9eE+\-.,\s]*\]|\{[^{}]*\})')


def read_annotations_json(path) -> object:
    """:func:`read_json` of a COCO annotations file without the segmentations, which training and
    evaluation of boxes never use and which are most of COCO's bytes: each ``"segmentation"``
    value becomes 0 before parsing (about 5x less to parse and hold for COCO's train file).
    Errors as :func:`read_json`, with the line and column of the original file."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(_SEGMENTATION.sub(b'"segmentation":0', raw))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return _parse(path, raw)  # the error, located in the original bytes


def _parse(path: str, data: bytes) -> object:
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno}, column {e.colno}", f"not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, "not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise DataError(path, None, "not valid JSON (nested too deeply)") from None


def _source(obj, name, reader=None):
    """(file name for messages, parsed object) of a path or an already parsed object."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        return path, (reader or read_json)(path)
    return name, obj


def json_type(v) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "null"
    return "a number" if is_number(v) else type(v).__name__


_NUM = (int, float)  # exact types of JSON numbers (bool is not one)


def is_int(v: object) -> TypeGuard[int | np.integer]:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_number(v: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def short(v, limit: int = 60) -> str:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    try:
        r = json.dumps(v)
    except (TypeError, ValueError):
        r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _fmt(v: float) -> str:
    return repr(float(v))


class RowChecker:
    """The checks of one entry of a COCO list (an annotation, a detection result, a proposal),
    written once for every reader of such lists. Each method checks one field of ``entry`` and
    returns its value, or raises :class:`DataError` naming ``file`` and ``where``.

    ``images`` / ``categories``: the known ids (any container; None accepts any id), named in
    messages as ``images_in`` / ``categories_in``. ``malformed``, ``unknown_image`` and
    ``unknown_category`` are the kinds (see :class:`~sniper_ext.errors.DataIssues`) of the errors
    of each sort: None for errors that cannot be skipped."""

    def __init__(
        self,
        file,
        *,
        images=None,
        categories=None,
        images_in: str = '"images"',
        categories_in: str = '"categories"',
        malformed: str | None = None,
        unknown_image: str | None = None,
        unknown_category: str | None = None,
    ):
        self.file = file
        self.images, self.categories = images, categories
        self.images_in, self.categories_in = images_in, categories_in
        self.malformed, self.unknown_image, self.unknown_category = malformed, unknown_image, unknown_category

    def error(self, where, what: str, kind: str | None = None) -> DataError:
        return DataError(self.file, where, what, kind)

    def entry(self, where, entry) -> dict:
        """``entry`` itself, which must be a JSON object."""
        if not isinstance(entry, dict):
            raise self.error(where, f"is {json_type(entry)}, not an object", self.malformed)
        return entry

    def integer(self, where, entry: dict, key: str) -> int:
        v = entry.get(key)
        if not is_int(v):
            raise self.error(where, f"{key} must be an integer, got {short(v)}", self.malformed)
        return int(v)

    def image_id(self, where, entry: dict) -> int:
        """``entry["image_id"]``: an integer, one of ``images``."""
        iid = self.integer(where, entry, "image_id")
        if self.images is not None and iid not in self.images:
            raise self.error(where, f"unknown image id {iid} (not in {self.images_in})", self.unknown_image)
        return iid

    def category_id(self, where, entry: dict) -> int:
        """``entry["category_id"]``: an integer, one of ``categories``."""
        cid = self.integer(where, entry, "category_id")
        if self.categories is not None and cid not in self.categories:
            raise self.error(where, f"unknown category id {cid} (not in {self.categories_in})", self.unknown_category)
        return cid

    def bbox(self, where, entry: dict, *, sizes: bool = False) -> list:
        """``entry["bbox"]``: [x, y, width, height] numbers, as floats. With ``sizes``, also finite
        with width, height >= 0 (the rule of evaluation, which keeps zero-size boxes)."""
        raw = entry.get("bbox")
        if not (isinstance(raw, (list, tuple)) and len(raw) == 4 and all(is_number(v) for v in raw)):
            raise self.error(where, f"bbox must be [x, y, width, height] numbers, got {short(raw)}", self.malformed)
        box = [float(v) for v in raw]
        if sizes:
            if not all(math.isfinite(v) for v in box):
                raise self.error(where, f"bbox has a non-finite value: {short(raw)}", self.malformed)
            if box[2] < 0 or box[3] < 0:
                side = "width" if box[2] < 0 else "height"
                raise self.error(where, f"bbox has negative {side}: {short(raw)}", self.malformed)
        return box

    def score(self, where, entry: dict) -> float:
        v = entry.get("score")
        if not (is_number(v) and math.isfinite(v)):
            raise self.error(where, f"score must be a finite number, got {short(v)}", self.malformed)
        return float(v)

    def crowd(self, where, entry: dict) -> int:
        """``entry["iscrowd"]`` (default 0): 0 or 1."""
        v = entry.get("iscrowd", 0)
        if not ((is_number(v) or isinstance(v, bool)) and v in (0, 1)):
            raise self.error(where, f"iscrowd must be 0 or 1, got {short(v)}", self.malformed)
        return int(v)

    def area(self, where, entry: dict, default: float) -> float:
        """``entry["area"]`` (default ``default``): a finite number >= 0."""
        v = entry.get("area", default)
        if not (is_number(v) and math.isfinite(v) and v >= 0):
            raise self.error(where, f"area must be a number >= 0, got {short(v)}", self.malformed)
        return float(v)


def _sizes_by_id(images) -> dict:
    """{image id: (W, H)} of an ImageTable or of ImageRecords."""
    if isinstance(images, ImageTable):
        return dict(zip(images.image_ids.tolist(), map(tuple, images.sizes.tolist())))
    return {im.image_id: (im.width, im.height) for im in images}


def category_list(file, data) -> list:
    """``data["categories"]`` checked: objects with unique integer ids; [] when the file has none."""
    cats = data.get("categories")
    if cats is None:
        return []
    if not isinstance(cats, list):
        raise DataError(file, None, f'"categories" is {json_type(cats)}, not a list')
    seen: dict = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not is_int(c.get("id")):
            raise DataError(
                file, f"categories[{i}]", f"a category must be an object with an integer id, got {short(c)}"
            )
        cid = int(c["id"])
        if cid in seen:
            raise DataError(file, f"categories[{i}]", f"duplicate category id {cid} (categories[{seen[cid]}])")
        seen[cid] = i
    return cats


def categories_of(data, records=()) -> list:
    """[{"id", "name"}] sorted by id: the file's categories (checked by :func:`load_coco`), or,
    when it lists none, the label ids of ``records`` named by their ids."""
    cats = data.get("categories") if isinstance(data, dict) else None
    if cats:
        pairs = sorted((int(c["id"]), c.get("name")) for c in cats)
        return [{"id": i, "name": n if isinstance(n, str) and n else str(i)} for i, n in pairs]
    labels = records.labels if isinstance(records, ImageTable) else [v for r in records for v in r.labels]
    ids = sorted({int(v) for v in np.unique(np.asarray(labels, dtype=np.int64))})
    return [{"id": i, "name": str(i)} for i in ids]


def _screen(boxes: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    """Vectorised pre-check: True for the rows of ``boxes`` ([M, 4] xyxy) that break a box rule
    (not finite, x2 <= x1 or y2 <= y1, outside [0, W] x [0, H] of ``sizes`` [M, 2]); those go
    through :func:`_checked_box`, which says what is wrong. The rest are fine as they are."""
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if sizes is not None:
        bad |= (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > sizes[:, 0]) | (boxes[:, 3] > sizes[:, 1])
    return bad


def _checked_box(file, where, raw, x1, y1, x2, y2, size, issues, prefix, xywh):
    """The box (x1, y1, x2, y2) after the box rules, clipped when that repair is allowed; None when
    it is skipped. ``raw``: the box as the file has it (for messages); ``size`` (W, H) or None (no
    bounds check). ``xywh``: the file gives [x, y, w, h] (sides named w/h), else [x1, y1, x2, y2]."""
    x1, y1, x2, y2 = float(x1), float(y1), float(x2), float(y2)
    what_box = f"{'bbox' if xywh else 'box'}={short(raw)}"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        issues.report(
            DataError(file, where, f"box is not finite ({what_box})", f"{prefix} with a non-finite box: skipped")
        )
        return None
    w, h = x2 - x1, y2 - y1
    for side, v, lo, hi, names in (("width", w, x1, x2, "x1 x2"), ("height", h, y1, y2, "y1 y2")):
        if v < 0:
            a, b = names.split()
            detail = f"{side[0]}={_fmt(v)}" if xywh else f"{a}={_fmt(lo)}, {b}={_fmt(hi)}"
            issues.report(
                DataError(
                    file,
                    where,
                    f"box has negative {side} ({detail})",
                    f"{prefix} with a negative width or height: skipped",
                )
            )
            return None
    if w == 0 or h == 0:
        issues.report(
            DataError(
                file,
                where,
                f"box has zero {'width' if w == 0 else 'height'} ({what_box})",
                f"{prefix} with a zero-size box: skipped",
            )
        )
        return None
    if size is not None:
        W, H = int(size[0]), int(size[1])
        if x1 >= W or y1 >= H or x2 <= 0 or y2 <= 0:
            issues.report(
                DataError(
                    file,
                    where,
                    f"box lies entirely outside its {W}x{H} image ({what_box})",
                    f"{prefix} with a box entirely outside its image: skipped",
                )
            )
            return None
        if x1 < 0 or y1 < 0 or x2 > W or y2 > H:
            issues.report(
                DataError(
                    file,
                    where,
                    f"box extends outside its {W}x{H} image ({what_box})",
                    f"{prefix} with a box partly outside its image: clipped",
                )
            )
            return (max(x1, 0.0), max(y1, 0.0), min(x2, float(W)), min(y2, float(H)))
    return (x1, y1, x2, y2)


def _settle(file, issues, problems, boxes, sizes, positions, where_of, raw_of, prefix, xywh) -> np.ndarray:
    """Screens ``boxes`` (row r sits at file position ``positions[r]``; None: r itself) and reports,
    in file order, the entries' structural ``problems`` [(file position, DataError)] and the box
    problems of the flagged rows. Returns the rows to keep; repaired boxes are rewritten in place."""
    keep = np.ones(len(boxes), dtype=bool)
    rows = np.flatnonzero(_screen(boxes, sizes)).tolist()
    flagged_at = [(row if positions is None else positions[row], row) for row in rows]
    events = sorted([(k, -1, e) for k, e in problems] + [(k, row, None) for k, row in flagged_at], key=lambda e: e[0])
    for k, row, error in events:
        if error is not None:
            issues.report(error)
            continue
        box = _checked_box(  # type: ignore[call-arg]  # mypy miscounts the *boxes[row] unpacking
            file,
            where_of(k, row),
            raw_of(k, row),
            *boxes[row],
            None if sizes is None else sizes[row],
            issues,
            prefix,
            xywh,
        )
        if box is None:
            keep[row] = False
        else:
            boxes[row] = box
    return keep


def check_proposal_rows(file, image_ids, offsets, boxes, images, issues: DataIssues):
    """The box rules of :func:`load_proposals` on proposals held as arrays (the binary format):
    image ``image_ids[i]`` owns rows ``offsets[i]:offsets[i + 1]`` of ``boxes`` [P, 4] xyxy.
    With ``images`` (an ImageTable or ImageRecords), unknown image ids and boxes outside their
    image are problems too. Vectorised over chunks of rows (memory beyond ``boxes`` stays
    bounded: about one byte per proposal); only flagged rows are looked at one by one. Repairs
    (clipping) are written into ``boxes``. Returns None when every row is kept, else the keep
    mask [P]."""
    known = None if images is None else _sizes_by_id(images)
    counts = np.diff(offsets)
    keep = np.ones(len(boxes), dtype=bool)
    image_wh = None
    if known is not None:
        image_wh = np.zeros((len(image_ids), 2), np.float64)
        for k, iid in enumerate(image_ids.tolist()):
            if iid in known:
                image_wh[k] = known[iid]
            elif counts[k]:
                error = DataError(
                    file, f"image {iid}", f"unknown image id {iid} (not in the annotations' images)",
                    "proposal of an unknown image: skipped",
                )  # fmt: skip
                for _ in range(int(counts[k])):  # counted per proposal
                    issues.report(error)
                keep[offsets[k] : offsets[k + 1]] = False
    chunk = 1 << 18
    for start in range(0, len(boxes), chunk):
        end = min(start + chunk, len(boxes))
        owner = np.searchsorted(offsets, np.arange(start, end), side="right") - 1
        sizes = None if image_wh is None else image_wh[owner]
        flagged = np.flatnonzero(_screen(boxes[start:end], sizes) & keep[start:end])
        for j in flagged.tolist():
            row, k = start + j, int(owner[j])
            raw = [float(v) for v in boxes[row]]
            box = _checked_box(  # type: ignore[call-arg]  # mypy miscounts the *raw unpacking
                file,
                f"image {int(image_ids[k])}, proposal {row - int(offsets[k])}",
                raw,
                *raw,
                None if sizes is None else sizes[j],
                issues,
                "proposal",
                False,
            )
            if box is None:
                keep[row] = False
            else:
                boxes[row] = box
    return None if keep.all() else keep


#: the largest image side accepted by default (pixels): larger declared sizes are data errors
MAX_IMAGE_SIDE = 20000


def _leaves_root(name: str) -> bool:
    """A file name that is absolute or climbs out of its folder (``..``)."""
    return name.startswith(("/", "\\")) or ".." in re.split(r"[\\/]", name) or re.match(r"^[A-Za-z]:", name) is not None


def _images(file, data, max_side: int = MAX_IMAGE_SIDE) -> dict:
    """{image id: (width, height, file_name)} in file order, every image checked."""
    images = data["images"]
    if not isinstance(images, list):
        raise DataError(file, None, f'not a COCO annotations file: "images" is {json_type(images)}, not a list')
    if not images:
        raise DataError(file, None, 'no images (the "images" list is empty)')
    out: dict = {}
    position: dict = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise DataError(file, f"images[{i}]", f"is {json_type(im)}, not an object")
        iid = im.get("id")
        if not is_int(iid):
            raise DataError(file, f"images[{i}]", f"image id must be an integer, got {short(iid)}")
        where = f"image {iid}"
        if iid in out:
            raise DataError(file, where, f"duplicate image id (images[{position[iid]}] and images[{i}])")
        sides = []
        for key in ("width", "height"):
            v = im.get(key)
            if not (is_number(v) and math.isfinite(v) and v > 0 and v == int(v)):
                raise DataError(file, where, f"{key} must be a positive integer, got {short(v)}")
            sides.append(int(v))
        if max(sides) > max_side:
            raise DataError(
                file,
                where,
                f"{sides[0]}x{sides[1]} exceeds the largest image side accepted, {max_side} px (data.max_image_side)",
            )
        name = im.get("file_name", "")
        if not isinstance(name, str):
            raise DataError(file, where, f"file_name must be a string, got {short(name)}")
        if _leaves_root(name):
            raise DataError(file, where, f"file_name {short(name)} leaves the image folder (no absolute paths or '..')")
        out[iid] = (sides[0], sides[1], name)
        position[iid] = i
    return out


def _categories(file, data):
    """The set of category ids, or None when the file lists none (then any id is accepted)."""
    return {int(c["id"]) for c in category_list(file, data)} or None


def load_coco(
    annotations, *, issues: DataIssues | None = None, name: str = "<annotations>", max_image_side: int = MAX_IMAGE_SIDE
) -> ImageTable:
    """The images, sorted by id, of a COCO-format annotations file (path) or its parsed dict
    (``name`` stands for the file in messages), as an :class:`~sniper_ext.chips.ImageTable`
    (rows read as ImageRecords). Boxes become xyxy in image pixels. A path is read with
    :func:`read_annotations_json` (segmentations are not kept).

    Raises DataError on the first problem (see the module docstring); with
    ``issues=DataIssues(skip=True)`` skippable problems are skipped or repaired and counted in
    ``issues`` instead."""
    file, data = _source(annotations, name, read_annotations_json)
    issues = issues if issues is not None else DataIssues()
    if not isinstance(data, dict):
        raise DataError(
            file,
            None,
            f"not a COCO annotations file: the top level is {json_type(data)}, "
            'not an object with "images" and "annotations"',
        )
    missing = [k for k in ("images", "annotations") if k not in data]
    if missing:
        keys = ", ".join(short(k, 20) for k in list(data)[:6]) + (", ..." if len(data) > 6 else "")
        raise DataError(
            file,
            None,
            f"not a COCO annotations file: no {' or '.join(json.dumps(k) for k in missing)} "
            f"(top-level keys: {keys or 'none'})",
        )
    images = _images(file, data, max_image_side)
    categories = _categories(file, data)
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise DataError(file, None, f'not a COCO annotations file: "annotations" is {json_type(anns)}, not a list')

    ids = sorted(images)
    rank = {iid: r for r, iid in enumerate(ids)}
    image_wh = np.array([images[iid][:2] for iid in ids], dtype=np.float64).reshape(-1, 2)
    # Fast pass: well-formed annotations of known images and categories go to flat lists; the
    # others get their problem described by _annotation_problem.
    pos: list = []
    ranks: Any = []  # a list while reading, then an array
    bboxes: list = []
    cats: list = []
    crowds: list = []
    problems: list = []
    repeated = _repeated_ids(file, anns)
    for k, a in enumerate(anns):
        if k in repeated:
            problems.append((k, repeated[k]))
            continue
        try:
            iid, b, cat, crowd = a["image_id"], a["bbox"], a["category_id"], a.get("iscrowd", 0)
            ok = (
                type(iid) is int
                and iid in rank
                and type(b) is list
                and len(b) == 4
                and type(b[0]) in _NUM
                and type(b[1]) in _NUM
                and type(b[2]) in _NUM
                and type(b[3]) in _NUM
                and type(cat) is int
                and (categories is None or cat in categories)
                and (crowd == 0 or crowd == 1)
            )
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            entry = _annotation_problem(file, k, a, images, categories)
            if isinstance(entry, DataError):
                problems.append((k, entry))
                continue
            iid, b, cat, crowd = entry  # well-formed after all (e.g. numpy numbers in a dict)
        pos.append(k)
        ranks.append(rank[iid])
        bboxes.append(b)
        cats.append(cat)
        crowds.append(bool(crowd))
    boxes = np.array(bboxes, dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    ranks = np.array(ranks, dtype=np.int64)
    sizes = image_wh[ranks]
    keep = _settle(
        file,
        issues,
        problems,
        boxes,
        sizes,
        pos,
        lambda k, row: f"image {ids[ranks[row]]}, {_annotation_label(k, anns[k])}",
        lambda k, row: anns[k]["bbox"],
        "annotation",
        True,
    )

    # Group by image (stable: file order within an image), images sorted by id.
    boxes, ranks = boxes[keep], ranks[keep]
    labels, crowd = np.array(cats, dtype=np.int64)[keep], np.array(crowds, dtype=bool)[keep]
    order = np.argsort(ranks, kind="stable")
    boxes, labels, crowd = boxes[order], labels[order], crowd[order]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ranks, minlength=len(ids)), dtype=np.int64)])
    return ImageTable(
        image_ids=np.array(ids, dtype=np.int64),
        sizes=image_wh.astype(np.int64),
        file_names=np.array([images[iid][2] for iid in ids], dtype=str),
        box_offsets=bounds,
        boxes=boxes,
        labels=labels,
        crowd=crowd,
    )


def _repeated_ids(file, anns: list) -> dict:
    """{position: DataError} of the annotations whose integer ``id`` an earlier one has."""
    ids = [a.get("id") if isinstance(a, dict) else None for a in anns]
    ints = np.array([v if type(v) is int else -(2**62) for v in ids], dtype=np.int64) if ids else np.zeros(0, np.int64)
    if len(ints) == len(np.unique(ints[ints != -(2**62)])) + int((ints == -(2**62)).sum()):
        return {}
    first: dict = {}
    out = {}
    for k, v in enumerate(ids):
        if type(v) is not int:
            continue
        if v in first:
            out[k] = DataError(
                file,
                f"annotation {v}",
                f"duplicate annotation id (annotations[{first[v]}] and annotations[{k}])",
                "annotation with a duplicate id: skipped",
            )
        else:
            first[v] = k
    return out


def _annotation_label(k, a) -> str:
    aid = a.get("id") if isinstance(a, dict) else None
    return f"annotation {aid}" if is_int(aid) else f"annotations[{k}]"


def _annotation_problem(file, k, a, images, categories):
    """What is wrong with annotation ``k`` (a DataError), or its (image id, bbox, category, crowd)
    when nothing is."""
    rows = RowChecker(
        file,
        images=images,
        categories=categories,
        malformed="annotation that is malformed: skipped",
        unknown_image="annotation of an unknown image: skipped",
        unknown_category="annotation of an unknown category: skipped",
    )
    try:
        rows.entry(f"annotations[{k}]", a)
        label = _annotation_label(k, a)
        iid = rows.image_id(label, a)
        where = f"image {iid}, {label}"
        bbox = rows.bbox(where, a)
        cat = rows.category_id(where, a)
        crowd = rows.crowd(where, a)
    except DataError as e:
        return e
    return iid, bbox, cat, crowd


def load_proposals(path_or_obj, images=None, *, issues: DataIssues | None = None, name: str = "<proposals>") -> dict:
    """Proposals per image id, xyxy original pixels, from a JSON file or parsed object that is
    either COCO detection results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) or a
    mapping ``{image_id: [[x1, y1, x2, y2(, score)], ...]}``.

    With ``images`` (ImageRecords, e.g. from :func:`load_coco`) every image id must be one of
    theirs and every box must lie in its image, as for annotations; without, only the box itself
    is checked (finite, x1 < x2, y1 < y2). Errors and ``issues`` as in :func:`load_coco`."""
    file, obj = _source(path_or_obj, name)
    issues = issues if issues is not None else DataIssues()
    known = None if images is None else _sizes_by_id(images)
    unknown = "proposal of an unknown image: skipped"
    malformed = "proposal that is malformed: skipped"
    out: dict = {}

    def sizes_of(ids):
        return None if known is None else np.array([known[i] for i in ids], dtype=np.float64).reshape(-1, 2)

    if isinstance(obj, list):  # COCO detection results, [x, y, w, h]
        pos: list = []
        ids: Any = []  # a list while reading, then an array
        bboxes: list = []
        problems: list = []
        for k, r in enumerate(obj):
            try:
                iid, b = r["image_id"], r["bbox"]
                ok = (
                    type(iid) is int
                    and (known is None or iid in known)
                    and type(b) is list
                    and len(b) == 4
                    and type(b[0]) in _NUM
                    and type(b[1]) in _NUM
                    and type(b[2]) in _NUM
                    and type(b[3]) in _NUM
                )
            except (TypeError, KeyError, IndexError):
                ok = False
            if not ok:
                entry = _result_problem(file, k, r, known, malformed, unknown)
                if isinstance(entry, DataError):
                    problems.append((k, entry))
                    continue
                iid, b = entry
            pos.append(k)
            ids.append(iid)
            bboxes.append(b)
        boxes = np.array(bboxes, dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        sizes = sizes_of(ids)
        keep = _settle(
            file,
            issues,
            problems,
            boxes,
            sizes,
            pos,
            lambda k, row: f"image {ids[row]}, results[{k}]",
            lambda k, row: obj[k]["bbox"],
            "proposal",
            True,
        )
        ids = np.array(ids, dtype=np.int64)[keep]
        boxes = boxes[keep]
        order = np.argsort(ids, kind="stable")
        ids, boxes = ids[order], boxes[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
        for s, e in zip(starts.tolist(), [*starts[1:].tolist(), len(ids)]):
            out[int(ids[s])] = boxes[s:e]
        return out
    if not isinstance(obj, dict):
        raise DataError(
            file,
            None,
            f"not a proposals file: the top level is {json_type(obj)}; expected COCO "
            "detection results (a list) or {image_id: [[x1, y1, x2, y2], ...]}",
        )
    for key, rows in obj.items():  # {image id: [[x1, y1, x2, y2(, score)], ...]}
        try:
            iid = int(key)
        except (TypeError, ValueError):
            raise DataError(file, None, f"key {short(key)} is not an image id (an integer)") from None
        if not isinstance(rows, (list, tuple, np.ndarray)):
            raise DataError(
                file,
                f"image {iid}",
                f"proposals must be a list of [x1, y1, x2, y2(, score)] rows, got {json_type(rows)}",
            )
        if known is not None and iid not in known and len(rows):
            error = DataError(file, f"image {iid}", f"unknown image id {iid} (not in the annotations' images)", unknown)
            for _ in range(len(rows)):  # counted per proposal
                issues.report(error)
            continue
        try:
            arr = np.asarray(rows)
        except ValueError:  # ragged
            arr = None
        problems = []
        good: list | None = None  # the rows that are well-formed, when some are not
        if arr is not None and arr.dtype.kind in "iuf" and arr.ndim == 2 and arr.shape[1] in (4, 5):
            boxes = arr[:, :4].astype(np.float64)
        elif len(rows) == 0:
            boxes = np.zeros((0, 4))
        else:  # something is malformed: row by row
            good, well_formed = [], []
            for j, row in enumerate(rows):
                if isinstance(row, (list, tuple)) and len(row) in (4, 5) and all(is_number(v) for v in row):
                    good.append(j)
                    well_formed.append([float(v) for v in row[:4]])
                else:
                    problems.append(
                        (
                            j,
                            DataError(
                                file,
                                f"image {iid}, proposal {j}",
                                f"a proposal must be [x1, y1, x2, y2(, score)] numbers, got {short(row)}",
                                malformed,
                            ),
                        )
                    )
            boxes = np.array(well_formed, dtype=np.float64).reshape(-1, 4)
        sizes = None if known is None else np.tile(np.array(known[iid], dtype=np.float64), (len(boxes), 1))
        keep = _settle(
            file,
            issues,
            problems,
            boxes,
            sizes,
            good,
            lambda k, row, iid=iid: f"image {iid}, proposal {k}",
            lambda k, row, rows=rows: rows[k][:4],
            "proposal",
            False,
        )
        out[iid] = boxes[keep]
    return out


def _result_problem(file, k, r, known, malformed, unknown):
    """What is wrong with detection result ``k`` (a DataError), or its (image id, bbox)."""
    rows = RowChecker(
        file, images=known, images_in="the annotations' images", malformed=malformed, unknown_image=unknown
    )
    try:
        rows.entry(f"results[{k}]", r)
        iid = rows.image_id(f"results[{k}]", r)
        bbox = rows.bbox(f"image {iid}, results[{k}]", r)
    except DataError as e:
        return e
    return iid, bbox
