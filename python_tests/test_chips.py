"""The chip planner (method §1–§4), the chip database and the `sniper chips` command."""
import json
import math
import os

import numpy as np
import pytest

from sniper_ext import cli
from sniper_ext.chips import (
    NEGATIVE,
    POSITIVE,
    ChipConfig,
    ChipDB,
    ImageRecord,
    canvas_size,
    image_scales,
    load_coco,
    load_proposals,
    plan_dataset,
    plan_images,
    valid_at_scale,
)
from sniper_ext.datasets import synthetic_coco

CFG = ChipConfig()


def test_scales_and_canvas():
    s = image_scales(640, 480, CFG)
    assert s == [3.0, 1.667, 0.8]
    assert [canvas_size(640, 480, x) for x in s] == [(1920, 1440), (1067, 800), (512, 384)]
    assert canvas_size(5, 3, 0.5) == (3, 2)  # halves round up


def test_validity_rules():
    boxes = np.array([
        [0, 0, 50, 50],     # size 50: finest only (coarsest needs >= 120, middle >= 32 -> middle too)
        [0, 0, 100, 100],   # size 100: middle (100*1.667 <= 480) and not finest (>= 80)
        [0, 0, 300, 10],    # size 54.8 but 300*3 > 480: not finest; middle: 300*1.667 > 480: no
        [0, 0, 1.5, 40],    # narrower than 2 px: never
        [0, 0, 400, 400],   # size 400: coarsest only
        [0, 0, 20, 20],     # size 20: finest only
    ], dtype=float)
    valid = [valid_at_scale(boxes, i, s, CFG) for i, s in enumerate(image_scales(640, 480, CFG))]
    assert valid[0].tolist() == [True, False, False, False, False, True]
    assert valid[1].tolist() == [True, True, False, False, False, False]
    assert valid[2].tolist() == [False, False, False, False, True, False]
    crowd = np.array([True, False, False, False, False, False])
    assert not valid_at_scale(boxes, 0, 3.0, CFG, crowd=crowd)[0]


def _record():
    boxes = np.array([[10, 10, 40, 40], [300, 200, 330, 230], [100, 100, 200, 200], [0, 0, 600, 450],
                      [590, 10, 640, 60]], dtype=float)
    return ImageRecord(image_id=7, width=640, height=480, boxes=boxes, labels=np.arange(1, 6))


def _db(records, **kw):
    return plan_dataset(records, config=kw.pop("config", CFG), progress=False, **kw)


def test_positive_chips_cover_valid_gt_and_assign_each_once():
    rec = _record()
    db = _db([rec])
    for si, s in enumerate(image_scales(640, 480, CFG)):
        valid = valid_at_scale(rec.boxes, si, s, CFG)
        chips = np.flatnonzero((db.chip_scale_index == si) & (db.chip_kind == POSITIVE))
        cw, ch = canvas_size(640, 480, s)
        for g in np.flatnonzero(valid):
            b = rec.boxes[g] * s
            inside = [c for c in chips if (db.chip_canvas[c][:2] <= b[:2]).all() and (b[2:] <= db.chip_canvas[c][2:]).all()]
            assert inside, f"valid GT {g} at scale {si} not covered"
            # Valid in exactly one chip: the one it overlaps most, first on ties.
            owners = [c for c in chips if g in db.chip_gt(c)["index"][db.chip_gt(c)["valid"]]]
            assert owners == [inside[0]]
        for c in chips:
            assert db.chip_canvas[c][2] <= cw and db.chip_canvas[c][3] <= ch
            assert db.chip_canvas[c][2] - db.chip_canvas[c][0] <= CFG.chip_size


def test_gt_cropping_into_chip_pixels():
    rec = _record()
    db = _db([rec])
    for c in range(len(db)):
        s, chip = db.chip_scale[c], db.chip_canvas[c]
        gt = db.chip_gt(c)
        lo, hi = CFG.valid_ranges[db.chip_scale_index[c]]
        assert np.allclose(db.chip_valid_range[c], [lo * s, hi * s])
        for box, idx in zip(gt["boxes"], gt["index"]):
            want = rec.boxes[idx] * s
            want = np.array([np.clip(want[0], chip[0], chip[2]), np.clip(want[1], chip[1], chip[3]),
                             np.clip(want[2], chip[0], chip[2]), np.clip(want[3], chip[1], chip[3])])
            want -= [chip[0], chip[1], chip[0], chip[1]]
            assert np.allclose(box, want)
            assert box[2] - box[0] >= CFG.min_box_size and box[3] - box[1] >= CFG.min_box_size
        # Every GT that intersects the chip by at least the minimum crop is carried.
        g = rec.boxes * s
        w = np.minimum(g[:, 2], chip[2]) - np.maximum(g[:, 0], chip[0])
        h = np.minimum(g[:, 3], chip[3]) - np.maximum(g[:, 1], chip[1])
        assert set(gt["index"].tolist()) == set(np.flatnonzero((w >= 2) & (h >= 2)).tolist())
    # The big box (index 3) is invalid at the finest scale but still appears in its chips.
    finest = np.flatnonzero(db.chip_scale_index == 0)
    carried = [(i, v) for c in finest for i, v in zip(db.chip_gt(c)["index"], db.chip_gt(c)["valid"]) if i == 3]
    assert carried and not any(v for _, v in carried)


def test_negative_chips_from_proposals():
    rec = _record()
    # 30 proposals in an empty region (valid at the finest scale), 30 inside GT areas.
    rng = np.random.default_rng(0)
    xy = rng.uniform([420, 300], [470, 330], (30, 2))
    clutter = np.concatenate([xy, xy + 15], 1)
    on_gt = np.tile([[10, 10, 40, 40]], (30, 1)) + rng.uniform(-1, 1, (30, 4))
    rec.proposals = np.concatenate([clutter, on_gt])
    db = _db([rec])
    neg = np.flatnonzero(db.chip_kind == NEGATIVE)
    assert len(neg) >= 1
    for c in neg:
        s = db.chip_scale[c]
        chip = db.chip_canvas[c]
        p = rec.proposals * s
        inside = ((chip[:2] <= p[:, :2]) & (p[:, 2:] <= chip[2:])).all(1)
        assert inside.sum() >= CFG.neg_min_proposals[db.chip_scale_index[c]]
        assert not db.chip_gt(c)["valid"].any()
    # Proposals inside positive chips never make negatives: with only those, the pool is empty.
    rec.proposals = on_gt
    assert (_db([rec]).chip_kind == NEGATIVE).sum() == 0
    # M larger than any cluster: no negatives.
    rec.proposals = np.concatenate([clutter, on_gt])
    strict = ChipConfig(neg_min_proposals=(1000, 1000, 1000))
    assert (_db([rec], config=strict).chip_kind == NEGATIVE).sum() == 0


def test_images_without_gt_and_tiny_images():
    empty = ImageRecord(image_id=1, width=300, height=200, boxes=np.zeros((0, 4)), labels=np.zeros(0))
    tiny = ImageRecord(image_id=2, width=100, height=80, boxes=np.array([[10.0, 10, 30, 30]]), labels=[1])
    db = _db([empty, tiny])
    assert (db.chip_image == 0).sum() == 0
    c = np.flatnonzero(db.chip_image == 1)
    assert len(c) >= 1
    # 100x80 at scale 3 is 300x240: one chip, clipped to the canvas.
    finest = [i for i in c if db.chip_scale_index[i] == 0]
    assert db.chip_canvas[finest[0]].tolist() == [0, 0, 300, 240]


def test_batching_does_not_change_the_plan():
    coco, props = synthetic_coco(30, seed=3)
    a = _db(load_coco(coco), proposals=props, batch_size=1000)
    b = _db(load_coco(coco), proposals=props, batch_size=7)
    for k in ChipDB._ARRAYS:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_save_and_load_roundtrip(tmp_path):
    coco, props = synthetic_coco(20, seed=1)
    db = _db(load_coco(coco), proposals=props)
    path = db.save(tmp_path / "sub" / "chips.npz")
    back = ChipDB.load(path)
    for k in ChipDB._ARRAYS:
        assert np.array_equal(getattr(db, k), getattr(back, k)), k
    assert back.config == db.config and back.stride == db.stride
    assert np.array_equal(back.epoch(3, seed=5), db.epoch(3, seed=5))


def test_save_is_atomic(tmp_path, monkeypatch):
    coco, _ = synthetic_coco(5, seed=2)
    db = _db(load_coco(coco))
    path = tmp_path / "chips.npz"
    db.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        db.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["chips.npz"]


def test_epoch_sampling():
    coco, props = synthetic_coco(40, seed=4)
    db = _db(load_coco(coco), proposals=props)
    rows = db.epoch(0, seed=1)
    assert np.array_equal(rows, db.epoch(0, seed=1))
    pos = set(np.flatnonzero(db.chip_kind == POSITIVE).tolist())
    chips = rows[:, 0]
    assert pos <= set(chips.tolist())
    neg = chips[db.chip_kind[chips] == NEGATIVE]
    per_image = np.bincount(db.chip_image[neg], minlength=len(db.image_ids))
    assert per_image.max() <= 2 * CFG.negatives_per_image  # x2: flipped copies
    assert len(rows) == 2 * len(set(chips.tolist()))  # flip="both": each chip twice
    assert set(rows[:, 1].tolist()) == {0, 1}
    pools = np.bincount(db.chip_image[db.chip_kind == NEGATIVE], minlength=len(db.image_ids))
    if (pools > CFG.negatives_per_image).any():
        assert any(not np.array_equal(np.sort(db.epoch(e, 1)[:, 0]), np.sort(chips)) for e in range(1, 6))
    none = _db(load_coco(coco), config=ChipConfig(flip="none", negatives_per_image=0))
    assert len(none.epoch(0)) == (none.chip_kind == POSITIVE).sum()


def test_stride_jitter():
    cfg = ChipConfig(stride_jitter=(56, 59))
    strides = [cfg.epoch_stride(e, seed=0) for e in range(20)]
    assert all(56 <= d <= 59 for d in strides) and len(set(strides)) > 1
    assert strides == [cfg.epoch_stride(e, seed=0) for e in range(20)]
    coco, _ = synthetic_coco(10, seed=5)
    db = _db(load_coco(coco), config=cfg, stride=strides[0])
    assert db.stride == strides[0]


def test_stats_pixel_ratios():
    rec = _record()
    db = _db([rec])
    s = db.stats()
    chips = s["chips_per_epoch"]
    assert chips == (db.chip_kind == POSITIVE).sum()
    assert math.isclose(s["pixels_vs_single_scale_800x1333"], chips * 512 * 512 / (1067 * 800))
    assert math.isclose(s["pixels_vs_full_pyramid"], chips * 512 * 512 / (1920 * 1440 + 1067 * 800 + 512 * 384))


def test_config_validation():
    with pytest.raises(ValueError, match="one entry per scale"):
        ChipConfig(scales=(3.0, None))
    with pytest.raises(ValueError, match="stride"):
        ChipConfig(stride=600)
    with pytest.raises(ValueError, match="flip"):
        ChipConfig(flip="sometimes")
    assert ChipConfig.from_json(CFG.to_json()) == CFG


def test_load_proposals_formats(tmp_path):
    results = [{"image_id": 3, "bbox": [1, 2, 10, 20], "score": 0.5}]
    assert load_proposals(results)[3].tolist() == [[1, 2, 11, 22]]
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"3": [[1, 2, 11, 22, 0.9]]}))
    assert load_proposals(str(p))[3].tolist() == [[1, 2, 11, 22]]


def test_cli_chips(tmp_path, capsys):
    coco, props = synthetic_coco(12, seed=6)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    prop = tmp_path / "props.json"
    prop.write_text(json.dumps({str(k): v.tolist() for k, v in props.items()}))
    out = tmp_path / "db.npz"
    rc = cli.main(["chips", str(ann), "--proposals", str(prop), "--out", str(out), "--viz", str(tmp_path / "viz"),
                   "--num-viz", "2", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "pixels vs single-scale 800x1333" in text and "negative chip pool" in text
    assert len(os.listdir(tmp_path / "viz")) == 2
    assert len(ChipDB.load(out)) > 0
    assert cli.main(["chips", str(tmp_path / "missing.json")]) == 2
    assert cli.main(["chips", "--synthetic-images", "8", "--out", str(tmp_path / "s.npz"), "--quiet"]) == 0
