"""Multi-scale inference from a checkpoint: `sniper infer`, `sniper detect`, `sniper eval
--checkpoint` (sniper_ext.cli) and the per-scale valid ranges of MultiScaleInference.detect.

One tiny checkpoint is trained once for the module (CPU, a few seconds); the commands run
in-process through ``cli.main``. The per-scale filtering is checked with a fake model whose
detections are fixed boxes, so the survivors of every resolution are known by hand."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sniper_ext import cli
from sniper_ext.chips import ImageRecord
from sniper_ext.config import InferenceConfig, apply_overrides, preset
from sniper_ext.data import load_coco, open_images
from sniper_ext.evaluation import METRIC_KEYS
from sniper_ext.inference import MultiScaleInference, inference_config, read_results_jsonl

#: the tiny preset's numbers for a short run: 16 synthetic images, in-process data loading
TRAIN_SET = ["data.synthetic_images=16", "data.workers=0", "mode=positives"]
TRAIN_ITERS = 40
FAST = ["--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny detector trained for TRAIN_ITERS iterations; (checkpoint, GT json, image root)."""
    from sniper_ext.engine import train

    out = str(tmp_path_factory.mktemp("tiny_run"))
    cfg = apply_overrides(preset("tiny"), TRAIN_SET)
    train(cfg, out, max_iter=TRAIN_ITERS, progress=False)
    return os.path.join(out, "last.pt"), os.path.join(out, "data", "train.json"), os.path.join(out, "data", "images")


@pytest.fixture(scope="module")
def inferred(ckpt, tmp_path_factory):
    """`sniper infer` over the training images: (paths dict, stdout)."""
    c, gt, root = ckpt
    d = tmp_path_factory.mktemp("infer")
    out, jl = str(d / "r.json"), str(d / "r.jsonl")
    cap = _Capture()
    with cap:
        rc = cli.main(
            ["infer", "--checkpoint", c, "--annotations", gt, "--image-root", root, "--out", out, "--jsonl", jl] + FAST
        )
    assert rc == 0, cap.err
    return {"results": out, "jsonl": jl, "dir": d}, cap.out


class _Capture:
    """stdout/stderr of an in-process command (capsys is function-scoped)."""

    def __enter__(self):
        import contextlib
        import io

        self._o, self._e = io.StringIO(), io.StringIO()
        self._cm = [contextlib.redirect_stdout(self._o), contextlib.redirect_stderr(self._e)]
        for cm in self._cm:
            cm.__enter__()
        return self

    def __exit__(self, *exc):
        for cm in reversed(self._cm):
            cm.__exit__(*exc)
        self.out, self.err = self._o.getvalue(), self._e.getvalue()


def _error(capsys, argv, *fragments, code=1):
    assert cli.main(argv) == code
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("sniper "), err  # one line
    for f in fragments:
        assert f in err, (f, err)
    return err


# ---------------------------------------------------------------------------------------------
# sniper infer / eval / detect on a trained checkpoint


def test_infer_writes_coco_results_that_round_trip(ckpt, inferred):
    import contextlib
    import io

    from pycocotools.coco import COCO

    paths, out = inferred
    _, gt, _ = ckpt
    assert "images/s" in out and "Soft-NMS merge" in out and "16 images at 3 resolution(s)" in out
    with open(paths["results"]) as f:
        results = json.load(f)
    with open(gt) as f:
        coco = json.load(f)
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    assert results, "a trained detector finds something"
    per_image = {}
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score"}
        assert r["image_id"] in sizes and r["category_id"] in {c["id"] for c in coco["categories"]}
        x, y, w, h = r["bbox"]
        W, H = sizes[r["image_id"]]
        assert w >= 0 and h >= 0 and -0.01 <= x and x + w <= W + 0.01 and -0.01 <= y and y + h <= H + 0.01
        assert 1e-3 <= r["score"] <= 1
        per_image.setdefault(r["image_id"], []).append(r["score"])
    top = preset("tiny").inference.detections_per_image
    for scores in per_image.values():
        assert len(scores) <= top and scores == sorted(scores, reverse=True)
    # pycocotools reads the file back as it is
    with contextlib.redirect_stdout(io.StringIO()):
        dt = COCO(gt).loadRes(paths["results"])
    assert len(dt.getAnnIds()) == len(results)
    # the JSON lines hold the same detections, one line per image (all 16, in id order)
    with open(paths["jsonl"]) as f:
        lines = [json.loads(x) for x in f]
    assert [x["image_id"] for x in lines] == sorted(sizes) and all("file_name" in x for x in lines)
    assert read_results_jsonl(paths["jsonl"]) == sorted(results, key=lambda r: r["image_id"])


def test_results_evaluate_with_sniper_eval(ckpt, inferred, capsys):
    paths, _ = inferred
    _, gt, _ = ckpt
    m = str(paths["dir"] / "m.json")
    assert cli.main(["eval", "--annotations", gt, "--results", paths["results"], "--out", m]) == 0
    with open(m) as f:
        metrics = json.load(f)
    assert all(k in metrics for k in METRIC_KEYS) and metrics["num_images"] == 16
    assert 0 <= metrics["AP"] <= 1


def test_eval_checkpoint_runs_inference_then_evaluates(ckpt, inferred, tmp_path, capsys):
    c, gt, root = ckpt
    m = tmp_path / "metrics.json"
    assert cli.main(["eval", "--annotations", gt, "--checkpoint", c, "--image-root", root, "--out", str(m)] + FAST) == 0
    out = capsys.readouterr().out
    metrics = json.loads(m.read_text())
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert k in metrics
    assert metrics["num_images"] == 16
    # the results beside --out are those of `sniper infer` (same code, same checkpoint)
    mine = json.loads((tmp_path / "metrics_results.json").read_text())
    with open(inferred[0]["results"]) as f:
        assert mine == json.load(f)
    assert metrics["num_detections"] == len(mine) and "images/s" in out


def test_eval_wants_exactly_one_of_results_and_checkpoint(ckpt, capsys):
    c, gt, _ = ckpt
    _error(capsys, ["eval", "--annotations", gt], "one of the arguments --results --checkpoint is required", code=2)
    _error(capsys, ["eval", "--annotations", gt, "--results", gt, "--checkpoint", c], "not allowed with", code=2)
    _error(
        capsys,
        ["eval", "--annotations", gt, "--results", gt, "--single-scale"],
        "--single-scale: only with --checkpoint",
        code=2,
    )


def test_detect_writes_pictures_and_json(ckpt, tmp_path, capsys):
    c, _, root = ckpt
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(os.path.join(root, "train_000002.png"), src / "b.png")
    with Image.open(os.path.join(root, "train_000001.png")) as im:
        im.convert("RGB").save(src / "a.jpg", quality=95)
        size_a = im.size
    (src / "notes.txt").write_text("not an image: ignored")
    out = tmp_path / "pics"
    assert cli.main(["detect", str(src), "--checkpoint", c, "--out", str(out), "--score-threshold", "0.05"] + FAST) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads((out / "detections.json").read_text())
    assert [(i["id"], i["file_name"]) for i in doc["images"]] == [(1, "a.jpg"), (2, "b.png")]
    assert doc["images"][0]["width"], doc["images"][0]["height"] == size_a
    assert [c["name"] for c in doc["categories"]] == ["disc", "square", "triangle"]
    assert all(d["score"] >= 0.05 for d in doc["detections"])
    for name in ("a_detections.png", "b_detections.png"):
        with Image.open(out / name) as pic:
            assert pic.format == "PNG" and pic.width >= 640  # upscaled, with a title bar and a legend
    # one file
    one = tmp_path / "one"
    assert cli.main(["detect", str(src / "b.png"), "--checkpoint", c, "--out", str(one), "--single-scale"] + FAST) == 0
    assert sorted(os.listdir(one)) == ["b_detections.png", "detections.json"]


def test_single_and_multi_scale_run_at_their_resolutions(ckpt, monkeypatch):
    from sniper_ext.runtime import load_detector

    c, gt, root = ckpt
    model, cfg, cats = load_detector(c)
    records = load_coco(gt)[:2]
    seen = []
    real = model.detect

    def spy(images, wh, **kw):
        seen.append(tuple(images.shape[2:]))
        return real(images, wh, **kw)

    monkeypatch.setattr(model, "detect", spy)
    multi = MultiScaleInference.for_config(model, cfg, config=inference_config(cfg.inference)).run(records, root, cats)
    n_multi = len(seen)
    one = inference_config(cfg.inference, single_scale=True)
    single = MultiScaleInference.for_config(model, cfg, config=one).run(records, root, cats)
    assert n_multi == 3 and len(seen) == 4  # one batch per resolution (2 images fit a batch)
    # the images' sizes at each resolution, padded to 16: the middle one only for single-scale
    assert seen[3] == seen[1] and len({seen[0], seen[1], seen[2]}) == 3
    assert max(seen[0]) > max(seen[1]) > max(seen[2])
    for run in (multi, single):
        assert len(run.detections) == 2 and run.stats["images"] == 2 and 0 <= run.merge_share < 1


def test_inference_config_overrides_and_single_scale():
    icfg = preset("tiny").inference
    one = inference_config(icfg, single_scale=True)
    assert one.resolutions == (tuple(icfg.resolutions[1]),) and one.valid_ranges == ((0.0, math.inf),)
    two = inference_config(
        icfg, overrides=["inference.resolutions=[[100,200],[50,80]]", 'inference.valid_ranges=[[0,40],[30,"inf"]]']
    )
    assert two.resolutions == ((100, 200), (50, 80)) and two.valid_ranges == ((0.0, 40.0), (30.0, math.inf))
    assert inference_config(two, single_scale=True).resolutions == ((50, 80),)  # middle of two: the second
    from sniper_ext.config import ConfigError

    for bad, msg in (
        (["solver.base_lr=1"], "only inference.*"),
        (["inference.nope=1"], "unknown key"),
        (["inference.resolutions=[[100,200]]"], "1 resolutions but 3 valid ranges"),
        (['inference.valid_ranges=[[0,90],[50,40],[75,"inf"]]'], "valid_ranges[1]"),
        (["inference.batch_size=0"], "batch_size"),
        (["inference.nms_method=greedy"], "nms_method"),
    ):
        with pytest.raises(ConfigError, match=None) as e:
            inference_config(icfg, overrides=bad)
        assert msg in str(e.value), (bad, str(e.value))


# ---------------------------------------------------------------------------------------------
# Per-scale valid ranges on hand cases (a fake model with fixed detections)

#: box sizes sqrt(w*h) in original pixels; squares, far apart (no Soft-NMS interaction)
SIZES = (10.0, 15.0, 18.0, 20.0, 30.0, 35.0, 40.0, 60.0)
#: 400x400 images; resolutions that scale them by 2, 1 and 0.5
RESOLUTIONS = ((800, 1600), (400, 800), (200, 400))
#: the squares side by side, 5 px apart, inside the image
LEFT = np.cumsum((0.0,) + SIZES[:-1]) + 5 * np.arange(len(SIZES))
RANGES = ((0.0, 20.0), (15.0, 40.0), (30.0, math.inf))


class FixedDetector(torch.nn.Module):
    """Detects the squares of SIZES (original pixels, scaled to the batch), class = the
    resolution's index + 1 (read from the image size), and one weak box scoring below 1e-3."""

    num_classes = 3

    def detect(self, images, image_wh, **kw):
        out = []
        for wh in image_wh.tolist():
            s = wh[0] / 400.0
            res = {2.0: 0, 1.0: 1, 0.5: 2}[s]
            boxes = [[x, 0.0, x + z, z] for x, z in zip(LEFT.tolist(), SIZES)] + [[0, 380, 10, 390]]
            boxes = torch.tensor(boxes) * s
            scores = torch.zeros(len(boxes), 4)
            scores[:, 0] = 0.1
            scores[:-1, res + 1] = 0.9
            scores[-1, res + 1] = 5e-4  # below the score threshold at every scale
            out.append({"boxes": boxes, "scores": scores})
        return out


@pytest.fixture
def blank_images(tmp_path):
    for k in (1, 2):
        Image.new("RGB", (400, 400), (120, 120, 120)).save(tmp_path / f"{k}.png")
    return [ImageRecord(k, 400, 400, [], [], file_name=f"{k}.png") for k in (1, 2)], str(tmp_path)


def _sizes_by_label(dets):
    boxes, scores, labels = dets
    side = boxes[:, 2] - boxes[:, 0]
    return {lab: sorted(side[labels == lab].round(3).tolist()) for lab in (1, 2, 3)}


def test_valid_range_filtering_per_scale(blank_images):
    records, root = blank_images
    icfg = InferenceConfig(resolutions=RESOLUTIONS, valid_ranges=RANGES, batch_size=2, detections_per_image=100)
    dets = MultiScaleInference(FixedDetector(), icfg).detect(records, root)
    for d in dets:
        assert _sizes_by_label(d) == {
            1: [10.0, 15.0, 18.0],  # x2: [0, 20): 20 is out (hi excluded)
            2: [15.0, 18.0, 20.0, 30.0, 35.0],  # x1: [15, 40): 15 in (lo included), 40 out
            3: [30.0, 35.0, 40.0, 60.0],  # x0.5: [30, inf)
        }
        np.testing.assert_allclose(d[1], 0.9, rtol=1e-6)  # disjoint boxes: Soft-NMS leaves the scores


def test_single_scale_keeps_every_size_at_the_middle_resolution(blank_images):
    records, root = blank_images
    icfg = inference_config(
        InferenceConfig(resolutions=RESOLUTIONS, valid_ranges=RANGES, detections_per_image=100), single_scale=True
    )
    dets = MultiScaleInference(FixedDetector(), icfg).detect(records, root)
    for d in dets:
        assert _sizes_by_label(d) == {1: [], 2: sorted(SIZES), 3: []}


def test_top_k_per_image(blank_images):
    records, root = blank_images
    icfg = InferenceConfig(resolutions=RESOLUTIONS, valid_ranges=RANGES, detections_per_image=5)
    for boxes, scores, labels in MultiScaleInference(FixedDetector(), icfg).detect(records, root):
        assert len(boxes) == len(scores) == len(labels) == 5


# ---------------------------------------------------------------------------------------------
# Inputs: --images folders, errors


def test_open_images_of_a_folder(tmp_path):
    for name, size in (("b.PNG", (30, 20)), ("a.jpg", (40, 50)), ("c.jpeg", (8, 9))):
        Image.new("RGB", size).save(tmp_path / name, format="JPEG" if "jp" in name else "PNG")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "x.txt").write_text("")
    (tmp_path / "sub.png").mkdir()
    ds = open_images(str(tmp_path))
    records, root = ds.records, ds.image_root
    assert root == str(tmp_path)
    assert [(r.image_id, r.file_name, r.width, r.height) for r in records] == [
        (1, "a.jpg", 40, 50),
        (2, "b.PNG", 30, 20),
        (3, "c.jpeg", 8, 9),
    ]
    ds1 = open_images(str(tmp_path / "b.PNG"))
    one, root1 = ds1.records, ds1.image_root
    assert root1 == str(tmp_path) and [(r.image_id, r.file_name) for r in one] == [(1, "b.PNG")]


def test_missing_checkpoint(ckpt, tmp_path, capsys):
    _, gt, root = ckpt
    nope = str(tmp_path / "nope.pt")
    _error(
        capsys,
        ["infer", "--checkpoint", nope, "--annotations", gt, "--out", str(tmp_path / "r.json")],
        f"--checkpoint {nope}: no such file",
    )
    _error(capsys, ["eval", "--checkpoint", nope, "--annotations", gt], "no such file")
    _error(
        capsys,
        ["detect", root, "--checkpoint", str(tmp_path), "--out", str(tmp_path / "p")],
        "is a directory without last.pt",
    )


def test_not_a_checkpoint(ckpt, tmp_path, capsys):
    _, gt, root = ckpt
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is no torch file")
    _error(
        capsys,
        [
            "infer",
            "--checkpoint",
            str(bad),
            "--annotations",
            gt,
            "--image-root",
            root,
            "--out",
            str(tmp_path / "r.json"),
        ]
        + FAST,
        str(bad),
        "not a readable sniper_ext checkpoint",
    )
    torch.save({"weights": 1}, tmp_path / "other.pt")
    _error(
        capsys,
        ["detect", root, "--checkpoint", str(tmp_path / "other.pt"), "--out", str(tmp_path / "p")] + FAST,
        "other.pt",
        "not a sniper_ext checkpoint",
    )


def test_unreadable_image(ckpt, tmp_path, capsys):
    c, gt, root = ckpt
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(os.path.join(root, "train_000001.png"), src / "a.png")
    (src / "b.png").write_text("not a png")
    _error(
        capsys,
        ["infer", "--checkpoint", c, "--images", str(src), "--out", str(tmp_path / "r.json")] + FAST,
        "b.png",
        "image 2",
    )
    # an image of an annotations file: checked before inference too
    coco = json.loads(open(gt).read())
    coco["images"] = coco["images"][:1]
    coco["images"][0]["file_name"] = "b.png"
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    (src / "gt.json").write_text(json.dumps(coco))
    _error(
        capsys,
        ["eval", "--annotations", str(src / "gt.json"), "--checkpoint", c] + FAST,
        "b.png",
        "not a readable image",
    )
    assert not (tmp_path / "r.json").exists()


def test_class_count_mismatch(ckpt, tmp_path, capsys):
    c, gt, root = ckpt
    coco = json.loads(open(gt).read())
    coco["categories"] = [{"id": k, "name": f"c{k}"} for k in range(1, 81)]
    path = tmp_path / "GT.json"
    path.write_text(json.dumps(coco))
    _error(
        capsys,
        [
            "infer",
            "--checkpoint",
            c,
            "--annotations",
            str(path),
            "--image-root",
            root,
            "--out",
            str(tmp_path / "r.json"),
        ]
        + FAST,
        f"checkpoint has 3 classes, {path} has 80 categories",
    )


def test_folder_without_images(ckpt, tmp_path, capsys):
    c, _, _ = ckpt
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("")
    _error(
        capsys,
        ["detect", str(tmp_path / "empty"), "--checkpoint", c, "--out", str(tmp_path / "p")] + FAST,
        "no images in this folder",
    )
    _error(
        capsys,
        ["infer", "--checkpoint", c, "--images", str(tmp_path / "gone"), "--out", str(tmp_path / "r.json")],
        "gone",
    )


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--set", "solver.base_lr=1"], "only inference.* keys"),
        (["--set", "inference.nope=1"], "unknown key 'nope'"),
        (["--set", "inference.resolutions=[[320,512]]"], "1 resolutions but 3 valid ranges"),
        (["--images", "x"], "not allowed with argument --annotations"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_bad_options(ckpt, tmp_path, capsys, extra, fragment):
    c, gt, root = ckpt
    argv = ["infer", "--checkpoint", c, "--annotations", gt, "--image-root", root, "--out", str(tmp_path / "r.json")]
    _error(capsys, argv + FAST + extra, fragment, code=2)
    assert not (tmp_path / "r.json").exists()


def test_image_root_only_with_annotations(ckpt, tmp_path, capsys):
    c, _, root = ckpt
    _error(
        capsys,
        ["infer", "--checkpoint", c, "--images", root, "--image-root", root, "--out", str(tmp_path / "r.json")],
        "--image-root: only with --annotations",
        code=2,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(ckpt, tmp_path, capsys):
    c, gt, root = ckpt
    argv = ["infer", "--checkpoint", c, "--annotations", gt, "--image-root", root, "--out", str(tmp_path / "r.json")]
    _error(capsys, argv + FAST + ["--device", "cuda"], "--device cuda:", "no GPU")


# ---------------------------------------------------------------------------------------------
# A detector trained long enough to find things (minutes on a loaded 2-core machine: slow)


@pytest.mark.slow
def test_trained_tiny_checkpoint_finds_the_objects_of_its_training_images(tmp_path):
    """250 iterations on 4 synthetic images with the preset's lr (about 35 s on an idle 2-core CPU):
    the largest object of every training image is found, IoU > 0.5 with the right class scoring > 0.3."""
    from sniper_ext.engine import train
    from sniper_ext.ops import box_iou
    from sniper_ext.runtime import load_detector

    settings = ["data.synthetic_images=4", "data.workers=0", "mode=positives", "solver.epochs=1000"]
    settings += ["solver.steps=[1000]", "solver.warmup_iters=20"]
    train(apply_overrides(preset("tiny"), settings), str(tmp_path), max_iter=250, progress=False)
    model, cfg, cats = load_detector(str(tmp_path / "last.pt"))
    records = load_coco(str(tmp_path / "data" / "train.json"))
    run = MultiScaleInference.for_config(model, cfg).run(records, str(tmp_path / "data" / "images"), cats)
    for r, (boxes, scores, labels) in zip(records, run.detections):
        g = int(np.argmax((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])))
        strong = (scores > 0.3) & (labels == r.labels[g])  # synthetic category ids are 1..C
        iou = box_iou(torch.tensor(r.boxes[g : g + 1]), torch.from_numpy(boxes[strong]).double())
        assert iou.numel() and float(iou.max()) > 0.5, (r.image_id, r.boxes[g], iou)
