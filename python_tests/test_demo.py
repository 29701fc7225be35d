"""`sniper demo`: the contract files from a very short run, the distractor count on hand cases, and
bad options."""

import json

import numpy as np
import pytest

from sniper_ext import cli
from sniper_ext.chips import ImageRecord
from sniper_ext.data import load_coco, make_synthetic_dataset
from sniper_ext.demo import VARIANTS, distractor_false_positives, variant_config


def test_demo_writes_claims_summary_and_pictures(tmp_path, capsys):
    """Six variants, two seeds: per-seed values, mean and spread, verdicts, pictures; AutoFocus
    beside the full pyramid."""
    out = tmp_path / "demo"
    rc = cli.main(
        ["demo", "--out", str(out), "--iters", "3", "--train-images", "4", "--val-images", "2", "--quiet", "--seeds", "2"]
    )  # fmt: skip
    assert rc == 0
    claims = json.loads((out / "claims.json").read_text())
    assert set(claims) == set(VARIANTS) and "pyramid" in claims
    for name, v in claims.items():
        assert {"AP", "APs", "pixels_per_image", "false_positives_on_distractors"} <= set(v), name
        assert v["detector_iterations"] == 3 and v["pixels_per_image"] > 0
        assert v["computed_pixels_per_image"] >= v["pixels_per_image"] * 0.99
        assert [p["seed"] for p in v["per_seed"]] == [0, 1] and v["seeds"] == [0, 1]
        assert v["spread"]["AP"]["min"] <= v["AP"] <= v["spread"]["AP"]["max"]
        assert 0 < v["anchor_coverage"] <= 1 and v["training_pixels_in_all"] > 0
        assert v["rpn_iterations"] == (3 if v["mode"] == "two_stage" else 0)
    af = claims["autofocus"]
    for part in ("autofocus", "full_pyramid"):
        assert {"AP", "APs", "pixel_share", "images_per_s"} <= set(af[part])
        assert [set(p[part]) >= {"AP", "APs", "pixel_share", "images_per_s"} for p in af["per_seed"]] == [True, True]
    assert af["full_pyramid"]["pixel_share"]["mean"] == 1.0 and 0 < af["autofocus"]["pixel_share"]["mean"] <= 1
    assert [p["threshold"] for p in af["autofocus_curve"]] == [0.005, 0.02, 0.1, 0.3]
    assert claims["single_scale"]["learning_rate"] == claims["pyramid"]["learning_rate"] == 0.025
    assert claims["sniper"]["learning_rate"] == 0.1
    summary = json.loads((out / "summary.json").read_text())
    assert {
        "sniper_vs_pyramid",
        "pixels",
        "negatives",
        "three_vs_two_scales",
        "sniper_vs_single_scale",
        "autofocus",
    } <= set(summary["claims"])
    assert summary["claims"]["negatives"]["verdict"] in ("reproduces", "reversed", "within noise")
    assert summary["setup"]["detector_iterations"] == 3 and summary["setup"]["seeds"] == [0, 1]
    for name in VARIANTS:
        assert (out / name / "seed0" / "last.pt").exists() and list(out.glob(f"detections_{name}_*.png"))
    assert (out / "chips_sniper.png").exists()
    printed = capsys.readouterr().out
    assert "SNIPER claims in miniature" in printed and "pyramid: AP" in printed and "AutoFocus: AP" in printed
    table = printed[printed.index("== SNIPER claims") :].splitlines()
    assert max(len(line) for line in table[:10]) <= 100  # the table fits a terminal


def test_protocol_one_lr_rule_and_the_anchors_reach_measured(tmp_path):
    from sniper_ext.demo import anchor_report, effective_lr

    path = make_synthetic_dataset(str(tmp_path), num_images=8, seed=3)
    records = load_coco(path)
    for name in VARIANTS:
        cfg = variant_config(name, 10, train_json=path, image_root=str(tmp_path / "images"))
        assert cfg.solver.base_lr == 0.1 and cfg.solver.reference_batch == 8  # one base, one rule
        samples = 2 if name in ("single_scale", "pyramid") else 8
        assert cfg.solver.batch_size == samples and effective_lr(cfg) == pytest.approx(0.1 * samples / 8)
        got = anchor_report(cfg, records)
        assert list(cfg.model.anchor_scales) == got["anchor_scales"] == [1.0, 2.0, 4.0, 7.0, 12.0, 20.0]
        assert 0 < got["anchor_coverage"] <= 1
        derived = anchor_report(cfg, records, derive=True)
        assert derived["anchor_coverage"] >= max(0.99, got["anchor_coverage"])
    # objects beyond the largest anchor (8 x 20 = 160 px) pull a larger scale in, tiny ones a smaller
    from sniper_ext.demo import anchor_coverage, covering_scales

    wh = np.array([[300.0, 290.0], [40, 40], [3, 3]])
    assert anchor_coverage(wh, 8, (0.5, 1, 2), (1, 2, 4, 7, 12, 20)) == pytest.approx(1 / 3)
    scales = covering_scales(wh, 8, (0.5, 1, 2), (1, 2, 4, 7, 12, 20))
    assert scales[-1] > 20 and scales[0] < 1 and anchor_coverage(wh, 8, (0.5, 1, 2), scales) == 1.0


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
    assert variant_config("pyramid", 10, train_json="t.json", image_root="i").mode == "pyramid"
    with pytest.raises(ValueError, match="unknown demo variant"):
        variant_config("nope", 10, train_json="t.json", image_root="i")
    assert cli.main(["demo", "--variants", "sniper,nope", "--out", str(tmp_path)]) == 2
    assert "--variants: unknown nope" in capsys.readouterr().err
