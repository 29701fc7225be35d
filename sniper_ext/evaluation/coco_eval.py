"""COCO box evaluation: pycocotools' ``COCOeval`` (or faster-coco-eval's) on checked inputs,
silenced, as a dict of numbers.

    metrics = evaluate_coco("instances_val2017.json", "results.json", per_class=True)
    print(format_table(metrics))      # the standard 12-line table
    write_metrics_json("metrics.json", metrics)

The numbers are pycocotools' own (``COCOeval.stats``, same order and meaning); this module only
checks the inputs first, so that a bad file gives one :class:`~sniper_ext.errors.DataError` naming
the file and the entry (``R.json: results[3]: unknown image id 99``) instead of an assertion deep in
pycocotools, and handles the cases pycocotools does not:

* an empty results list is valid and scores 0 (``COCO.loadRes`` fails on it);
* the caller's results are not modified (``loadRes`` adds keys to every entry);
* ground-truth annotations without ``area``/``iscrowd``/``id`` get ``w*h``/0/a fresh id, as
  many hand-made COCO files lack them (on real COCO files nothing changes);
* pycocotools' progress prints are captured, not shown.

Undefined numbers: pycocotools reports -1 for an average over nothing (``APs`` when no GT object
is small, a category without GT). Here they are ``None`` (``null`` in JSON), never -1, so that
they cannot be averaged by mistake; :func:`format_table` prints them as pycocotools does
(``-1.000``), keeping the table identical to the familiar one.

Backends (``backend=``): ``"pycocotools"``, the reference; ``"faster"``, the optional
`faster-coco-eval <https://pypi.org/project/faster-coco-eval/>`_ (``pip install
faster-coco-eval``), whose per-image matching and accumulation are C++: several times faster and
far smaller at COCO size; ``"auto"`` (the default), faster-coco-eval when it can be imported, else
pycocotools. The returned ``"backend"`` says which one ran. Both see the same checked inputs and
give the same numbers: every recall and every AR bit for bit, every precision entry bit for bit but
one kind. pycocotools computes precision as ``tp / (tp + fp + eps)``, so a ranking whose first
detection is a true positive gets ``1 / (1 + 2**-52) = 1 - 2**-52`` there, where faster-coco-eval
has exactly 1; an AP (a mean of such entries) may therefore differ by about ``2**-52`` at most (observed:
up to 0.25 of that), which the tests allow and nothing else
(``python_tests/test_evaluation.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

from .._atomic import atomic_write
from ..data.coco import RowChecker, json_type, read_json
from ..errors import DataError

__all__ = [
    "check_ground_truth",
    "BACKENDS",
    "METRIC_KEYS",
    "evaluate_coco",
    "resolve_backend",
    "check_results",
    "format_table",
    "format_per_class",
    "write_metrics_json",
]

#: The 12 numbers of ``COCOeval.summarize()`` for boxes, in its order.
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

#: The values of ``evaluate_coco(backend=...)`` and ``sniper eval --backend``.
BACKENDS = ("auto", "faster", "pycocotools")

# (title, type, IoU, area, maxDets) of each line of pycocotools' table.
_LINES = (
    ("Average Precision", "(AP)", "0.50:0.95", "all", 100),
    ("Average Precision", "(AP)", "0.50", "all", 100),
    ("Average Precision", "(AP)", "0.75", "all", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "small", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "medium", 100),
    ("Average Precision", "(AP)", "0.50:0.95", "large", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 1),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 10),
    ("Average Recall", "(AR)", "0.50:0.95", "all", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "small", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "medium", 100),
    ("Average Recall", "(AR)", "0.50:0.95", "large", 100),
)


# ---------------------------------------------------------------------------------------------
# Input checks


def _source(obj, default_name: str):
    """(name for messages, parsed JSON) of a path or an already parsed object."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        return path, read_json(path)  # DataError with line and column for bad JSON
    return default_name, obj


def _load_ground_truth(annotations) -> tuple[str, dict]:
    """Checked copy of a COCO annotations file, completed for pycocotools."""
    file, data = _source(annotations, "<annotations>")
    if not isinstance(data, dict):
        raise DataError(file, None, f"not a COCO annotations file: the top level is {json_type(data)}, not an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(file, None, f'not a COCO annotations file: no "{key}" list')
        if not isinstance(data[key], list):
            raise DataError(file, None, f'not a COCO annotations file: "{key}" is {json_type(data[key])}, not a list')

    rows = RowChecker(file)
    images, seen = [], set()
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        iid = rows.integer(where, rows.entry(where, im), "id")
        if iid in seen:
            raise DataError(file, where, f"duplicate image id {iid}")
        seen.add(iid)
        images.append({**im, "id": iid})  # a copy: the caller's entries stay as they are

    categories, names = [], {}
    for i, c in enumerate(data["categories"]):
        where = f"categories[{i}]"
        cid = rows.integer(where, rows.entry(where, c), "id")
        if cid in names:
            raise DataError(file, where, f"duplicate category id {cid}")
        name = c.get("name")
        names[cid] = str(name) if isinstance(name, str) and name else f"category {cid}"
        categories.append(c)

    rows = RowChecker(file, images=seen, categories=names)
    anns = []
    for k, a in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        rows.entry(where, a)
        iid = rows.image_id(where, a)
        rows.category_id(where, a)
        at = f"image {iid}, {where}"
        box = rows.bbox(at, a, sizes=True)
        area = rows.area(at, a, box[2] * box[3])
        crowd = rows.crowd(at, a)
        # ids 1..N: COCOeval treats a matched GT id of 0 as "no match", and needs them unique
        anns.append({**a, "id": k + 1, "bbox": box, "area": area, "iscrowd": crowd})
    gt = {"images": images, "annotations": anns, "categories": categories}
    if "info" in data:
        gt["info"] = data["info"]
    return file, {"dataset": gt, "names": names}


def check_ground_truth(annotations) -> None:
    """DataError (naming the file and the entry) unless ``annotations`` (a path or a dict) are
    ground truth that :func:`evaluate_coco` accepts."""
    _load_ground_truth(annotations)


def check_results(results, image_ids, category_ids, *, name: str = "<results>") -> tuple[str, list]:
    """Checked, normalised copies ``{image_id, category_id, bbox, score}`` of COCO detection
    results (a path or a list). Raises DataError naming the file and ``results[k]`` for an entry
    that is not an object, an unknown image or category id, a bbox that is not 4 finite numbers
    with width, height >= 0, or a score that is not a finite number."""
    file, data = _source(results, name)
    if not isinstance(data, list):
        hint = ' (an annotations file? results are a list of {"image_id", "category_id", "bbox", "score"})'
        raise DataError(
            file,
            None,
            f"not a COCO results file: the top level is {json_type(data)}, not a list"
            + (hint if isinstance(data, dict) else ""),
        )
    rows = RowChecker(
        file,
        images=set(image_ids),
        categories=set(category_ids),
        images_in="the annotations' images",
        categories_in="the annotations' categories",
    )
    out = []
    for k, r in enumerate(data):
        where = f"results[{k}]"
        rows.entry(where, r)
        iid = rows.image_id(where, r)
        cid = rows.category_id(where, r)
        box = rows.bbox(where, r, sizes=True)
        score = rows.score(where, r)
        out.append({"image_id": iid, "category_id": cid, "bbox": box, "score": score})
    return file, out


# ---------------------------------------------------------------------------------------------
# Evaluation


def resolve_backend(backend: str = "auto") -> str:
    """The backend that ``evaluate_coco(..., backend=backend)`` runs: ``"faster"`` or
    ``"pycocotools"``; ``"auto"`` is ``"faster"`` when faster-coco-eval can be imported, else
    ``"pycocotools"``. Raises ValueError for a name not in :data:`BACKENDS`, ImportError (saying
    what to install) for ``"faster"`` when faster-coco-eval cannot be imported."""
    if backend not in BACKENDS:
        raise ValueError(f"evaluate_coco: `backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "pycocotools":
        return backend
    try:
        import faster_coco_eval  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as e:
        if backend == "faster":
            raise ImportError(
                f"faster-coco-eval cannot be imported ({e}); pip install faster-coco-eval, or evaluate with pycocotools"
            ) from None
        return "pycocotools"
    return "faster"


def _quiet(*args, **kwargs) -> None:
    """faster-coco-eval's print_function: its progress lines go nowhere."""


def _coco(dataset: dict, backend: str):
    """The backend's COCO index of ``dataset`` (which it may annotate in place: pass copies)."""
    if backend == "faster":
        from faster_coco_eval.core.coco import COCO as FasterCOCO  # type: ignore[import-untyped]

        c = FasterCOCO(print_function=_quiet)
        c.dataset = dataset
        c.createIndex()
        return c
    from pycocotools.coco import COCO

    c = COCO()
    c.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


def _run_cocoeval(coco_gt, coco_dt, backend: str, iou_type: str):
    """evaluate, accumulate, summarize: the evaluator with ``stats`` (12 numbers), ``eval["precision"]``
    [IoU, recall, category, area, maxDets] and ``params``."""
    if backend == "faster":
        from faster_coco_eval.core.faster_eval_api import COCOeval_faster  # type: ignore[import-untyped]

        ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=_quiet)
    else:
        from pycocotools.cocoeval import COCOeval

        ev = COCOeval(coco_gt, coco_dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_defined(a) -> float | None:
    a = np.asarray(a)
    a = a[a > -1]
    return float(np.mean(a)) if a.size else None


def evaluate_coco(
    annotations, results, *, per_class: bool = False, iou_type: str = "bbox", backend: str = "auto"
) -> dict:
    """COCO box AP/AR of ``results`` (a results-JSON path or a list of ``{"image_id",
    "category_id", "bbox": [x, y, w, h], "score"}``) against ``annotations`` (a COCO JSON path or
    dict), over every image of the annotations.

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
    "ARl"}`` (floats in [0, 1], or None where pycocotools says -1: nothing to average, such as
    ``APs`` without small GT objects), ``num_images``, ``num_annotations``, ``num_detections``,
    ``backend`` (the one that ran: ``"faster"`` or ``"pycocotools"``), and with ``per_class`` a
    ``per_class`` dict {category name: AP or None} in category-id order (a name shared by two
    categories gets `` (id N)`` appended).

    ``backend``: ``"auto"`` (faster-coco-eval when installed, else pycocotools), ``"faster"`` or
    ``"pycocotools"`` (the reference); see the module's notes for how their numbers agree.

    Raises DataError (naming the file and the entry) for bad input, ValueError for an
    unsupported ``iou_type`` (only ``"bbox"``: the detector has no masks) or ``backend``,
    ImportError for ``backend="faster"`` without faster-coco-eval (before reading any file)."""
    if iou_type != "bbox":
        raise ValueError(f"evaluate_coco: `iou_type` must be 'bbox', got {iou_type!r}")
    backend = resolve_backend(backend)

    _, gt = _load_ground_truth(annotations)
    dataset, names = gt["dataset"], gt["names"]
    _, dets = check_results(results, (im["id"] for im in dataset["images"]), names.keys())

    coco_gt = _coco(dataset, backend)
    # What COCO.loadRes does for boxes (area, id, iscrowd), without its failure on an empty list.
    res = [{**d, "area": d["bbox"][2] * d["bbox"][3], "id": k + 1, "iscrowd": 0} for k, d in enumerate(dets)]
    coco_dt = _coco({"images": dataset["images"], "categories": dataset["categories"], "annotations": res}, backend)

    ev = _run_cocoeval(coco_gt, coco_dt, backend, iou_type)
    stats = np.asarray(ev.stats)[: len(METRIC_KEYS)].tolist()
    metrics: dict = {k: (float(v) if v > -1 else None) for k, v in zip(METRIC_KEYS, stats)}
    metrics["num_images"] = len(dataset["images"])
    metrics["num_annotations"] = len(dataset["annotations"])
    metrics["num_detections"] = len(dets)
    metrics["backend"] = backend
    if per_class:
        precision = np.asarray(ev.eval["precision"])  # [IoU, recall, category, area, maxDets]
        area = ev.params.areaRngLbl.index("all")
        top = ev.params.maxDets.index(100)
        counts: dict = {}
        for n in names.values():
            counts[n] = counts.get(n, 0) + 1
        table = {}
        for k, cid in enumerate(ev.params.catIds):  # sorted category ids
            cid = int(cid)
            name = names[cid] if counts[names[cid]] == 1 else f"{names[cid]} (id {cid})"
            table[name] = _mean_defined(precision[:, :, k, area, top])
        metrics["per_class"] = table
    return metrics


# ---------------------------------------------------------------------------------------------
# Reports


def _num(v) -> float:
    return -1.0 if v is None else float(v)


def format_table(metrics: dict) -> str:
    """The 12 lines pycocotools' ``summarize()`` prints (an undefined number as -1.000)."""
    rows = []
    for key, (title, kind, iou, area, dets) in zip(METRIC_KEYS, _LINES):
        rows.append(
            f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {_num(metrics.get(key)):0.3f}"
        )
    return "\n".join(rows)


def format_per_class(metrics: dict, columns: int = 3) -> str:
    """Per-category AP (IoU 0.50:0.95, all areas, 100 detections) as a table of ``columns``
    (category, AP) pairs per row; "n/a" for a category without GT."""
    table = metrics.get("per_class")
    if not table:
        return "per-class AP: not computed (evaluate with per_class=True)"
    items = list(table.items())
    width = max(8, *(len(n) for n, _ in items))
    cell = lambda n, v: f"{n:<{width}} {'n/a' if v is None else f'{v:0.3f}':>6}"  # noqa: E731
    head = " | ".join(cell("category", None).replace("   n/a", "    AP") for _ in range(min(columns, len(items))))
    lines = ["per-class AP @[ IoU=0.50:0.95 | area=all | maxDets=100 ]", head, "-" * len(head)]
    for i in range(0, len(items), columns):
        lines.append(" | ".join(cell(n, v) for n, v in items[i : i + columns]))
    return "\n".join(lines)


def write_metrics_json(path, metrics: dict) -> str:
    """Writes ``metrics`` as indented JSON (None as null), atomically."""
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()), prefix=".metrics-", suffix=".json.tmp")
