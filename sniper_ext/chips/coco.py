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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v, limit: int = 60) -> str:
    r = json.dumps(v) if isinstance(v, (list, dict, str, int, float, bool, type(None))) else repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _fmt(v: float) -> str:
    return repr(float(v))


def _checked_box(file, where, what_box, x1, y1, x2, y2, size, issues, prefix, xywh):
    """The box (x1, y1, x2, y2) after the box rules, clipped when that repair is allowed; None when
    it is skipped. ``size`` (W, H) or None (no bounds check). ``xywh``: name sides as w/h."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        issues.report(DataError(file, where, f"box is not finite ({what_box})", f"{prefix} with a non-finite box: skipped"))
        return None
    w, h = x2 - x1, y2 - y1
    for side, v, lo, hi, names in (("width", w, x1, x2, "x1 x2"), ("height", h, y1, y2, "y1 y2")):
        if v < 0:
            a, b = names.split()
            detail = f"{side[0]}={_fmt(v)}" if xywh else f"{a}={_fmt(lo)}, {b}={_fmt(hi)}"
            issues.report(DataError(file, where, f"box has negative {side} ({detail})",
                                    f"{prefix} with a negative width or height: skipped"))
            return None
    if w == 0 or h == 0:
        issues.report(DataError(file, where, f"box has zero {'width' if w == 0 else 'height'} ({what_box})",
                                f"{prefix} with a zero-size box: skipped"))
        return None
    if size is not None:
        W, H = size
        if x1 >= W or y1 >= H or x2 <= 0 or y2 <= 0:
            issues.report(DataError(file, where, f"box lies entirely outside its {W}x{H} image ({what_box})",
                                    f"{prefix} with a box entirely outside its image: skipped"))
            return None
        if x1 < 0 or y1 < 0 or x2 > W or y2 > H:
            issues.report(DataError(file, where, f"box extends outside its {W}x{H} image ({what_box})",
                                    f"{prefix} with a box partly outside its image: clipped"))
            return (max(x1, 0.0), max(y1, 0.0), min(x2, float(W)), min(y2, float(H)))
    return (x1, y1, x2, y2)


def _images(file, data) -> dict:
    """{image id: (width, height, file_name)} in file order, every image checked."""
    images = data["images"]
    if not isinstance(images, list):
        raise DataError(file, None, f"not a COCO annotations file: \"images\" is {_json_type(images)}, not a list")
    if not images:
        raise DataError(file, None, "no images (the \"images\" list is empty)")
    out, position = {}, {}
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
        raise DataError(file, None, f"\"categories\" is {_json_type(cats)}, not a list")
    ids = set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise DataError(file, f"categories[{i}]", f"a category must be an object with an integer id, got {_short(c)}")
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
        raise DataError(file, None, f"not a COCO annotations file: the top level is {_json_type(data)}, "
                                    "not an object with \"images\" and \"annotations\"")
    missing = [k for k in ("images", "annotations") if k not in data]
    if missing:
        keys = ", ".join(_short(k, 20) for k in list(data)[:6]) + (", ..." if len(data) > 6 else "")
        raise DataError(file, None, f"not a COCO annotations file: no {' or '.join(json.dumps(k) for k in missing)} "
                                    f"(top-level keys: {keys or 'none'})")
    images = _images(file, data)
    categories = _categories(file, data)
    anns = data["annotations"]
    if not isinstance(anns, list):
        raise DataError(file, None, f"not a COCO annotations file: \"annotations\" is {_json_type(anns)}, not a list")

    per_image = {iid: ([], [], []) for iid in images}  # boxes, labels, crowd
    malformed = "annotation that is malformed: skipped"
    for k, a in enumerate(anns):
        if not isinstance(a, dict):
            issues.report(DataError(file, f"annotations[{k}]", f"is {_json_type(a)}, not an object", malformed))
            continue
        aid = a.get("id")
        label = f"annotation {aid}" if _is_int(aid) else f"annotations[{k}]"
        iid = a.get("image_id")
        if not _is_int(iid):
            issues.report(DataError(file, label, f"image_id must be an integer, got {_short(iid)}", malformed))
            continue
        if iid not in images:
            issues.report(DataError(file, label, f"unknown image id {iid} (not in \"images\")",
                                    "annotation of an unknown image: skipped"))
            continue
        where = f"image {iid}, {label}"
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            issues.report(DataError(file, where, f"bbox must be [x, y, width, height] numbers, got {_short(bbox)}",
                                    malformed))
            continue
        cat = a.get("category_id")
        if not _is_int(cat):
            issues.report(DataError(file, where, f"category_id must be an integer, got {_short(cat)}", malformed))
            continue
        if categories is not None and cat not in categories:
            issues.report(DataError(file, where, f"unknown category id {cat} (not in \"categories\")",
                                    "annotation of an unknown category: skipped"))
            continue
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1):  # True and False compare equal to 1 and 0
            issues.report(DataError(file, where, f"iscrowd must be 0 or 1, got {_short(crowd)}", malformed))
            continue
        x, y, w, h = (float(v) for v in bbox)
        W, H, _ = images[iid]
        box = _checked_box(file, where, f"bbox={_short(bbox)}", x, y, x + w, y + h, (W, H), issues,
                           "annotation", xywh=True)
        if box is None:
            continue
        boxes, labels, crowds = per_image[iid]
        boxes.append(box)
        labels.append(cat)
        crowds.append(bool(crowd))

    records = []
    for iid in sorted(images):
        W, H, file_name = images[iid]
        boxes, labels, crowds = per_image[iid]
        records.append(ImageRecord(image_id=iid, width=W, height=H,
                                   boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
                                   labels=np.array(labels, dtype=np.int64), crowd=np.array(crowds, dtype=bool),
                                   file_name=file_name))
    return records


def load_proposals(path_or_obj, images: list | None = None, *, issues: DataIssues | None = None,
                   name: str = "<proposals>") -> dict:
    """Proposals per image id, xyxy original pixels, from a JSON file or parsed object that is
    either COCO detection results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) or a
    mapping ``{image_id: [[x1, y1, x2, y2(, score)], ...]}``.

    With ``images`` (ImageRecords, e.g. from :func:`load_coco`) every image id must be one of
    theirs and every box must lie in its image, as for annotations; without, only the box itself
    is checked (finite, x1 < x2, y1 < y2). Errors and ``issues`` as in :func:`load_coco`."""
    file, obj = _source(path_or_obj, name)
    issues = issues if issues is not None else DataIssues()
    sizes = None if images is None else {im.image_id: (im.width, im.height) for im in images}
    out: dict = {}
    malformed = "proposal that is malformed: skipped"

    def add(iid, where, x1, y1, x2, y2, what_box, xywh):
        if sizes is not None and iid not in sizes:
            issues.report(DataError(file, where, f"unknown image id {iid} (not in the annotations' images)",
                                    "proposal of an unknown image: skipped"))
            return
        box = _checked_box(file, where, what_box, x1, y1, x2, y2, None if sizes is None else sizes[iid], issues,
                           "proposal", xywh=xywh)
        if box is not None:
            out.setdefault(iid, []).append(box)

    if isinstance(obj, list):
        for k, r in enumerate(obj):
            if not isinstance(r, dict):
                issues.report(DataError(file, f"results[{k}]", f"is {_json_type(r)}, not an object", malformed))
                continue
            iid, bbox = r.get("image_id"), r.get("bbox")
            if not _is_int(iid):
                issues.report(DataError(file, f"results[{k}]", f"image_id must be an integer, got {_short(iid)}",
                                        malformed))
                continue
            where = f"image {iid}, results[{k}]"
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                issues.report(DataError(file, where, f"bbox must be [x, y, width, height] numbers, got {_short(bbox)}",
                                        malformed))
                continue
            x, y, w, h = (float(v) for v in bbox)
            add(iid, where, x, y, x + w, y + h, f"bbox={_short(bbox)}", True)
    elif isinstance(obj, dict):
        for key, rows in obj.items():
            try:
                iid = int(key)
            except (TypeError, ValueError):
                raise DataError(file, None, f"key {_short(key)} is not an image id (an integer)") from None
            if isinstance(rows, np.ndarray):
                rows = rows.tolist()
            if not isinstance(rows, (list, tuple)):
                raise DataError(file, f"image {iid}", f"proposals must be a list of [x1, y1, x2, y2(, score)] rows, "
                                                      f"got {_json_type(rows)}")
            if sizes is not None and iid not in sizes and rows:
                # one error per image, but counted per proposal
                err = DataError(file, f"image {iid}", f"unknown image id {iid} (not in the annotations' images)",
                                "proposal of an unknown image: skipped")
                for _ in rows:
                    issues.report(err)
                continue
            for j, row in enumerate(rows):
                where = f"image {iid}, proposal {j}"
                if not (isinstance(row, (list, tuple)) and len(row) in (4, 5) and all(_is_number(v) for v in row)):
                    issues.report(DataError(file, where, f"a proposal must be [x1, y1, x2, y2(, score)] numbers, "
                                                         f"got {_short(row)}", malformed))
                    continue
                x1, y1, x2, y2 = (float(v) for v in row[:4])
                add(iid, where, x1, y1, x2, y2, f"box={_short(row[:4])}", False)
    else:
        raise DataError(file, None, f"not a proposals file: the top level is {_json_type(obj)}; expected COCO "
                                    "detection results (a list) or {image_id: [[x1, y1, x2, y2], ...]}")
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in out.items()}
