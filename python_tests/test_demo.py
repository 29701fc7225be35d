"""`sniper demo`: the contract files from a very short run, the distractor count on hand cases, and
bad options."""

import json

import numpy as np
import pytest

from sniper_ext import cli
from sniper_ext.chips import ImageRecord
from sniper_ext.demo import VARIANTS, distractor_false_positives, variant_config


def test_demo_writes_claims_summary_and_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = cli.main(
        ["demo", "--out", str(out), "--iters", "3", "--train-images", "4", "--val-images", "2", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    claims = json.loads((out / "claims.json").read_text())
    assert set(claims) == set(VARIANTS)
    for name, v in claims.items():
        assert {"AP", "APs", "pixels_per_image", "false_positives_on_distractors"} <= set(v), name
        assert v["detector_iterations"] == 3 and v["pixels_per_image"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"pixels_vs_single_scale", "negatives", "three_vs_two_scales"} <= set(summary["claims"])
    assert summary["setup"]["detector_iterations"] == 3
    for name in VARIANTS:
        assert (out / name / "last.pt").exists() and list(out.glob(f"detections_{name}_*.png"))
    assert (out / "chips_sniper.png").exists()
    printed = capsys.readouterr().out
    assert "SNIPER claims in miniature" in printed and "pixels: SNIPER processes" in printed


def test_distractor_false_positives_hand_cases():
    rec = ImageRecord(image_id=7, width=100, height=100, boxes=[[0, 0, 10, 10]], labels=[1])
    distractors = {7: np.array([[50.0, 50, 70, 70], [0, 0, 10, 10]])}
    boxes = np.array([[50, 50, 70, 70], [51, 51, 70, 70], [0, 0, 10, 10], [80, 80, 90, 90], [50, 50, 70, 70]])
    scores = np.array([0.9, 0.5, 0.9, 0.9, 0.1])
    dets = [(boxes, scores, np.ones(5, np.int64))]
    # rows 0 and 1 lie on a distractor and on no GT; row 2 is on a GT (also a distractor box): not
    # counted; row 3 is on nothing; row 4 scores below the threshold
    assert distractor_false_positives(dets, [rec], distractors, score=0.2) == 2
    assert distractor_false_positives(dets, [rec], {}, score=0.2) == 0


def test_variants_and_bad_options(tmp_path, capsys):
    cfg = variant_config("two_scales", 10, train_json="t.json", image_root="i")
    assert len(cfg.chips.scales) == 2 and len(cfg.inference.resolutions) == 2
    assert variant_config("single_scale", 10, train_json="t.json", image_root="i").mode == "single_scale"
    with pytest.raises(ValueError, match="unknown demo variant"):
        variant_config("nope", 10, train_json="t.json", image_root="i")
    assert cli.main(["demo", "--variants", "sniper,nope", "--out", str(tmp_path)]) == 2
    assert "--variants: unknown nope" in capsys.readouterr().err
