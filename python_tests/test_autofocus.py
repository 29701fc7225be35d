"""AutoFocus inference (method §11) on hand-made cases with a fixed-map model: the cascade's
regions, an empty map stopping an image, focus stacking's border pruning, the pixel shares; the
pruning rule and the settings' checks on their own; and the command line end to end with a
trained tiny_autofocus checkpoint (infer, eval, detect --autofocus)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sniper_ext.chips import ImageRecord
from sniper_ext.config import InferenceConfig, preset
from sniper_ext.errors import ConfigError
from sniper_ext.inference import AutoFocusInference, cascade_order, check_autofocus_config, chip_edge_keep


class FixedMapModel(torch.nn.Module):
    """A stand-in detector: its FocusPixel map is 1 on the cells holding bright pixels; it detects
    the bright region's bounding box (class 1, score 0.9) and a 6-px box at the right edge of
    whatever region it sees, half-way down (class 2, score 0.8)."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.focus = torch.nn.Identity()  # "has the head"
        self.calls: list = []

    def detect(self, images, image_wh, *, proposals_per_image=300, focus=False, **_):
        self.calls.append(tuple(images.shape))
        out = []
        for img, (w, h) in zip(images, image_wh.tolist()):
            w, h = int(w), int(h)
            bright = img[:, :h, :w].float().mean(0) > 128
            boxes, scores = [], []
            if bright.any():
                ys, xs = bright.nonzero(as_tuple=True)
                boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0])
                scores.append([0.1, 0.9, 0.0])
            boxes.append([w - 6.0, h / 2 - 3, w, h / 2 + 3])
            scores.append([0.2, 0.0, 0.8])
            o = {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores)}
            if focus:
                gh, gw = images.shape[2] // 16, images.shape[3] // 16
                full = torch.zeros(images.shape[2], images.shape[3], dtype=torch.bool)
                full[:h, :w] = bright
                o["focus"] = full.view(gh, 16, gw, 16).any(3).any(1).float()
            out.append(o)
        return out


def _records(tmp_path, images: dict) -> list:
    recs = []
    for k, (name, arr) in enumerate(images.items()):
        Image.fromarray(arr).save(tmp_path / name)
        recs.append(
            ImageRecord(image_id=k + 1, width=arr.shape[1], height=arr.shape[0], boxes=[], labels=[], file_name=name)
        )
    return recs


def _icfg(**kw):
    base = dict(
        resolutions=((512, 512), (256, 256), (128, 128)),
        valid_ranges=((0.0, math.inf),) * 3,
        autofocus_valid_ranges=((0.0, math.inf),) * 3,
        autofocus_thresholds=(0.5, 0.5),
        autofocus_dilations=(1, 1),
        autofocus_min_chip=(2, 2),
        autofocus_border=2.0,
        score_threshold=0.05,
        batch_size=2,
    )
    base.update(kw)
    return InferenceConfig(**base)


def test_cascade_on_hand_made_images(tmp_path):
    square = np.zeros((256, 256, 3), np.uint8)
    square[96:128, 96:128] = 255  # a 32 px bright square, well inside
    dark = np.zeros((256, 256, 3), np.uint8)
    recs = _records(tmp_path, {"square.png": square, "dark.png": dark})
    model = FixedMapModel()
    engine = AutoFocusInference(model, _icfg())
    stats: dict = {}
    dets = engine.detect(recs, str(tmp_path), stats=stats)
    px = stats["pixels"]
    # step 0 (128 px, scale 0.5): both whole images; the square lies in cells 3..3 at that scale
    # -> grown to 2x2 cells; step 1 and 2 only on the square image's chips
    assert stats["resolutions"] == [[128, 128], [256, 256], [512, 512]]
    assert px["regions"][0] == 2 and px["regions"][1] == 1 and px["regions"][2] == 1
    assert px["share_per_scale"][0] == 1.0 and 0 < px["share_per_scale"][1] < 0.5
    assert px["share"] < 0.5
    assert px["full"][0] == 2 * 128 * 128 and px["full"][2] == 2 * 512 * 512
    # the dark image has no chip: processed only once
    assert stats["chips"][1] == [] and len(stats["chips"][0]) == 2
    res_idx = [c[0] for c in stats["chips"][0]]
    assert res_idx == [1, 0]  # the 256 step, then the 512 step (indices into resolutions)
    for _, x1, y1, x2, y2 in stats["chips"][0]:
        assert x1 <= 96 and y1 <= 96 and x2 >= 128 and y2 >= 128  # each chip holds the square
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
    # the square is found (class 1), at its place in original pixels
    boxes, scores, labels = dets[0]
    sq = boxes[labels == 1]
    assert len(sq) >= 1 and np.allclose(sq[np.argmax(scores[labels == 1])], [96, 96, 128, 128], atol=1.5)
    # the right-edge box: kept from the whole image (its edge is the image border), dropped at the
    # chips whose right edge is inside the image
    edge = boxes[labels == 2]
    assert len(edge) >= 1 and np.all(edge[:, 2] >= 255)
    assert len(dets[1][0]) == 1 and dets[1][2][0] == 2  # the dark image: only its edge box


def test_chip_batches_are_grouped_and_padded_per_batch(tmp_path):
    imgs = {}
    for k in range(3):
        a = np.zeros((256, 256, 3), np.uint8)
        a[20 + 60 * k : 40 + 60 * k, 30:50] = 255
        imgs[f"i{k}.png"] = a
    recs = _records(tmp_path, imgs)
    model = FixedMapModel()
    AutoFocusInference(model, _icfg(batch_size=4)).detect(recs, str(tmp_path))
    # step 0: the three whole images in one batch of 64x64 (scale 0.25 of ... 128/256=0.5 -> 128)
    assert model.calls[0] == (3, 3, 128, 128)
    # later steps: one call per step holding every image's chips (batched), multiples of 16
    assert len(model.calls) == 3 and all(c[0] == 3 and c[2] % 16 == 0 and c[3] % 16 == 0 for c in model.calls[1:])


def test_chip_edge_keep_rule():
    boxes = torch.tensor(
        [
            [11.0, 50, 30, 60],  # 1 px from the chip's left edge (x=10, inside the image): dropped
            [40.0, 50, 60, 60],  # far from every edge: kept
            [0.5, 50, 5, 60],  # at the image's left border... but the chip's left edge is at 10: dropped
            [150.0, 50, 199.5, 60],  # at the chip's right edge, which is the image border: kept
        ]
    )
    keep = chip_edge_keep(boxes, torch.tensor([10.0, 0, 200, 100]), (200, 300), 10.0)
    assert keep.tolist() == [False, True, False, True]
    # a chip equal to the image prunes nothing
    assert chip_edge_keep(boxes, torch.tensor([0.0, 0, 200, 300]), (200, 300), 10.0).all()


def test_settings_checked():
    assert cascade_order(((1400, 2000), (800, 1280), (480, 512))) == [2, 1, 0]
    assert cascade_order(((480, 512), (1400, 2000))) == [0, 1]
    with pytest.raises(ConfigError, match="autofocus_thresholds"):
        check_autofocus_config(_icfg(autofocus_thresholds=(0.5,)))
    with pytest.raises(ConfigError, match="autofocus_valid_ranges"):
        check_autofocus_config(_icfg(autofocus_valid_ranges=((0, 10),)))
    plain = FixedMapModel()
    plain.focus = None
    with pytest.raises(ConfigError, match="FocusPixel head"):
        AutoFocusInference(plain, _icfg())
    # COCO's preset: the paper's numbers
    icfg = preset("r101_autofocus").inference
    assert icfg.autofocus_thresholds == (0.02, 0.2) and icfg.autofocus_min_chip == (16, 20)
    assert icfg.autofocus_dilations == (3, 3) and icfg.autofocus_border == 10.0
    check_autofocus_config(icfg)
    assert dataclasses.replace(icfg, resolutions=((800, 1280),)).resolutions  # plain inference unaffected


def test_cli_autofocus_end_to_end(tmp_path, capsys):
    """A tiny_autofocus checkpoint trained for a few iterations: infer, eval and detect --autofocus."""
    from sniper_ext import cli
    from sniper_ext.data import make_synthetic_dataset

    data = make_synthetic_dataset(str(tmp_path / "data"), num_images=4, seed=1)
    run = tmp_path / "run"
    common = ["--workers", "0", "--quiet"]
    rc = cli.main(
        ["train", "--preset", "tiny_autofocus", "--out", str(run), "--annotations", data, "--batch-size", "2",
         "--image-root", str(tmp_path / "data" / "images"),
         "--set", "solver.max_iter=2", "--set", "solver.log_every=1", *common]
    )  # fmt: skip
    assert rc == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "focus_cls" in m]
    assert logged and all("acc_focus_pos" in m and "acc_focus_neg" in m for m in logged)
    out = tmp_path / "r.json"
    low = ["--focus-threshold", "0.0", "0.0"]  # every cell on: chips at every step
    images = ["--image-root", str(tmp_path / "data" / "images")]
    assert (
        cli.main(
            [
                "infer",
                "--checkpoint",
                str(run),
                "--annotations",
                data,
                *images,
                "--out",
                str(out),
                "--autofocus",
                *low,
                *common,
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r_autofocus.json").read_text())
    assert report["settings"]["thresholds"] == [0.0, 0.0]
    assert report["pixels"]["regions"][0] == 4 and report["pixels"]["regions"][1] >= 4
    assert 0 < report["pixels"]["share"] <= 1.0 and report["images_per_s"] > 0
    assert len(report["focus_chips"]) == 4 and all(e["chips"] for e in report["focus_chips"])
    assert isinstance(json.loads(out.read_text()), list)
    printed = capsys.readouterr().out
    assert "AutoFocus:" in printed and "of the full pyramid's pixels" in printed
    m = tmp_path / "m.json"
    assert (
        cli.main(
            ["eval", "--annotations", data, *images, "--checkpoint", str(run), "--out", str(m), "--autofocus", *common]
        )
        == 0
    )
    assert (tmp_path / "m_autofocus.json").exists() and "AP" in json.loads(m.read_text())
    pics = tmp_path / "pics"
    img = tmp_path / "data" / "images"
    assert (
        cli.main(["detect", str(img), "--checkpoint", str(run), "--out", str(pics), "--autofocus", *low, *common]) == 0
    )
    assert len(list(pics.glob("*_detections.png"))) == 4
    # option misuse: one line, exit 2
    assert (
        cli.main(
            [
                "infer",
                "--checkpoint",
                str(run),
                "--annotations",
                data,
                *images,
                "--out",
                str(out),
                "--focus-threshold",
                "0.1",
                "0.1",
            ]
        )
        == 2
    )
    assert "only with --autofocus" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "infer",
                "--checkpoint",
                str(run),
                "--annotations",
                data,
                *images,
                "--out",
                str(out),
                "--autofocus",
                "--focus-threshold",
                "0.1",
            ]
        )
        == 2
    )
    assert "2 cascade step(s)" in capsys.readouterr().err
