"""Datasets: COCO-format annotations and proposals files into :class:`ImageRecord` s, checked.

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
from typing import Any, TypeGuard

import numpy as np

from ..errors import DataError, DataIssues
from .records import ImageRecord

__all__ = ["read_json", "load_coco", "load_proposals"]


def read_json(path) -> object:
    """The parsed JSON of a file. Bad JSON (or not UTF-8 text) raises DataError with the line and
    column; a missing file, a directory or an unreadable file raises OSError."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno}, column {e.colno}", f"not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, "not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise DataError(path, None, "not valid JSON (nested too deeply)") from None


def _source(obj, name):
    """(file name for messages, parsed object) of a path or an already parsed object."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        return path, read_json(path)
    return name, obj


def _json_type(v) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "null"
    return "a number" if _is_number(v) else type(v).__name__


_NUM = (int, float)  # exact types of JSON numbers (bool is not one)


def _is_int(v: object) -> TypeGuard[int | np.integer]:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _short(v, limit: int = 60) -> str:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    try:
        r = json.dumps(v)
    except (TypeError, ValueError):
        r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _fmt(v: float) -> str:
    return repr(float(v))


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
    what_box = f"{'bbox' if xywh else 'box'}={_short(raw)}"
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


def _images(file, data) -> dict:
    """{image id: (width, height, file_name)} in file order, every image checked."""
    images = data["images"]
    if not isinstance(images, list):
        raise DataError(file, None, f'not a COCO annotations file: "images" is {_json_type(images)}, not a list')
    if not images:
        raise DataError(file, None, 'no images (the "images" list is empty)')
    out: dict = {}
    position: dict = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise DataError(file, f"images[{i}]", f"is {_json_type(im)}, not an object")
        iid = im.get("id")
        if not _is_int(iid):
            raise DataError(file, f"images[{i}]", f"image id must be an integer, got {_short(iid)}")
        where = f"image {iid}"
        if iid in out:
            raise DataError(file, where, f"duplicate image id (images[{position[iid]}] and images[{i}])")
        sides = []
        for key in ("width", "height"):
            v = im.get(key)
            if not (_is_number(v) and math.isfinite(v) and v > 0 and v == int(v)):
                raise DataError(file, where, f"{key} must be a positive integer, got {_short(v)}")
            sides.append(int(v))
        name = im.get("file_name", "")
        if not isinstance(name, str):
            raise DataError(file, where, f"file_name must be a string, got {_short(name)}")
        out[iid] = (sides[0], sides[1], name)
        position[iid] = i
    return out


def _categories(file, data):
    """The set of category ids, or None when the file lists none (then any id is accepted)."""
    cats = data.get("categories")
    if cats is None:
        return None
    if not isinstance(cats, list):
        raise DataError(file, None, f'"categories" is {_json_type(cats)}, not a list')
    ids = set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise DataError(
                file, f"categories[{i}]", f"a category must be an object with an integer id, got {_short(c)}"
            )
        ids.add(c["id"])
    return ids or None


def load_coco(annotations, *, issues: DataIssues | None = None, name: str = "<annotations>") -> list:
    """ImageRecords, sorted by image id, from a COCO-format annotations file (path) or its parsed
    dict (``name`` stands for the file in messages). Boxes become xyxy in image pixels.

    Raises DataError on the first problem (see the module docstring); with
    ``issues=DataIssues(skip=True)`` skippable problems are skipped or repaired and counted in
    ``issues`` instead."""
    file, data = _source(annotations, name)
    issues = issues if issues is not None else DataIssues()
    if not isinstance(data, dict):
        raise DataError(
            file,
            None,
            f"not a COCO annotations file: the top level is {_json_type(data)}, "
            'not an object with "images" and "annotations"',
        )
    missing = [k for k in ("images", "annotations") if k not in data]
    if missing:
        keys = ", ".join(_short(k, 20) for k in list(data)[:6]) + (", ..." if len(data) > 6 else "")
        raise DataError(
            file,
            None,
            f"not a COCO annotations file: no {' or '.join(json.dumps(k) for k in missing)} "
            f"(top-level keys: {keys or 'none'})",
        )
    images = _images(file, data)
    categories = _categories(file, data)
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise DataError(file, None, f'not a COCO annotations file: "annotations" is {_json_type(anns)}, not a list')

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
    for k, a in enumerate(anns):
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
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ranks, minlength=len(ids)))]).tolist()
    records = []
    for r, iid in enumerate(ids):
        W, H, file_name = images[iid]
        s, e = bounds[r], bounds[r + 1]
        records.append(
            ImageRecord(
                image_id=iid,
                width=W,
                height=H,
                boxes=boxes[s:e],
                labels=labels[s:e],
                crowd=crowd[s:e],
                file_name=file_name,
            )
        )
    return records


def _annotation_label(k, a) -> str:
    aid = a.get("id") if isinstance(a, dict) else None
    return f"annotation {aid}" if _is_int(aid) else f"annotations[{k}]"


def _annotation_problem(file, k, a, images, categories):
    """What is wrong with annotation ``k`` (a DataError), or its (image id, bbox, category, crowd)
    when nothing is."""
    malformed = "annotation that is malformed: skipped"
    if not isinstance(a, dict):
        return DataError(file, f"annotations[{k}]", f"is {_json_type(a)}, not an object", malformed)
    label = _annotation_label(k, a)
    iid = a.get("image_id")
    if not _is_int(iid):
        return DataError(file, label, f"image_id must be an integer, got {_short(iid)}", malformed)
    iid = int(iid)
    if iid not in images:
        return DataError(
            file, label, f'unknown image id {iid} (not in "images")', "annotation of an unknown image: skipped"
        )
    where = f"image {iid}, {label}"
    bbox = a.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return DataError(file, where, f"bbox must be [x, y, width, height] numbers, got {_short(bbox)}", malformed)
    cat = a.get("category_id")
    if not _is_int(cat):
        return DataError(file, where, f"category_id must be an integer, got {_short(cat)}", malformed)
    cat = int(cat)
    if categories is not None and cat not in categories:
        return DataError(
            file,
            where,
            f'unknown category id {cat} (not in "categories")',
            "annotation of an unknown category: skipped",
        )
    crowd = a.get("iscrowd", 0)
    if not (_is_number(crowd) and crowd in (0, 1)):
        return DataError(file, where, f"iscrowd must be 0 or 1, got {_short(crowd)}", malformed)
    return iid, [float(v) for v in bbox], cat, crowd


def load_proposals(
    path_or_obj, images: list | None = None, *, issues: DataIssues | None = None, name: str = "<proposals>"
) -> dict:
    """Proposals per image id, xyxy original pixels, from a JSON file or parsed object that is
    either COCO detection results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) or a
    mapping ``{image_id: [[x1, y1, x2, y2(, score)], ...]}``.

    With ``images`` (ImageRecords, e.g. from :func:`load_coco`) every image id must be one of
    theirs and every box must lie in its image, as for annotations; without, only the box itself
    is checked (finite, x1 < x2, y1 < y2). Errors and ``issues`` as in :func:`load_coco`."""
    file, obj = _source(path_or_obj, name)
    issues = issues if issues is not None else DataIssues()
    known = None if images is None else {im.image_id: (im.width, im.height) for im in images}
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
            f"not a proposals file: the top level is {_json_type(obj)}; expected COCO "
            "detection results (a list) or {image_id: [[x1, y1, x2, y2], ...]}",
        )
    for key, rows in obj.items():  # {image id: [[x1, y1, x2, y2(, score)], ...]}
        try:
            iid = int(key)
        except (TypeError, ValueError):
            raise DataError(file, None, f"key {_short(key)} is not an image id (an integer)") from None
        if not isinstance(rows, (list, tuple, np.ndarray)):
            raise DataError(
                file,
                f"image {iid}",
                f"proposals must be a list of [x1, y1, x2, y2(, score)] rows, got {_json_type(rows)}",
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
                if isinstance(row, (list, tuple)) and len(row) in (4, 5) and all(_is_number(v) for v in row):
                    good.append(j)
                    well_formed.append([float(v) for v in row[:4]])
                else:
                    problems.append(
                        (
                            j,
                            DataError(
                                file,
                                f"image {iid}, proposal {j}",
                                f"a proposal must be [x1, y1, x2, y2(, score)] numbers, got {_short(row)}",
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
    if not isinstance(r, dict):
        return DataError(file, f"results[{k}]", f"is {_json_type(r)}, not an object", malformed)
    iid, bbox = r.get("image_id"), r.get("bbox")
    if not _is_int(iid):
        return DataError(file, f"results[{k}]", f"image_id must be an integer, got {_short(iid)}", malformed)
    iid = int(iid)
    if known is not None and iid not in known:
        return DataError(file, f"results[{k}]", f"unknown image id {iid} (not in the annotations' images)", unknown)
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return DataError(
            file,
            f"image {iid}, results[{k}]",
            f"bbox must be [x, y, width, height] numbers, got {_short(bbox)}",
            malformed,
        )
    return iid, [float(v) for v in bbox]
