"""COCO evaluation (sniper_ext.evaluation), results files (sniper_ext.inference.results) and the
`sniper eval` command: numbers equal pycocotools' own, inputs checked with messages naming the
file and the entry, empty results score 0."""

import contextlib
import copy
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
from sniper_ext.evaluation import METRIC_KEYS, evaluate_coco, format_per_class, format_table, write_metrics_json
from sniper_ext.inference import detections_to_coco, read_results_jsonl, write_results_json, write_results_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_perfect_detections_score_one():
    m = evaluate_coco(_gt(), _perfect(_gt()))
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert m[k] == pytest.approx(1.0), k
    assert m["num_images"] == 3 and m["num_annotations"] == 5 and m["num_detections"] == 5


def test_empty_results_score_zero():
    m = evaluate_coco(_gt(), [])
    assert all(m[k] == 0.0 for k in METRIC_KEYS), m
    assert m["num_detections"] == 0


def test_no_gt_of_a_size_is_none_not_minus_one():
    m = evaluate_coco(_gt(with_small=False), _perfect(_gt(with_small=False)))
    assert m["APs"] is None and m["ARs"] is None and m["AP"] == pytest.approx(1.0)
    assert "APs" in json.dumps(m) and "null" in json.dumps(m)
    assert "area= small | maxDets=100 ] = -1.000" in format_table(m)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numbers_equal_pycocotools_directly(seed):
    gt = _gt()
    res = _random_results(gt, 40, seed)
    before = copy.deepcopy(res)
    m = evaluate_coco(gt, res)
    stats, printed = _pycocotools(gt, res)
    assert res == before  # the caller's list is not modified (loadRes would add keys)
    for k, v in zip(METRIC_KEYS, stats):
        assert (m[k] is None and v == -1) or m[k] == pytest.approx(v, abs=1e-12), k
    table_lines = [ln for ln in printed.splitlines() if ln.startswith(" Average")]
    assert format_table(m).splitlines() == table_lines  # the same 12 lines pycocotools prints


def test_shifted_boxes_lower_ap():
    gt = _gt()
    perfect = evaluate_coco(gt, _perfect(gt))
    shifted = _perfect(gt)
    for r in shifted:
        r["bbox"][0] += 0.15 * r["bbox"][2]  # IoU ~0.74: counts at 0.5, not at 0.75+
    m = evaluate_coco(gt, shifted)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert 0 < m["AP"] < perfect["AP"]


def test_per_class_and_format():
    gt = _gt()
    gt["categories"].append({"id": 9, "name": "bird"})  # no GT: AP undefined
    res = _perfect(gt)
    res = [r for r in res if r["category_id"] == 3] + [
        {"image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.5}
    ]
    m = evaluate_coco(gt, res, per_class=True)
    assert list(m["per_class"]) == ["cat", "dog", "bird"]
    assert m["per_class"]["cat"] == pytest.approx(1.0)
    assert m["per_class"]["dog"] == 0.0
    assert m["per_class"]["bird"] is None
    text = format_per_class(m)
    assert "cat" in text and "n/a" in text and "1.000" in text
    assert "per_class" not in evaluate_coco(gt, res)


def test_duplicate_category_names_stay_apart():
    gt = _gt()
    gt["categories"][1]["name"] = "cat"
    m = evaluate_coco(gt, _perfect(gt), per_class=True)
    assert set(m["per_class"]) == {"cat (id 3)", "cat (id 7)"}


def test_paths_and_json_output(tmp_path):
    gt, res = tmp_path / "gt.json", tmp_path / "r.json"
    gt.write_text(json.dumps(_gt()))
    res.write_text(json.dumps(_perfect(_gt())))
    m = evaluate_coco(str(gt), res, per_class=True)
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
def test_bad_results_name_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_perfect(_gt())[:2] + [entry]))
    with pytest.raises(DataError) as e:
        evaluate_coco(_gt(), str(path))
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
def test_bad_annotations(mutate, where, message):
    gt = _gt()
    mutate(gt)
    with pytest.raises(DataError) as e:
        evaluate_coco(gt, [])
    assert e.value.file == "<annotations>" and e.value.where == where and message in str(e.value)


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
