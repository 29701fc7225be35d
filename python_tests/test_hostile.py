"""Hostile input for every command (chips, train, infer, eval, detect, demo, nms-demo): each case builds its bad input in a fresh folder, runs the
command in-process and asserts one clear line on stderr (``sniper CMD: error: ...`` with the
expected fragments), the exit status (1 bad data or path, 2 bad command line), no traceback, and
that nothing was written (the folder holds exactly what the case put there)."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from sniper_ext import cli
from sniper_ext.config import config_to_dict, preset
from sniper_ext.data import write_proposals_npz
from sniper_ext.engine.run_folder import RunLock
from sniper_ext.modeling import build_model
from sniper_ext.runtime import save_checkpoint

# ---------------------------------------------------------------------------------------------
# Inputs


def _coco(images=None, anns=None, cats=None):
    return {
        "images": images
        if images is not None
        else [
            {"id": 1, "width": 64, "height": 48, "file_name": "a.png"},
            {"id": 2, "width": 48, "height": 64, "file_name": "b.png"},
        ],
        "annotations": anns
        if anns is not None
        else [
            {"id": 1, "image_id": 1, "bbox": [4, 4, 20, 16], "category_id": 1},
            {"id": 2, "image_id": 2, "bbox": [10, 10, 12, 30], "category_id": 2},
        ],
        "categories": cats if cats is not None else [{"id": 1, "name": "disc"}, {"id": 2, "name": "square"}],
    }


def _images(d, coco):
    for im in coco["images"]:
        Image.new("RGB", (im["width"], im["height"]), (120, 90, 60)).save(d / im["file_name"])


def _write(d, name, obj):
    (d / name).write_text(json.dumps(obj))
    return str(d / name)


def _dataset(d, coco=None):
    coco = coco or _coco()
    _images(d, coco)
    return _write(d, "ann.json", coco)


def _checkpoint(d, name="ckpt.pt", *, mutate=None, weights=None, classes=2):
    cfg = preset("tiny")
    cfg.model.num_classes = classes
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data)
    state = {
        "model": weights if weights is not None else model.state_dict(),
        "config": config_to_dict(cfg),
        "categories": [{"id": 1, "name": "disc"}, {"id": 2, "name": "square"}][:classes],
        "stage": "detector",
        "iter": 1,
        "stage_done": True,
        "completed": ["detector"],
    }
    if mutate:
        mutate(state)
    save_checkpoint(str(d / name), state)
    return str(d / name)


def _nan_weights(state):
    k = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][k] = torch.full_like(state["model"][k], float("nan"))


def _other_arch(state):
    cfg = preset("tiny")
    cfg.model.width = 0.25
    cfg.model.num_classes = 2
    state["model"] = build_model(cfg.model, cfg.data).state_dict()


def _truncated_png(d, name="a.png", size=(64, 48)):
    Image.new("RGB", size, (1, 2, 3)).save(d / name)
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------------------------------------
# Cases: (id, setup(d) -> argv, exit status, fragments of the one line)


def _chips(d, coco=None, *extra):
    return ["chips", _write(d, "ann.json", coco or _coco()), "--out", str(d / "out" / "db.npz"), "--quiet", *extra]


CHIPS = [
    (
        "missing-annotations",
        lambda d: ["chips", str(d / "none.json"), "--out", str(d / "o.npz")],
        1,
        ["none.json", "No such file"],
    ),
    ("annotations-is-a-folder", lambda d: ["chips", str(d), "--out", str(d / "o.npz")], 1, ["Is a directory"]),
    (
        "not-json",
        lambda d: ((d / "a.json").write_text("{oops"), ["chips", str(d / "a.json"), "--out", str(d / "o.npz")])[1],
        1,
        ["a.json: line 1, column 2", "not valid JSON"],
    ),
    (
        "not-coco",
        lambda d: ["chips", _write(d, "a.json", [1, 2]), "--out", str(d / "o.npz")],
        1,
        ["not a COCO annotations file"],
    ),
    (
        "negative-width",
        lambda d: _chips(d, _coco(anns=[{"id": 1, "image_id": 1, "bbox": [4, 4, -2, 5], "category_id": 1}])),
        1,
        ["image 1, annotation 1", "negative width"],
    ),
    (
        "duplicate-image-id",
        lambda d: _chips(d, _coco(images=[{"id": 1, "width": 9, "height": 9, "file_name": "a"}] * 2, anns=[])),
        1,
        ["duplicate image id"],
    ),
    (
        "duplicate-annotation-id",
        lambda d: _chips(d, _coco(anns=[{"id": 7, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1}] * 2)),
        1,
        ["annotation 7", "duplicate annotation id"],
    ),
    (
        "duplicate-category-id",
        lambda d: _chips(d, _coco(cats=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])),
        1,
        ["categories[1]", "duplicate category id 1"],
    ),
    (
        "huge-image",
        lambda d: _chips(d, _coco(images=[{"id": 1, "width": 50000, "height": 50000, "file_name": "a"}], anns=[])),
        1,
        ["image 1", "50000x50000 exceeds the largest image side"],
    ),
    (
        "file-name-climbs-out",
        lambda d: _chips(d, _coco(images=[{"id": 1, "width": 9, "height": 9, "file_name": "../x.png"}], anns=[])),
        1,
        ["image 1", "leaves the image folder"],
    ),
    (
        "file-name-absolute",
        lambda d: _chips(d, _coco(images=[{"id": 1, "width": 9, "height": 9, "file_name": "/etc/x.png"}], anns=[])),
        1,
        ["leaves the image folder"],
    ),
    (
        "stride-not-below-chip",
        lambda d: _chips(d, None, "--chip-size", "64", "--stride", "64"),
        2,
        ["--stride", "smaller than --chip-size"],
    ),
    ("chip-size-zero", lambda d: _chips(d, None, "--chip-size", "0"), 2, ["--chip-size", "positive integer"]),
    ("workers-negative", lambda d: _chips(d, None, "--workers", "-1"), 2, ["--workers", "non-negative"]),
    ("unknown-option", lambda d: _chips(d, None, "--frob"), 2, ["unrecognized arguments: --frob"]),
    (
        "out-is-a-folder",
        lambda d: ((d / "o").mkdir(), ["chips", _write(d, "a.json", _coco()), "--out", str(d / "o")])[1],
        1,
        ["--out", "is a directory"],
    ),
    (
        "viz-is-a-file",
        lambda d: ((d / "v").write_text(""), _chips(d, None, "--viz", str(d / "v")))[1],
        1,
        ["--viz", "not a directory"],
    ),
    (
        "proposals-not-npz",
        lambda d: ((d / "p.npz").write_text("junk"), _chips(d, None, "--proposals", str(d / "p.npz")))[1],
        1,
        ["p.npz", "not a proposals file"],
    ),
    (
        "proposals-unknown-image",
        lambda d: (
            write_proposals_npz(str(d / "p.npz"), {9: [[1, 1, 5, 5]]}),
            _chips(d, None, "--proposals", str(d / "p.npz")),
        )[1],
        1,
        ["p.npz", "unknown image id 9"],
    ),
    (
        "viz-corrupt-image",
        lambda d: (
            (d / "im").mkdir(),
            _images(d / "im", _coco()),
            _truncated_png(d / "im"),
            _chips(d, None, "--viz", str(d / "viz"), "--images", str(d / "im")),
        )[-1],
        1,
        ["a.png", "image 1", "(drawn by --viz)"],
    ),
]


def _train(d, *extra):
    return ["train", "--out", str(d / "run"), "--preset", "tiny", "--workers", "0", "--quiet", *extra]


TRAIN = [
    (
        "negative-lr",
        lambda d: _train(d, "--set", "solver.base_lr=-0.1"),
        2,
        ["solver.base_lr: must be a finite number > 0, got -0.1"],
    ),
    (
        "batch-size-zero",
        lambda d: _train(d, "--set", "solver.batch_size=0"),
        2,
        ["solver.batch_size: must be an integer >= 1"],
    ),
    (
        "precision-fp8",
        lambda d: _train(d, "--set", "solver.precision=fp8"),
        2,
        ["solver.precision: must be one of auto, bf16, fp16, fp32"],
    ),
    ("unknown-depth", lambda d: _train(d, "--set", "model.depth=7"), 2, ["model.depth"]),
    ("unknown-key", lambda d: _train(d, "--set", "nosuch.key=1"), 2, ["'nosuch' is not a section"]),
    ("chip-stride", lambda d: _train(d, "--set", "chips.stride=0"), 2, ["chips", "stride"]),
    ("missing-config", lambda d: _train(d, "--config", str(d / "none.json")), 1, ["--config", "no such file"]),
    (
        "bad-config",
        lambda d: ((d / "c.json").write_text("{"), _train(d, "--config", str(d / "c.json")))[1],
        2,
        ["c.json", "not JSON"],
    ),
    (
        "backbone-text-file",
        lambda d: (
            (d / "w.pth").write_text("hello"),
            _train(d, "--annotations", _dataset(d), "--backbone-weights", str(d / "w.pth")),
        )[1],
        1,
        ["w.pth", "cannot read"],
    ),
    (
        "backbone-other-arch",
        lambda d: (
            torch.save(build_model(preset("r50").model).backbone.state_dict(), str(d / "w.pth")),
            _train(d, "--annotations", _dataset(d), "--backbone-weights", str(d / "w.pth")),
        )[1],
        1,
        ["w.pth", "does not match the model"],
    ),
    (
        "missing-annotations",
        lambda d: _train(d, "--annotations", str(d / "none.json")),
        1,
        ["--annotations", "no such file"],
    ),
    (
        "duplicate-category",
        lambda d: _train(d, "--annotations", _dataset(d, _coco(cats=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]))),
        1,
        ["duplicate category id 1"],
    ),
    (
        "missing-image",
        lambda d: (_dataset(d), os.remove(d / "b.png"), _train(d, "--annotations", str(d / "ann.json")))[2],
        1,
        ["b.png", "image 2", "missing"],
    ),
    (
        "truncated-image",
        lambda d: (_dataset(d), _truncated_png(d, "b.png", (48, 64)), _train(d, "--annotations", str(d / "ann.json")))[
            2
        ],
        1,
        ["b.png", "image 2", "truncated"],
    ),
    (
        "missing-image-root",
        lambda d: _train(d, "--annotations", _dataset(d), "--image-root", str(d / "nope")),
        1,
        ["--image-root", "no such folder"],
    ),
    ("out-is-a-file", lambda d: ((d / "run").write_text(""), _train(d))[1], 1, ["--out", "not a directory"]),
    (
        "stage-of-another-mode",
        lambda d: _train(d, "--mode", "positives", "--stage", "rpn"),
        2,
        ["mode positives has the stages detector"],
    ),
    ("cuda-without-gpu", lambda d: _train(d, "--device", "cuda"), 1, ["cuda", "no GPU"]),
]

INFER = [
    (
        "missing-checkpoint",
        lambda d: [
            "infer",
            "--checkpoint",
            str(d / "none.pt"),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
        ],
        1,
        ["--checkpoint", "no such file"],
    ),
    (
        "checkpoint-text",
        lambda d: (
            (d / "c.pt").write_text("hello"),
            ["infer", "--checkpoint", str(d / "c.pt"), "--annotations", _dataset(d), "--out", str(d / "r.json")],
        )[1],
        1,
        ["c.pt", "not a readable sniper_ext checkpoint"],
    ),
    (
        "checkpoint-pickle",
        lambda d: (
            (d / "c.pt").write_bytes(pickle.dumps({"a": 1})),
            ["infer", "--checkpoint", str(d / "c.pt"), "--annotations", _dataset(d), "--out", str(d / "r.json")],
        )[1],
        1,
        ["c.pt", "checkpoint"],
    ),
    (
        "checkpoint-other-arch",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d, mutate=_other_arch),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
        ],
        1,
        ["ckpt.pt", "do not match the model", "in the file"],
    ),
    (
        "checkpoint-bad-config",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d, mutate=lambda s: s["config"]["model"].update(depth=7)),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
        ],
        1,
        ["ckpt.pt", "saved configuration is not valid", "model.depth"],
    ),
    (
        "checkpoint-nan",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d, mutate=_nan_weights),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
        ],
        1,
        ["ckpt.pt", "NaN or infinite"],
    ),
    (
        "class-count",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d, classes=1),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
        ],
        1,
        ["checkpoint has 1 classes", "2 categories"],
    ),
    (
        "images-folder-empty",
        lambda d: (
            (d / "im").mkdir(),
            ["infer", "--checkpoint", _checkpoint(d), "--images", str(d / "im"), "--out", str(d / "r.json")],
        )[1],
        1,
        ["no images in this folder"],
    ),
    (
        "images-corrupt",
        lambda d: (
            (d / "im").mkdir(),
            (d / "im" / "x.png").write_text("no"),
            ["infer", "--checkpoint", _checkpoint(d), "--images", str(d / "im"), "--out", str(d / "r.json")],
        )[2],
        1,
        ["x.png", "image 1"],
    ),
    (
        "set-batch-zero",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
            "--set",
            "inference.batch_size=0",
        ],
        2,
        ["inference.batch_size"],
    ),
    (
        "set-not-inference",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
            "--set",
            "solver.base_lr=1",
        ],
        2,
        ["only inference.* keys"],
    ),
    (
        "out-is-a-folder",
        lambda d: (
            (d / "r").mkdir(),
            ["infer", "--checkpoint", _checkpoint(d), "--annotations", _dataset(d), "--out", str(d / "r")],
        )[1],
        1,
        ["--out", "is a directory"],
    ),
    (
        "image-root-without-annotations",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--images",
            str(d),
            "--image-root",
            str(d),
            "--out",
            str(d / "r.json"),
        ],
        2,
        ["--image-root: only with --annotations"],
    ),
    (
        "autofocus-without-focus-head",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
            "--autofocus",
        ],
        2,
        ["FocusPixel head", "tiny_autofocus"],
    ),
    (
        "autofocus-single-scale",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
            "--autofocus",
            "--single-scale",
        ],
        2,
        ["--autofocus", "not with --single-scale"],
    ),
    (
        "focus-threshold-out-of-range",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
            "--autofocus",
            "--focus-threshold",
            "1.5",
            "0.2",
        ],
        2,
        ["--focus-threshold"],
    ),
    (
        "device-cuda",
        lambda d: [
            "infer",
            "--checkpoint",
            _checkpoint(d),
            "--annotations",
            _dataset(d),
            "--out",
            str(d / "r.json"),
            "--device",
            "cuda",
        ],
        1,
        ["--device cuda", "no GPU"],
    ),
]

EVAL = [
    (
        "missing-results",
        lambda d: ["eval", "--annotations", _write(d, "gt.json", _coco()), "--results", str(d / "none.json")],
        1,
        ["none.json", "No such file"],
    ),
    (
        "results-not-a-list",
        lambda d: ["eval", "--annotations", _write(d, "gt.json", _coco()), "--results", _write(d, "r.json", {"a": 1})],
        1,
        ["r.json", "not a COCO results file"],
    ),
    (
        "results-unknown-image",
        lambda d: [
            "eval",
            "--annotations",
            _write(d, "gt.json", _coco()),
            "--results",
            _write(d, "r.json", [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]),
        ],
        1,
        ["r.json", "results[0]", "unknown image id 9"],
    ),
    (
        "annotations-not-json",
        lambda d: (
            (d / "gt.json").write_text("["),
            ["eval", "--annotations", str(d / "gt.json"), "--results", _write(d, "r.json", [])],
        )[1],
        1,
        ["gt.json", "not valid JSON"],
    ),
    (
        "out-is-a-folder",
        lambda d: (
            (d / "m").mkdir(),
            [
                "eval",
                "--annotations",
                _write(d, "gt.json", _coco()),
                "--results",
                _write(d, "r.json", []),
                "--out",
                str(d / "m"),
            ],
        )[1],
        1,
        ["--out", "is a directory"],
    ),
    (
        "image-root-without-checkpoint",
        lambda d: [
            "eval",
            "--annotations",
            _write(d, "gt.json", _coco()),
            "--results",
            _write(d, "r.json", []),
            "--image-root",
            str(d),
        ],
        2,
        ["--image-root: only with --checkpoint"],
    ),
    (
        "results-and-checkpoint",
        lambda d: ["eval", "--annotations", "a", "--results", "r", "--checkpoint", "c"],
        2,
        ["not allowed with argument"],
    ),
]

DETECT = [
    (
        "missing-images",
        lambda d: ["detect", str(d / "none"), "--checkpoint", _checkpoint(d), "--out", str(d / "pics")],
        1,
        ["none", "no such file or directory"],
    ),
    (
        "threshold-above-one",
        lambda d: ["detect", str(d), "--checkpoint", "c", "--out", str(d / "pics"), "--score-threshold", "2"],
        2,
        ["--score-threshold", "[0, 1]"],
    ),
    (
        "out-is-a-file",
        lambda d: ((d / "pics").write_text(""), ["detect", str(d), "--checkpoint", "c", "--out", str(d / "pics")])[1],
        1,
        ["--out", "not a directory"],
    ),
    (
        "corrupt-image",
        lambda d: (
            (d / "im").mkdir(),
            (d / "im" / "x.jpg").write_bytes(b"\xff\xd8junk"),
            ["detect", str(d / "im"), "--checkpoint", _checkpoint(d), "--out", str(d / "pics")],
        )[2],
        1,
        ["x.jpg", "image 1"],
    ),
]

EXPORT = [
    (
        "out-not-pt2",
        lambda d: ["export", "--checkpoint", _checkpoint(d), "--out", str(d / "m.onnx")],
        2,
        ["--out", "must end in .pt2"],
    ),
    (
        "missing-checkpoint",
        lambda d: ["export", "--checkpoint", str(d / "nope.pt"), "--out", str(d / "m.pt2")],
        1,
        ["nope.pt", "no such file"],
    ),
    (
        "not-a-checkpoint",
        lambda d: ((d / "c.pt").write_bytes(b"junk"), ["export", "--checkpoint", str(d / "c.pt"), "--out", "m.pt2"])[1],
        1,
        ["c.pt"],
    ),
    (
        "resolution-inverted",
        lambda d: ["export", "--checkpoint", "c", "--out", "m.pt2", "--resolution", "512", "320"],
        2,
        ["--resolution", "MIN 512 is above MAX 320"],
    ),
    (
        "out-in-a-file",
        lambda d: ((d / "f").write_text(""), ["export", "--checkpoint", "c", "--out", str(d / "f" / "m.pt2")])[1],
        1,
        ["--out"],
    ),
    (
        "bad-set",
        lambda d: [
            "export",
            "--checkpoint",
            _checkpoint(d),
            "--out",
            "m.pt2",
            "--set",
            "inference.detections_per_image=0",
        ],
        2,
        ["detections_per_image"],
    ),
]

DEMO = [
    (
        "unknown-variant",
        lambda d: ["demo", "--out", str(d / "demo"), "--variants", "sniper,nope"],
        2,
        ["--variants", "unknown nope"],
    ),
    (
        "out-is-a-file",
        lambda d: ((d / "demo").write_text(""), ["demo", "--out", str(d / "demo"), "--quick"])[1],
        1,
        ["--out", "not a directory"],
    ),
    ("iters-zero", lambda d: ["demo", "--out", str(d / "demo"), "--iters", "0"], 2, ["--iters", "positive integer"]),
]

NMS_DEMO = [
    (
        "out-is-a-file",
        lambda d: ((d / "nms").write_text(""), ["nms-demo", "--out", str(d / "nms")])[1],
        1,
        ["--out", "not a directory"],
    ),
    (
        "images-zero",
        lambda d: ["nms-demo", "--out", str(d / "nms"), "--images", "0"],
        2,
        ["--images", "positive integer"],
    ),
]

CASES = [("chips",) + c for c in CHIPS] + [("train",) + c for c in TRAIN] + [("infer",) + c for c in INFER]
CASES += [("eval",) + c for c in EVAL] + [("detect",) + c for c in DETECT] + [("export",) + c for c in EXPORT]
CASES += [("demo",) + c for c in DEMO] + [("nms-demo",) + c for c in NMS_DEMO]


def _listing(d) -> dict:
    out = {}
    for folder, dirs, files in os.walk(d):
        for name in files:
            p = os.path.join(folder, name)
            out[os.path.relpath(p, d)] = os.path.getsize(p)
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), d) + "/"] = 0
    return out


@pytest.mark.parametrize("command,case,setup,code,fragments", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_hostile_input(tmp_path, capsys, monkeypatch, command, case, setup, code, fragments):
    monkeypatch.chdir(tmp_path)
    argv = setup(tmp_path)
    before = _listing(tmp_path)
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == code, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sniper {command}: error: "), lines[0]
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert _listing(tmp_path) == before, "the command wrote or removed files"


# ---------------------------------------------------------------------------------------------
# Runs and their folder: resume, locks, leftovers


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-stage run (1 iteration per stage)."""
    d = tmp_path_factory.mktemp("run")
    argv = _train(
        d, "--max-iter", "1", "--batch-size", "2", "--set", "data.synthetic_images=4", "--set", "inference.batch_size=4"
    )
    assert cli.main(argv) == 0
    return d


def _copy(run, d):
    import shutil

    shutil.copytree(run / "run", d / "run")
    return d


def _run_argv(d, *extra):
    return _train(
        d,
        "--max-iter",
        "1",
        "--batch-size",
        "2",
        "--set",
        "data.synthetic_images=4",
        "--set",
        "inference.batch_size=4",
        *extra,
    )


@pytest.mark.parametrize(
    "extra,fragments",
    [
        (("--set", "model.width=0.25", "--resume"), ["--resume", "model.width 0.125 -> 0.25"]),
        (("--mode", "positives", "--resume"), ["--resume", "mode 'two_stage' -> 'positives'"]),
        (("--seed", "3", "--resume"), ["seed 0 -> 3"]),
    ],
)
def test_resume_refuses_changes_to_the_model_or_data(run, tmp_path, capsys, extra, fragments):
    d = _copy(run, tmp_path)
    before = _listing(d)
    config = (d / "run" / "config.json").read_text()
    rc = cli.main(_run_argv(d, *extra))
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and all(f in err for f in fragments), err
    assert _listing(d) == before and (d / "run" / "config.json").read_text() == config


def test_resume_applies_and_reports_other_changes(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    assert cli.main(_run_argv(d, "--set", "solver.base_lr=0.05", "--resume")) == 0
    out = capsys.readouterr().out
    assert "--resume: applying changed settings: solver.base_lr 0.1 -> 0.05" in out


def test_resume_of_a_file_that_is_not_a_checkpoint(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    (d / "run" / "last.pt").write_text("not a checkpoint")
    rc = cli.main(_run_argv(d, "--resume"))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1 and "last.pt: not a readable sniper_ext checkpoint" in err


def test_a_second_run_into_a_locked_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    before = _listing(tmp_path)
    with RunLock(str(tmp_path / "run")):
        before = _listing(tmp_path)
        rc = cli.main(_train(tmp_path))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1 and "another sniper train (pid" in err, err
    assert _listing(tmp_path) == before


def test_stale_temporaries_removed_and_rpn_rewritten(run, tmp_path, capsys):
    d = _copy(run, tmp_path)
    (d / "run" / ".ckpt-abc.pt.tmp").write_bytes(b"x" * 1000)
    os.remove(d / "run" / "rpn.pt")
    # as if killed between the RPN stage's last.pt and its rpn.pt
    state = torch.load(d / "run" / "last.pt", weights_only=True)
    state.update(stage="rpn", iter=1, stage_done=True, completed=[])
    torch.save(state, d / "run" / "last.pt")
    assert cli.main(_run_argv(d, "--resume", "--stage", "rpn")) == 0
    out = capsys.readouterr().out
    assert "removed .ckpt-abc.pt.tmp" in out and "rewrote" in out
    assert not (d / "run" / ".ckpt-abc.pt.tmp").exists() and (d / "run" / "rpn.pt").exists()


def test_a_failure_before_the_first_checkpoint_leaves_the_folder_as_it_was(tmp_path, capsys, monkeypatch):
    """A bad image found by the loader (its header was fine) stops the run; the folder, which the
    run created, is gone again."""
    import sniper_ext.data.chip_dataset as chip_dataset
    from sniper_ext.errors import DataError

    def corrupt(path, image_id=None, size=None):
        raise DataError(path, f"image {image_id}", "cannot decode the image (broken data stream)")

    monkeypatch.setattr(chip_dataset, "open_image", corrupt)
    rc = cli.main(_run_argv(tmp_path, "--mode", "positives"))
    err = capsys.readouterr().err
    assert rc == 1 and "cannot decode the image" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    import sniper_ext.runtime.checkpoint as checkpoint

    real = checkpoint.atomic_write
    writes = {"n": 0, "first": None}

    def full(path, write, **kw):
        if str(path).endswith("last.pt"):
            writes["n"] += 1
            if writes["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            out = real(path, write, **kw)
            writes["first"] = open(out, "rb").read()
            return out
        return real(path, write, **kw)

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    rc = cli.main(_run_argv(tmp_path, "--mode", "positives", "--max-iter", "3", "--checkpoint-every", "1"))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "last.pt: no space left on the device: the checkpoint needs" in err and "MiB" in err
    assert "the previous checkpoint is intact" in err
    assert (tmp_path / "run" / "last.pt").read_bytes() == writes["first"]


def test_nan_loss_is_one_line_naming_stage_iteration_and_checkpoint(tmp_path, capsys):
    rc = cli.main(
        _run_argv(
            tmp_path,
            "--mode",
            "positives",
            "--max-iter",
            "3",
            "--set",
            "solver.base_lr=1e30",
            "--set",
            "solver.warmup_iters=0",
        )
    )
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "detector stage, iteration" in err and "the last good checkpoint is" in err and "max_bad_steps" in err


def test_bounded_skips_of_non_finite_steps(tmp_path, capsys, monkeypatch):
    """With solver.max_bad_steps the run skips a non-finite step, logs it and goes on."""
    from sniper_ext.modeling import SniperRCNN

    real = SniperRCNN.forward
    calls = {"n": 0}

    def flaky(self, batch, rpn_only=False):
        out = real(self, batch, rpn_only=rpn_only)
        calls["n"] += 1
        if calls["n"] == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SniperRCNN, "forward", flaky)
    argv = _run_argv(
        tmp_path,
        "--mode",
        "positives",
        "--max-iter",
        "3",
        "--set",
        "solver.max_bad_steps=1",
        "--set",
        "solver.log_every=1",
    )
    assert cli.main(argv) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("skipped") is not None for x in lines] == [False, True, False]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["iter"] == 3 and all(
        bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point()
    )


# ---------------------------------------------------------------------------------------------
# Images as users have them: the same 8-bit RGB as their 8-bit twin


def _twin(kind, rgb):
    g = rgb.mean(axis=2).round().astype(np.uint8)
    if kind == "gray":
        return Image.fromarray(g, "L"), np.repeat(g[..., None], 3, 2)
    if kind == "gray16":
        return Image.fromarray(g.astype(np.uint16) * 257), np.repeat(g[..., None], 3, 2)
    if kind == "rgba":
        return Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA"), rgb
    if kind == "palette":
        im = Image.fromarray(rgb, "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT)
        return im, np.asarray(im.convert("RGB"))
    if kind == "cmyk":
        im = Image.fromarray(rgb, "RGB").convert("CMYK")
        return im, np.asarray(im.convert("RGB"))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["gray", "gray16", "rgba", "palette", "cmyk"])
def test_every_image_kind_reads_as_its_8bit_twin(tmp_path, kind):
    from sniper_ext.data import image_header, open_image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    im, want = _twin(kind, rgb)
    path = tmp_path / ("x.tif" if kind == "cmyk" else "x.png")
    im.save(path)
    got = np.asarray(open_image(str(path), 1, (20, 12)))
    assert got.dtype == np.uint8 and got.shape == (12, 20, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert image_header(str(path), 1) == (20, 12)


def test_exif_rotated_image_reads_upright(tmp_path):
    from sniper_ext.data import image_header, open_image

    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, :5] = 255  # a white band on the left of the stored pixels
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert image_header(str(tmp_path / "r.jpg"), 1) == (10, 30)
    got = np.asarray(open_image(str(tmp_path / "r.jpg"), 1, (10, 30)))
    assert got.shape == (30, 10, 3) and got[:5].mean() > 200 and got[-5:].mean() < 50  # the band on top
