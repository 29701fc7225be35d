"""COCO evaluation (sniper_ext.evaluation), results files (sniper_ext.inference.results) and the
`sniper eval` command: numbers equal pycocotools' own, inputs checked with messages naming the
file and the entry, empty results score 0; the faster-coco-eval backend gives pycocotools'
numbers (bit for bit but where pycocotools' precision is 1 - 2**-52 for 1, see below), and its
absence leaves the pycocotools path whole."""

import contextlib
import copy
import importlib.util
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sniper_ext import cli
from sniper_ext.errors import DataError
from sniper_ext.evaluation import (
    METRIC_KEYS,
    evaluate_coco,
    format_per_class,
    format_table,
    resolve_backend,
    write_metrics_json,
)
from sniper_ext.inference import detections_to_coco, read_results_jsonl, write_results_json, write_results_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HAS_FASTER = importlib.util.find_spec("faster_coco_eval") is not None
needs_faster = pytest.mark.skipif(
    not HAS_FASTER, reason="faster-coco-eval is not installed (pip install faster-coco-eval)"
)
#: Every behaviour test runs on both backends; the faster one only where it is installed.
BACKENDS = ["pycocotools", pytest.param("faster", marks=needs_faster)]

#: How far an AP of the two backends may differ: pycocotools' precision is tp / (tp + fp + eps),
#: so a ranking that starts with a true positive has 1 / (1 + 2**-52) = 1 - 2**-52 there, where
#: faster-coco-eval has 1; every other precision entry and every recall entry is bitwise equal
#: (test_backends_differ_only_in_the_eps_of_a_first_true_positive). An AP, a mean of precision
#: entries of which some are 2**-52 lower, is at most 2**-52 lower (summing in the same order).
#: ARs are means of bitwise-equal recalls: no tolerance.
AP_TOLERANCE = 2.0**-52
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
AR_KEYS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _gt(with_small=True):
    """Three images, two categories (ids 3 and 7, so contiguous labels 1, 2), objects of all
    three COCO size classes; no area/iscrowd/id on two annotations (hand-made files lack them)."""
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 100, 120]},  # large
        {"image_id": 1, "category_id": 7, "bbox": [200, 50, 50, 40]},  # medium
        {"id": 9, "image_id": 2, "category_id": 3, "bbox": [30, 40, 60, 60], "area": 3600.0, "iscrowd": 0},
        {"id": 10, "image_id": 2, "category_id": 7, "bbox": [150, 150, 120, 90], "area": 10800.0, "iscrowd": 0},
    ]
    if with_small:
        anns.append({"id": 11, "image_id": 3, "category_id": 7, "bbox": [5, 5, 20, 20], "area": 400.0, "iscrowd": 0})
    return {
        "images": [{"id": i, "width": 320, "height": 240, "file_name": f"{i}.png"} for i in (1, 2, 3)],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def _perfect(gt, score=0.9):
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
        for a in gt["annotations"]
    ]


def _gt_coco(gt):
    """pycocotools' COCO object of ``gt``, completed as pycocotools needs (area, iscrowd, ids)."""
    gt = copy.deepcopy(gt)
    for k, a in enumerate(gt["annotations"]):
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        a.setdefault("iscrowd", 0)
        a["id"] = k + 1
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    return coco


def _pycocotools(gt, results):
    """The reference: pycocotools used directly (loadRes, COCOeval, summarize); ``results`` is
    a list or a file path."""
    coco = _gt_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, out.getvalue()


def _random_results(gt, n, seed):
    rng = np.random.default_rng(seed)
    res = []
    for _ in range(n):
        a = gt["annotations"][rng.integers(len(gt["annotations"]))]
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
        res.append(
            {
                "image_id": a["image_id"] if rng.random() < 0.9 else int(rng.integers(1, 4)),
                "category_id": a["category_id"] if rng.random() < 0.8 else 3,
                "bbox": [
                    float(x + jitter[0]),
                    float(y + jitter[1]),
                    float(abs(w + jitter[2])),
                    float(abs(h + jitter[3])),
                ],
                "score": float(rng.random()),
            }
        )
    return res


def test_perfect_detections_score_one(backend):
    m = evaluate_coco(_gt(), _perfect(_gt()), backend=backend)
    assert m["backend"] == backend
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert m[k] == pytest.approx(1.0), k
    assert m["num_images"] == 3 and m["num_annotations"] == 5 and m["num_detections"] == 5


def test_empty_results_score_zero(backend):
    m = evaluate_coco(_gt(), [], backend=backend)
    assert all(m[k] == 0.0 for k in METRIC_KEYS), m
    assert m["num_detections"] == 0


def test_no_gt_of_a_size_is_none_not_minus_one(backend):
    m = evaluate_coco(_gt(with_small=False), _perfect(_gt(with_small=False)), backend=backend)
    assert m["APs"] is None and m["ARs"] is None and m["AP"] == pytest.approx(1.0)
    assert "APs" in json.dumps(m) and "null" in json.dumps(m)
    assert "area= small | maxDets=100 ] = -1.000" in format_table(m)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numbers_equal_pycocotools_directly(seed, backend):
    gt = _gt()
    res = _random_results(gt, 40, seed)
    before, gt_before = copy.deepcopy(res), copy.deepcopy(gt)
    m = evaluate_coco(gt, res, backend=backend)
    stats, printed = _pycocotools(gt, res)
    assert res == before and gt == gt_before  # the caller's data is not modified (loadRes would add keys)
    tolerance = AP_TOLERANCE if backend == "faster" else 0.0  # pycocotools on the same input: bit for bit
    for k, v in zip(METRIC_KEYS, stats):
        if v == -1:
            assert m[k] is None, k
        else:
            assert abs(m[k] - v) <= (tolerance if k in AP_KEYS else 0.0), (k, m[k], v)
    table_lines = [ln for ln in printed.splitlines() if ln.startswith(" Average")]
    assert format_table(m).splitlines() == table_lines  # the same 12 lines pycocotools prints


def test_shifted_boxes_lower_ap(backend):
    gt = _gt()
    perfect = evaluate_coco(gt, _perfect(gt), backend=backend)
    shifted = _perfect(gt)
    for r in shifted:
        r["bbox"][0] += 0.15 * r["bbox"][2]  # IoU ~0.74: counts at 0.5, not at 0.75+
    m = evaluate_coco(gt, shifted, backend=backend)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert 0 < m["AP"] < perfect["AP"]


def test_per_class_and_format(backend):
    gt = _gt()
    gt["categories"].append({"id": 9, "name": "bird"})  # no GT: AP undefined
    res = _perfect(gt)
    res = [r for r in res if r["category_id"] == 3] + [
        {"image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.5}
    ]
    m = evaluate_coco(gt, res, per_class=True, backend=backend)
    assert list(m["per_class"]) == ["cat", "dog", "bird"]
    assert m["per_class"]["cat"] == pytest.approx(1.0)
    assert m["per_class"]["dog"] == 0.0
    assert m["per_class"]["bird"] is None
    text = format_per_class(m)
    assert "cat" in text and "n/a" in text and "1.000" in text
    assert "per_class" not in evaluate_coco(gt, res, backend=backend)


def test_duplicate_category_names_stay_apart(backend):
    gt = _gt()
    gt["categories"][1]["name"] = "cat"
    m = evaluate_coco(gt, _perfect(gt), per_class=True, backend=backend)
    assert set(m["per_class"]) == {"cat (id 3)", "cat (id 7)"}


def test_paths_and_json_output(tmp_path, backend):
    gt, res = tmp_path / "gt.json", tmp_path / "r.json"
    gt.write_text(json.dumps(_gt()))
    res.write_text(json.dumps(_perfect(_gt())))
    m = evaluate_coco(str(gt), res, per_class=True, backend=backend)
    assert m["backend"] == backend
    out = write_metrics_json(tmp_path / "sub" / "m.json", m)
    assert json.loads(open(out).read()) == m
    assert os.listdir(tmp_path / "sub") == ["m.json"]  # no temporary file left behind


def test_unsupported_iou_type():
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(_gt(), [], iou_type="segm")


BAD_RESULTS = [
    ({"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}, "unknown image id 99"),
    ({"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1}, "unknown category id 5"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 1}, "bbox must be [x, y, width, height]"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, -1, 1], "score": 1}, "negative width"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, float("nan")], "score": 1}, "non-finite"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}, "score must be a finite number"),
    ({"image_id": "1", "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}, "image_id must be an integer"),
    ({"image_id": True, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}, "image_id must be an integer"),
    ([1, 2, 3], "is a list, not an object"),
]


@pytest.mark.parametrize("entry,message", BAD_RESULTS)
def test_bad_results_name_file_and_entry(tmp_path, entry, message, backend):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_perfect(_gt())[:2] + [entry]))
    with pytest.raises(DataError) as e:
        evaluate_coco(_gt(), str(path), backend=backend)
    assert e.value.file == str(path) and e.value.where == "results[2]"
    assert message in str(e.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[{", "not valid JSON"),
        ('{"images": []}', "not a COCO results file: the top level is an object"),
        ("7", "not a COCO results file"),
    ],
)
def test_bad_results_files(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        evaluate_coco(_gt(), str(path))


@pytest.mark.parametrize(
    "mutate,where,message",
    [
        (lambda g: g.pop("categories"), None, 'no "categories"'),
        (lambda g: g["annotations"][1].update(image_id=42), "annotations[1]", "unknown image id 42"),
        (lambda g: g["annotations"][0].update(bbox=[0, 0, 5, -2]), "image 1, annotations[0]", "negative height"),
        (lambda g: g["images"].append({"id": 1}), "images[3]", "duplicate image id 1"),
        (lambda g: g["annotations"][0].update(iscrowd=2), "image 1, annotations[0]", "iscrowd"),
    ],
)
def test_bad_annotations(mutate, where, message, backend):
    gt = _gt()
    mutate(gt)
    with pytest.raises(DataError) as e:
        evaluate_coco(gt, [], backend=backend)
    assert e.value.file == "<annotations>" and e.value.where == where and message in str(e.value)


# ---------------------------------------------------------------------------------------------
# Backends: faster-coco-eval against pycocotools


def _random_case(seed, images=60, categories=12, dets_per_image=30, ties=False, integer_boxes=False):
    """A COCO-like case (annotations, results): ``categories`` of the ids 1..90, objects from 4 to
    400 px (small, medium and large; GT ``area`` below the box's, as a mask's is), 5% crowd, 15%
    of the images without GT; per image Poisson(``dets_per_image``) detections, 60% jittered from
    its GT (15% of those with a wrong class), the rest anywhere. ``ties``: scores from {0, 1/4,
    .., 1}, so most detections tie with others; ``integer_boxes``: GT on whole pixels."""
    rng = np.random.default_rng(seed)
    cats = sorted(int(c) for c in rng.choice(np.arange(1, 91), categories, replace=False))
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"class {c}"} for c in cats]}
    for i in range(images):
        iid, w_img, h_img = 3 * i + 1, int(rng.integers(200, 641)), int(rng.integers(200, 641))
        gt["images"].append({"id": iid, "width": w_img, "height": h_img})
        for _ in range(0 if rng.random() < 0.15 else rng.poisson(6)):
            side, aspect = np.exp(rng.uniform(np.log(4), np.log(400))), np.exp(rng.uniform(-1, 1))
            x, y, w, h = rng.uniform(0, w_img), rng.uniform(0, h_img), side * aspect**0.5, side / aspect**0.5
            if integer_boxes:
                x, y, w, h = round(x), round(y), max(1, round(w)), max(1, round(h))
            gt["annotations"].append(
                {
                    "image_id": iid,
                    "category_id": int(rng.choice(cats)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h * rng.uniform(0.5, 1.0)),
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
    by_image: dict = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    results = []
    for im in gt["images"]:
        mine = by_image.get(im["id"], [])
        for _ in range(rng.poisson(dets_per_image)):
            if mine and rng.random() < 0.6:
                a = mine[rng.integers(len(mine))]
                x, y, w, h = a["bbox"]
                j = rng.normal(0, 0.1, 4) * [w, h, w, h]
                box = [x + j[0], y + j[1], abs(w + j[2]), abs(h + j[3])]
                cid = a["category_id"] if rng.random() < 0.85 else int(rng.choice(cats))
            else:
                side = np.exp(rng.uniform(np.log(4), np.log(400)))
                box = [rng.uniform(0, im["width"]), rng.uniform(0, im["height"]), side, side * rng.uniform(0.5, 2)]
                cid = int(rng.choice(cats))
            score = rng.integers(0, 5) / 4 if ties else rng.random()
            results.append(
                {"image_id": im["id"], "category_id": cid, "bbox": [float(v) for v in box], "score": float(score)}
            )
    return gt, results


def _project_cases():
    """The cases of the tests above: (name, annotations, results)."""
    gt = _gt()
    with_bird = _gt()
    with_bird["categories"].append({"id": 9, "name": "bird"})
    shifted = _perfect(gt)
    for r in shifted:
        r["bbox"][0] += 0.15 * r["bbox"][2]
    cases = [
        ("perfect", gt, _perfect(gt)),
        ("empty results", gt, []),
        ("no small GT", _gt(with_small=False), _perfect(_gt(with_small=False))),
        ("shifted", gt, shifted),
        ("category without GT", with_bird, [r for r in _perfect(with_bird) if r["category_id"] == 3]),
    ]
    return cases + [(f"random {seed}", gt, _random_results(gt, 40, seed)) for seed in range(3)]


#: (name, kwargs of _random_case)
RANDOM_CASES = [
    ("coco-like", dict(seed=10)),
    ("whole-pixel boxes", dict(seed=11, integer_boxes=True)),
    ("ties in scores", dict(seed=12, ties=True)),
    ("ties, whole pixels", dict(seed=13, ties=True, integer_boxes=True)),
    # 400 detections per image and class: the 100 kept per image cut through tied scores
    ("over maxDets, ties", dict(seed=14, images=10, categories=2, dets_per_image=400, ties=True)),
    ("many images and classes", dict(seed=15, images=250, categories=80, dets_per_image=50)),
]


def _assert_same_numbers(ref: dict, fast: dict):
    """``fast`` (faster-coco-eval) against ``ref`` (pycocotools): the same keys and undefined
    numbers, ARs and counts equal, APs (and per-class APs) within AP_TOLERANCE."""
    assert ref["backend"] == "pycocotools" and fast["backend"] == "faster"
    assert set(ref) == set(fast)
    for k in ("num_images", "num_annotations", "num_detections", *AR_KEYS):
        assert fast[k] == ref[k], k
    pairs = [(k, ref[k], fast[k]) for k in AP_KEYS] + [
        (f"per_class[{n}]", v, fast["per_class"][n]) for n, v in ref.get("per_class", {}).items()
    ]
    assert list(ref.get("per_class", {})) == list(fast.get("per_class", {}))
    for k, a, b in pairs:
        assert (a is None) == (b is None), k
        if a is not None:
            assert abs(a - b) <= AP_TOLERANCE, (k, a, b, (a - b) / AP_TOLERANCE)


@needs_faster
@pytest.mark.parametrize("case", range(8), ids=[c[0] for c in _project_cases()])
def test_backends_agree_on_the_project_cases(case):
    _, gt, res = _project_cases()[case]
    ref = evaluate_coco(gt, res, per_class=True, backend="pycocotools")
    _assert_same_numbers(ref, evaluate_coco(gt, res, per_class=True, backend="faster"))


@needs_faster
@pytest.mark.parametrize("name,kwargs", RANDOM_CASES, ids=[c[0] for c in RANDOM_CASES])
def test_backends_agree_on_random_cases(name, kwargs):
    gt, res = _random_case(**kwargs)
    before = copy.deepcopy((gt, res))
    ref = evaluate_coco(gt, res, per_class=True, backend="pycocotools")
    fast = evaluate_coco(gt, res, per_class=True, backend="faster")
    assert (gt, res) == before  # neither backend touches the caller's data
    _assert_same_numbers(ref, fast)
    assert ref["APs"] is not None and ref["APm"] is not None and ref["APl"] is not None  # all sizes present
    assert 0 < ref["AP"] < 1


def _library_eval(gt, results, faster: bool):
    """(precision, recall) arrays of pycocotools' or faster-coco-eval's COCOeval used directly
    (not through evaluate_coco)."""
    if faster:
        from faster_coco_eval.core.coco import COCO as Coco
        from faster_coco_eval.core.faster_eval_api import COCOeval_faster as Eval
    else:
        Coco, Eval = COCO, COCOeval
    dataset = copy.deepcopy(gt)
    for k, a in enumerate(dataset["annotations"]):
        a["id"] = k + 1
    dets = [{**r, "area": r["bbox"][2] * r["bbox"][3], "id": k + 1, "iscrowd": 0} for k, r in enumerate(results)]
    with contextlib.redirect_stdout(io.StringIO()):
        cg, cd = Coco(), Coco()
        cg.dataset = dataset
        cd.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": dets}
        cg.createIndex()
        cd.createIndex()
        ev = Eval(cg, cd, "bbox")
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])


@needs_faster
@pytest.mark.parametrize("name,kwargs", RANDOM_CASES[:5], ids=[c[0] for c in RANDOM_CASES[:5]])
def test_backends_differ_only_in_the_eps_of_a_first_true_positive(name, kwargs):
    """Why AP_TOLERANCE: the two libraries' recall arrays are bitwise equal, and so are their
    precision arrays once pycocotools' 1 / (1 + eps) (its tp / (tp + fp + eps) at one true
    positive and no false one) reads as 1, which faster-coco-eval has there."""
    gt, res = _random_case(**kwargs)
    p_ref, r_ref = _library_eval(gt, res, faster=False)
    p_fast, r_fast = _library_eval(gt, res, faster=True)
    assert np.array_equal(r_ref, r_fast)
    one_minus_eps = 1 / (1 + np.spacing(1))
    assert one_minus_eps == 1 - 2.0**-52
    differ = p_ref != p_fast
    assert np.all(p_ref[differ] == one_minus_eps) and np.all(p_fast[differ] == 1.0)
    assert np.array_equal(np.where(p_ref == one_minus_eps, 1.0, p_ref), p_fast)


@needs_faster
def test_auto_is_faster_when_installed():
    assert resolve_backend() == resolve_backend("auto") == "faster"
    assert evaluate_coco(_gt(), _perfect(_gt()))["backend"] == "faster"


@pytest.fixture
def no_faster(monkeypatch):
    """faster-coco-eval made unimportable, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)


def test_without_faster_auto_is_pycocotools_and_faster_an_error(no_faster):
    assert resolve_backend("auto") == "pycocotools"
    m = evaluate_coco(_gt(), _perfect(_gt()))
    assert m["backend"] == "pycocotools" and m["AP"] == pytest.approx(1.0)
    with pytest.raises(ImportError, match="faster-coco-eval cannot be imported .*pip install faster-coco-eval"):
        evaluate_coco("no-such-file.json", [], backend="faster")  # before reading any file


def test_unknown_backend():
    with pytest.raises(ValueError, match="`backend` must be one of auto, faster, pycocotools, got 'fast'"):
        evaluate_coco(_gt(), [], backend="fast")


# ---------------------------------------------------------------------------------------------
# Results files


def test_detections_to_coco_maps_labels_and_boxes():
    dets = [
        (
            torch.tensor([[10.0, 20.0, 40.0, 60.0], [1.004, 2.0, 3.0, 5.5]]),
            torch.tensor([0.912345678, 0.5]),
            torch.tensor([2, 1]),
        ),
        (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)),
    ]
    res = detections_to_coco([5, 6], dets, [3, 7])
    assert res == [
        {"image_id": 5, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.91235},
        {"image_id": 5, "category_id": 3, "bbox": [1.0, 2.0, 2.0, 3.5], "score": 0.5},
    ]
    assert detections_to_coco([], [], [3, 7]) == []
    # bfloat16 / float64 / numpy inputs
    b16 = [(dets[0][0].bfloat16(), dets[0][1].bfloat16(), dets[0][2])]
    assert [r["category_id"] for r in detections_to_coco([5], b16, [3, 7])] == [7, 3]
    npd = [(dets[0][0].double().numpy(), dets[0][1].numpy(), dets[0][2].numpy())]
    assert detections_to_coco([5], npd, [3, 7], box_decimals=None)[0]["bbox"] == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    "dets,message",
    [
        ((torch.zeros(1, 4), torch.ones(1), torch.tensor([3])), "label 3 is outside 1..2"),
        ((torch.zeros(1, 4), torch.ones(1), torch.tensor([0])), "label 0 is outside 1..2"),
        ((torch.zeros(2, 4), torch.ones(1), torch.tensor([1, 1])), "2 boxes, 1 scores"),
        ((torch.zeros(1, 3), torch.ones(1), torch.tensor([1])), r"shape \[N, 4\]"),
        ((torch.full((1, 4), math.inf), torch.ones(1), torch.tensor([1])), "non-finite"),
    ],
)
def test_detections_to_coco_errors(dets, message):
    with pytest.raises(ValueError, match=message):
        detections_to_coco([1], [dets], [3, 7])
    with pytest.raises(ValueError, match="one entry per image id"):
        detections_to_coco([1, 2], [dets], [3, 7])


def test_results_json_round_trips_through_pycocotools(tmp_path):
    gt = _gt()
    boxes = torch.tensor([[10.0, 10.0, 110.0, 130.0], [200.0, 50.0, 250.0, 90.0], [0.0, 0.0, 4.0, 4.0]])
    dets = [(boxes, torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 2, 2]))]
    res = detections_to_coco([1], dets, [3, 7])
    path = write_results_json(tmp_path / "r.json", res)
    assert json.load(open(path)) == res
    stats, _ = _pycocotools(gt, str(path))  # pycocotools reads our file itself
    m = evaluate_coco(gt, str(path))
    assert [m[k] for k in METRIC_KEYS] == pytest.approx(stats.tolist())
    coco = _gt_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = coco.loadRes(str(path))
    assert len(loaded.getAnnIds()) == 3
    assert [a["bbox"] for a in loaded.loadAnns(loaded.getAnnIds())] == [r["bbox"] for r in res]
    assert m["num_detections"] == 3 and 0 < m["AP"] < 1
    assert write_results_json(tmp_path / "e.json", []) and json.load(open(tmp_path / "e.json")) == []


def test_results_jsonl_one_line_per_image(tmp_path):
    res = detections_to_coco(
        [4, 5, 6],
        [
            (torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([0.5]), torch.tensor([1])),
            (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)),
            (torch.tensor([[1.0, 1, 3, 3], [2.0, 2, 5, 5]]), torch.tensor([0.7, 0.2]), torch.tensor([2, 1])),
        ],
        [3, 7],
    )
    path = write_results_jsonl(tmp_path / "r.jsonl", res, image_ids=[4, 5, 6], extra={5: {"file_name": "5.png"}})
    lines = [json.loads(s) for s in open(path).read().splitlines()]
    assert [ln["image_id"] for ln in lines] == [4, 5, 6]
    assert lines[1] == {"image_id": 5, "file_name": "5.png", "detections": []}
    assert len(lines[2]["detections"]) == 2
    assert read_results_jsonl(path) == res
    with pytest.raises(ValueError, match="not in `image_ids`"):
        write_results_jsonl(tmp_path / "x.jsonl", res, image_ids=[4])


# ---------------------------------------------------------------------------------------------
# `sniper eval`


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gt.json").write_text(json.dumps(_gt()))
    (tmp_path / "perfect.json").write_text(json.dumps(_perfect(_gt())))
    (tmp_path / "empty.json").write_text("[]")
    return tmp_path


def test_cli_writes_the_contract_keys(files, capsys):
    rc = cli.main(["eval", "--annotations", "gt.json", "--results", "perfect.json", "--out", "out/m.json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads((files / "out" / "m.json").read_text())
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert m[k] == pytest.approx(1.0)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in out
    assert "per_class" not in m


def test_cli_empty_results_and_per_class(files, capsys):
    rc = cli.main(["eval", "--annotations", "gt.json", "--results", "empty.json", "--out", "m.json", "--per-class"])
    out, _ = capsys.readouterr()
    assert rc == 0
    m = json.loads((files / "m.json").read_text())
    assert m["AP"] == 0.0 and m["per_class"] == {"cat": 0.0, "dog": 0.0}
    assert "per-class AP" in out


@pytest.mark.parametrize(
    "content,fragments",
    [
        ('[{"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}]', ["r.json", "results[0]", "99"]),
        ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, "w", 1], "score": 1}]', ["r.json", "results[0]", "bbox"]),
        ("not json", ["r.json", "not valid JSON"]),
        (None, ["r.json", "No such file"]),
    ],
)
def test_cli_bad_results_one_line_exit_1(files, capsys, content, fragments):
    if content is not None:
        (files / "r.json").write_text(content)
    rc = cli.main(["eval", "--annotations", "gt.json", "--results", "r.json", "--out", "m.json"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert len(err.splitlines()) == 1 and err.startswith("sniper eval: error: "), err
    assert all(f in err for f in fragments), err
    assert not (files / "m.json").exists()


def test_cli_out_is_a_directory(files, capsys):
    os.mkdir(files / "d")
    assert cli.main(["eval", "--annotations", "gt.json", "--results", "empty.json", "--out", "d"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is a directory" in err


def test_cli_as_module(files):
    """`python -m sniper_ext.cli eval ...`: the same one-line error (its exception classes are
    the package module's, not __main__'s)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    os.mkdir(files / "d")
    p = subprocess.run(
        [sys.executable, "-m", "sniper_ext.cli", "eval", "--annotations", "gt.json", "--results", "empty.json"]
        + ["--out", "d"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "is a directory" in p.stderr, p.stderr


def test_cli_backend_is_reported(files, capsys, backend):
    rc = cli.main(
        ["eval", "--annotations", "gt.json", "--results", "perfect.json", "--out", "m.json"] + ["--backend", backend]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"5 detections on 3 images (5 ground-truth objects), backend {backend}" in out
    m = json.loads((files / "m.json").read_text())
    assert m["backend"] == backend and m["AP"] == pytest.approx(1.0)


def test_cli_backend_auto_without_faster_is_pycocotools(files, capsys, no_faster):
    assert cli.main(["eval", "--annotations", "gt.json", "--results", "perfect.json"]) == 0
    assert "backend pycocotools" in capsys.readouterr().out


def test_cli_backend_faster_without_it_one_line_exit_1(files, capsys, no_faster):
    """Like --device cuda without a GPU: a fine command line on a machine that lacks the thing
    (exit 1), said before anything is read (the missing annotations are not reached)."""
    rc = cli.main(["eval", "--annotations", "missing.json", "--results", "empty.json", "--backend", "faster"])
    err = capsys.readouterr().err
    assert rc == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sniper eval: error: --backend faster: faster-coco-eval cannot be imported"), err
    assert "pip install faster-coco-eval" in err and "missing.json" not in err


def test_cli_backend_bad_choice_exit_2(files, capsys):
    assert cli.main(["eval", "--annotations", "gt.json", "--results", "empty.json", "--backend", "fast"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "argument --backend: invalid choice: 'fast'" in err, err
