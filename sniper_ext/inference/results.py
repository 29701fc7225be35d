"""Detections -> COCO detection results (JSON, or JSON lines per image), written atomically.

Detections per image follow the project contract: ``boxes`` [N, 4] xyxy in original pixels,
``scores`` [N], ``labels`` [N] contiguous 1..C, where label ``c`` is category id
``category_ids[c - 1]`` (``category_ids`` = the sorted category ids of the dataset).
"""

from __future__ import annotations

import json

import numpy as np

from .._atomic import atomic_write
from ..errors import DataError

__all__ = ["detections_to_coco", "write_results_json", "write_results_jsonl", "read_results_jsonl"]

OP = "detections_to_coco"


def _array(x, dtype, what: str, i: int) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device, any float dtype (bf16 included)
        x = x.detach().cpu()
        x = x.double() if dtype == np.float64 and x.is_floating_point() else x
        x = x.numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{OP}: `{what}` of image {i} must be numeric, got {type(x).__name__} ({e})") from None


def detections_to_coco(
    image_ids,
    per_image_dets,
    category_ids,
    *,
    box_decimals: int | None = 2,
    score_decimals: int | None = 5,
) -> list:
    """COCO detection results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``
    from ``per_image_dets`` = one ``(boxes [N,4] xyxy, scores [N], labels [N])`` per entry of
    ``image_ids`` (tensors or arrays). Label ``c`` (1..C) maps to ``category_ids[c - 1]``.

    Coordinates are rounded to ``box_decimals`` (0.01 px: far below any IoU that matters, and
    a third of the file size of full floats), scores to ``score_decimals`` (1e-5 apart, so the
    ranking of scores >= 1e-3 keeps at least 2 significant digits); None keeps the float64
    value. Raises ValueError naming the image for mismatched lengths, labels outside 1..C or
    non-finite values."""
    image_ids = [int(i) for i in image_ids]
    if len(image_ids) != len(per_image_dets):
        raise ValueError(
            f"{OP}: `per_image_dets` must have one entry per image id ({len(image_ids)}), got {len(per_image_dets)}"
        )
    cats = np.asarray([int(c) for c in category_ids], dtype=np.int64)
    out: list = []
    for i, (iid, dets) in enumerate(zip(image_ids, per_image_dets)):
        if len(dets) != 3:
            raise ValueError(f"{OP}: detections of image {i} must be (boxes, scores, labels), got {len(dets)} items")
        boxes = _array(dets[0], np.float64, "boxes", i)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        elif boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{OP}: `boxes` of image {i} must have shape [N, 4] (xyxy), got {tuple(boxes.shape)}")
        scores = _array(dets[1], np.float64, "scores", i).reshape(-1)
        labels = _array(dets[2], np.int64, "labels", i).reshape(-1)
        n = len(boxes)
        if len(scores) != n or len(labels) != n:
            raise ValueError(
                f"{OP}: image {i} (id {iid}) has {n} boxes, {len(scores)} scores and {len(labels)} labels; "
                "they must match"
            )
        if n == 0:
            continue
        if labels.min() < 1 or labels.max() > len(cats):
            bad = int(labels[(labels < 1) | (labels > len(cats))][0])
            raise ValueError(
                f"{OP}: image {i} (id {iid}): label {bad} is outside 1..{len(cats)} (the number of categories)"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"{OP}: image {i} (id {iid}) has non-finite boxes or scores")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        if box_decimals is not None:
            xywh = np.round(xywh, box_decimals) + 0.0  # + 0.0: no "-0.0" in the file
        if score_decimals is not None:
            scores = np.round(scores, score_decimals)
        cid = cats[labels - 1].tolist()
        for b, s, c in zip(xywh.tolist(), scores.tolist(), cid):
            out.append({"image_id": iid, "category_id": c, "bbox": b, "score": s})
    return out


def _dumps(obj, **kw) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, **kw)


def write_results_json(path, results) -> str:
    """Writes COCO detection results (a list of dicts) as one JSON list, atomically: one entry
    per line, so that the file diffs and greps well. Returns ``path``."""
    results = list(results)

    def write(f):
        f.write(b"[")
        for k, r in enumerate(results):
            f.write(((",\n" if k else "\n") + _dumps(r)).encode())
        f.write(b"\n]\n" if results else b"]\n")

    return atomic_write(path, write, prefix=".results-", suffix=".json.tmp")


def write_results_jsonl(path, results, *, image_ids=None, extra=None) -> str:
    """Writes COCO detection results as JSON lines, one line per image:
    ``{"image_id": 7, "detections": [{"category_id", "bbox", "score"}, ...]}`` in the order of
    ``image_ids`` (default: the order in which images first appear in ``results``); an image of
    ``image_ids`` without detections gets an empty list, so every image has its line.
    ``extra`` ({image id: dict}) adds fields to an image's line (a file name, a size).
    Atomic; returns ``path``."""
    by_image: dict = {}
    for r in results:
        iid = int(r["image_id"])
        by_image.setdefault(iid, []).append({k: v for k, v in r.items() if k != "image_id"})
    order = list(by_image) if image_ids is None else [int(i) for i in image_ids]
    missing = set(by_image) - set(order)
    if missing:
        raise ValueError(f"write_results_jsonl: results name image ids not in `image_ids`: {sorted(missing)[:5]}")
    extra = extra or {}

    def write(f):
        for iid in order:
            line = {"image_id": iid, **extra.get(iid, {}), "detections": by_image.get(iid, [])}
            f.write((_dumps(line) + "\n").encode())

    return atomic_write(path, write, prefix=".results-", suffix=".jsonl.tmp")


def read_results_jsonl(path) -> list:
    """The flat COCO results list of a file written by :func:`write_results_jsonl`."""
    out: list = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                iid = rec["image_id"]
                dets = rec["detections"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(path, f"line {n}", f"not a results line ({e})") from None
            out.extend({"image_id": iid, **d} for d in dets)
    return out
