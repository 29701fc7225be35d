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
    plan_dataset,
    valid_at_scale,
)
from sniper_ext.data import load_coco, load_proposals, read_json, synthetic_coco
from sniper_ext.errors import DataError, DataIssues

CFG = ChipConfig()


def test_scales_and_canvas():
    s = image_scales(640, 480, CFG)
    assert s == [3.0, 1.667, 0.8]
    assert [canvas_size(640, 480, x) for x in s] == [(1920, 1440), (1067, 800), (512, 384)]
    assert canvas_size(5, 3, 0.5) == (3, 2)  # halves round up


def test_validity_rules():
    boxes = np.array(
        [
            [0, 0, 50, 50],  # size 50: finest only (coarsest needs >= 120, middle >= 32 -> middle too)
            [0, 0, 100, 100],  # size 100: middle (100*1.667 <= 480) and not finest (>= 80)
            [0, 0, 300, 10],  # size 54.8 but 300*3 > 480: not finest; middle: 300*1.667 > 480: no
            [0, 0, 1.5, 40],  # narrower than 2 px: never
            [0, 0, 400, 400],  # size 400: coarsest only
            [0, 0, 20, 20],  # size 20: finest only
        ],
        dtype=float,
    )
    valid = [valid_at_scale(boxes, i, s, CFG) for i, s in enumerate(image_scales(640, 480, CFG))]
    assert valid[0].tolist() == [True, False, False, False, False, True]
    assert valid[1].tolist() == [True, True, False, False, False, False]
    assert valid[2].tolist() == [False, False, False, False, True, False]
    crowd = np.array([True, False, False, False, False, False])
    assert not valid_at_scale(boxes, 0, 3.0, CFG, crowd=crowd)[0]


def _record():
    boxes = np.array(
        [[10, 10, 40, 40], [300, 200, 330, 230], [100, 100, 200, 200], [0, 0, 600, 450], [590, 10, 640, 60]],
        dtype=float,
    )
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
            inside = [
                c for c in chips if (db.chip_canvas[c][:2] <= b[:2]).all() and (b[2:] <= db.chip_canvas[c][2:]).all()
            ]
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
            want = np.array(
                [
                    np.clip(want[0], chip[0], chip[2]),
                    np.clip(want[1], chip[1], chip[3]),
                    np.clip(want[2], chip[0], chip[2]),
                    np.clip(want[3], chip[1], chip[3]),
                ]
            )
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
    rc = cli.main(
        [
            "chips",
            str(ann),
            "--proposals",
            str(prop),
            "--out",
            str(out),
            "--viz",
            str(tmp_path / "viz"),
            "--num-viz",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "pixels vs single-scale 800x1333" in text and "negative chip pool" in text
    assert len(os.listdir(tmp_path / "viz")) == 2
    assert len(ChipDB.load(out)) > 0
    assert cli.main(["chips", str(tmp_path / "missing.json")]) == 1  # bad data or path: 1; bad usage: 2
    assert cli.main(["chips", "--synthetic-images", "8", "--out", str(tmp_path / "s.npz"), "--quiet"]) == 0


# ---------------------------------------------------------------------------------------------
# Loaders: every entry checked, DataError naming file / image / annotation, skip-and-count


def _coco_reference(coco):
    """An independent reading through pycocotools (what load_coco did before it checked entries)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = coco
        c.createIndex()
    out = []
    for img_id in sorted(c.getImgIds()):
        anns = c.imgToAnns.get(img_id, [])
        out.append(
            (
                img_id,
                c.imgs[img_id]["width"],
                c.imgs[img_id]["height"],
                c.imgs[img_id].get("file_name", ""),
                [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                [a["category_id"] for a in anns],
                [bool(a.get("iscrowd", 0)) for a in anns],
            )
        )
    return out


def test_load_coco_matches_pycocotools(tmp_path):
    pytest.importorskip("pycocotools")
    coco, _ = synthetic_coco(25, seed=7)
    coco["images"].append({"id": 1000, "width": 300, "height": 200, "file_name": "empty.jpg"})  # no annotations
    coco["images"].insert(0, coco["images"].pop(3))  # file order is not id order
    coco["annotations"][2]["iscrowd"] = 1
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    for src in (coco, str(path), path):
        recs = load_coco(src)
        ref = _coco_reference(coco)
        assert [r.image_id for r in recs] == [r[0] for r in ref]
        for r, (_, w, h, name, boxes, labels, crowd) in zip(recs, ref):
            assert (r.width, r.height, r.file_name) == (w, h, name)
            assert np.array_equal(r.boxes, np.array(boxes, dtype=float).reshape(-1, 4))
            assert r.labels.tolist() == labels and r.crowd.tolist() == crowd


def _small_coco(*extra_anns, **top):
    coco = {
        "images": [
            {"id": 17, "width": 640, "height": 480, "file_name": "a.jpg"},
            {"id": 18, "width": 100, "height": 50, "file_name": "b.jpg"},
        ],
        "annotations": [{"id": 1, "image_id": 17, "bbox": [10, 10, 50, 40], "category_id": 1}, *extra_anns],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    coco.update(top)
    return coco


def _ann(bbox, image_id=17, ann_id=4, **kw):
    return {"id": ann_id, "image_id": image_id, "bbox": bbox, "category_id": 2, **kw}


# (annotation, message fragment, kind fragment, boxes of image 17 after --skip-bad or None: unchanged)
BAD_ANNOTATIONS = [
    (_ann([10, 10, -3, 5]), "image 17, annotation 4: box has negative width (w=-3.0)", "negative", None),
    (_ann([10, 10, 3, -0.5]), "image 17, annotation 4: box has negative height (h=-0.5)", "negative", None),
    (_ann([10, float("nan"), 3, 5]), "image 17, annotation 4: box is not finite", "non-finite", None),
    (_ann([10, 10, float("inf"), 5]), "box is not finite", "non-finite", None),
    (_ann([10, 10, 0, 5]), "image 17, annotation 4: box has zero width", "zero-size", None),
    (
        _ann([700, 10, 30, 5]),
        "image 17, annotation 4: box lies entirely outside its 640x480 image",
        "entirely outside",
        None,
    ),
    (_ann([-40, 10, 40, 5]), "entirely outside", "entirely outside", None),  # touches the left edge only
    (
        _ann([630, 470, 30, 20]),
        "image 17, annotation 4: box extends outside its 640x480 image",
        "partly outside",
        [[630, 470, 640, 480]],
    ),
    (_ann([-2.5, 10, 30, 5]), "box extends outside", "partly outside", [[0, 10, 27.5, 15]]),
    (_ann([10, 10, 3, 5], image_id=99), "annotation 4: unknown image id 99", "unknown image", None),
    (_ann([10, 10, 3, 5], category_id=7), "image 17, annotation 4: unknown category id 7", "unknown category", None),
    (_ann([10, 10, 3]), "image 17, annotation 4: bbox must be [x, y, width, height]", "malformed", None),
    (_ann(["10", 10, 3, 4]), "bbox must be", "malformed", None),
    (_ann(None), "bbox must be", "malformed", None),
    (_ann([1, 2, 3, 4], image_id="17"), "annotation 4: image_id must be an integer", "malformed", None),
    (_ann([1, 2, 3, 4], category_id=None), "category_id must be an integer", "malformed", None),
    (_ann([1, 2, 3, 4], iscrowd=2), "iscrowd must be 0 or 1", "malformed", None),
    (
        {"image_id": 17, "bbox": [1, 2, -3, 4], "category_id": 1},
        "image 17, annotations[1]: box has negative width",
        "negative",
        None,
    ),
    ([1, 2, 3], "annotations[1]: is a list, not an object", "malformed", None),
]


@pytest.mark.parametrize("ann,message,kind,repaired", BAD_ANNOTATIONS)
def test_load_coco_bad_annotations(tmp_path, ann, message, kind, repaired):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_small_coco(ann)))
    with pytest.raises(DataError) as e:
        load_coco(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert e.value.file == str(path) and kind in e.value.kind
    issues = DataIssues(skip=True)
    recs = load_coco(str(path), issues=issues)
    assert len(issues) == 1 and kind in next(iter(issues.counts)) and issues.first[next(iter(issues.counts))].where
    expected = [[10, 10, 60, 50]] + (repaired or [])
    assert recs[0].boxes.tolist() == expected
    assert len(recs[1].boxes) == 0


def test_load_coco_counts_by_kind_across_files():
    issues = DataIssues(skip=True)
    coco = _small_coco(
        _ann([10, 10, -3, 5], ann_id=4),
        _ann([10, 10, -3, 5], ann_id=5),
        _ann([630, 10, 30, 5], ann_id=6),
        _ann([1, 1, 5, 5], image_id=3, ann_id=7),
    )
    load_coco(coco, issues=issues)
    load_coco(coco, issues=issues)
    counts = {k.split(":")[0]: n for k, n in issues.counts.items()}
    assert counts == {
        "annotation with a negative width or height": 4,
        "annotation with a box partly outside its image": 2,
        "annotation of an unknown image": 2,
    }
    lines = issues.summary()
    assert lines[0].startswith(
        "4 x annotation with a negative width or height: skipped (first: <annotations>: image 17, annotation 4)"
    )


@pytest.mark.parametrize(
    "coco,message",
    [
        ([], "not a COCO annotations file: the top level is a list"),
        ({"foo": 1}, 'not a COCO annotations file: no "images" or "annotations" (top-level keys: "foo")'),
        ({"images": []}, 'no "annotations"'),
        ({"images": [], "annotations": []}, 'no images (the "images" list is empty)'),
        ({"images": {}, "annotations": []}, '"images" is an object, not a list'),
        (_small_coco(annotations={}), '"annotations" is an object, not a list'),
        (
            {"images": [{"id": 3, "width": 0, "height": 5}], "annotations": []},
            "image 3: width must be a positive integer, got 0",
        ),
        (
            {"images": [{"id": 3, "width": 10}], "annotations": []},
            "image 3: height must be a positive integer, got null",
        ),
        ({"images": [{"id": 3, "width": 10.5, "height": 5}], "annotations": []}, "width must be a positive integer"),
        ({"images": [{"id": 3, "width": float("nan"), "height": 5}], "annotations": []}, "width must be a positive"),
        (
            {"images": [{"id": "a", "width": 1, "height": 1}], "annotations": []},
            'images[0]: image id must be an integer, got "a"',
        ),
        (
            {"images": [{"id": 3, "width": 1, "height": 1}, {"id": 3, "width": 1, "height": 1}], "annotations": []},
            "image 3: duplicate image id (images[0] and images[1])",
        ),
        (
            {"images": [{"id": 3, "width": 1, "height": 1, "file_name": 5}], "annotations": []},
            "file_name must be a string",
        ),
        ({"images": ["x"], "annotations": []}, "images[0]: is a string, not an object"),
        (_small_coco(categories=[{"name": "x"}]), "categories[0]: a category must be an object with an integer id"),
    ],
)
def test_load_coco_fatal_problems(coco, message):
    for issues in (None, DataIssues(skip=True)):  # never skippable
        with pytest.raises(DataError) as e:
            load_coco(coco, issues=issues, name="my.json")
        assert str(e.value).startswith("my.json: ") and message in str(e.value), str(e.value)
        assert e.value.kind is None


def test_read_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"bad.json: line 2, column 12: not valid JSON \(Expecting property name"):
        read_json(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not valid JSON"):
        read_json(bad)
    bad.write_text("")
    with pytest.raises(DataError, match="line 1, column 1: not valid JSON"):
        read_json(bad)
    with pytest.raises(FileNotFoundError) as e:
        read_json(tmp_path / "missing.json")
    assert e.value.filename == str(tmp_path / "missing.json")
    with pytest.raises(IsADirectoryError):
        read_json(tmp_path)


def test_data_error():
    e = DataError("a.json", "image 3, annotation 4", "box has negative width (w=-3.0)", "x: skipped")
    assert str(e) == "a.json: image 3, annotation 4: box has negative width (w=-3.0)"
    assert isinstance(e, ValueError)
    assert str(DataError("a.json", None, "no images")) == "a.json: no images"
    import pickle

    back = pickle.loads(pickle.dumps(e))
    assert (back.file, back.where, back.what, back.kind) == (e.file, e.where, e.what, e.kind)
    with pytest.raises(DataError):
        DataIssues(skip=True).report(DataError("a.json", None, "fatal"))  # no kind: never skipped
    with pytest.raises(DataError):
        DataIssues().report(e)  # strict by default


def _records_17_18():
    return load_coco(_small_coco())


@pytest.mark.parametrize(
    "props,message,kind,kept",
    [
        ({"17": [[10, 10, 5, 20]]}, "image 17, proposal 0: box has negative width (x1=10.0, x2=5.0)", "negative", []),
        ({"17": [[10, 10, 20, float("nan")]]}, "image 17, proposal 0: box is not finite", "non-finite", []),
        ({"17": [[10, 10, 10, 20]]}, "image 17, proposal 0: box has zero width", "zero-size", []),
        (
            {"17": [[650, 10, 660, 20]]},
            "image 17, proposal 0: box lies entirely outside its 640x480 image",
            "entirely",
            [],
        ),
        (
            {"17": [[630, 10, 660, 20, 0.9]]},
            "image 17, proposal 0: box extends outside",
            "partly",
            [[630, 10, 640, 20]],
        ),
        ({"99": [[1, 1, 5, 5]]}, "image 99: unknown image id 99", "unknown image", []),
        ({"17": [[1, 1, 5]]}, "image 17, proposal 0: a proposal must be [x1, y1, x2, y2(, score)]", "malformed", []),
        ([{"image_id": 99, "bbox": [1, 1, 5, 5], "score": 1}], "results[0]: unknown image id 99", "unknown image", []),
        (
            [{"image_id": 17, "bbox": [1, 1, -5, 5]}],
            "image 17, results[0]: box has negative width (w=-5.0)",
            "negative",
            [],
        ),
        (
            [{"image_id": 17, "bbox": [630, 1, 20, 5]}],
            "image 17, results[0]: box extends outside",
            "partly",
            [[630, 1, 640, 6]],
        ),
        ([{"image_id": "17", "bbox": [1, 1, 5, 5]}], "results[0]: image_id must be an integer", "malformed", []),
        ([{"image_id": 17}], "image 17, results[0]: bbox must be", "malformed", []),
    ],
)
def test_load_proposals_bad_entries(props, message, kind, kept):
    recs = _records_17_18()
    with pytest.raises(DataError) as e:
        load_proposals(props, recs, name="p.json")
    assert str(e.value).startswith("p.json: ") and message in str(e.value), str(e.value)
    assert kind in e.value.kind
    issues = DataIssues(skip=True)
    out = load_proposals(props, recs, issues=issues, name="p.json")
    assert len(issues) == 1 and kind in next(iter(issues.counts))
    assert out.get(17, np.zeros((0, 4))).tolist() == kept


def test_load_proposals_fatal_and_unchecked_bounds(tmp_path):
    for props, message in [
        (5, "not a proposals file: the top level is a number"),
        ({"abc": []}, 'key "abc" is not an image id'),
        ({"17": 5}, "image 17: proposals must be a list"),
    ]:
        with pytest.raises(DataError) as e:
            load_proposals(props, issues=DataIssues(skip=True), name="p.json")
        assert str(e.value).startswith(f"p.json: {message}") and e.value.kind is None, str(e.value)
    bad = tmp_path / "p.json"
    bad.write_text("[{")
    with pytest.raises(DataError, match="p.json: line 1, column 3: not valid JSON"):
        load_proposals(str(bad))
    # Without images only the box itself is checked; numpy rows are accepted too.
    out = load_proposals({"5": np.array([[700.0, 1, 900, 5]])})
    assert out[5].tolist() == [[700, 1, 900, 5]]
    # Unknown-image proposals of a mapping are counted per proposal.
    issues = DataIssues(skip=True)
    load_proposals({"99": [[1, 1, 5, 5]] * 3}, _records_17_18(), issues=issues)
    assert len(issues) == 3


def test_synthetic_dataset_passes_the_checks():
    coco, props = synthetic_coco(60, seed=9)
    recs = load_coco(coco)
    out = load_proposals(props, recs)
    assert sorted(out) == sorted(props) and all(np.array_equal(out[k], props[k]) for k in props)


def test_saved_files_follow_the_umask(tmp_path):
    from sniper_ext.viz import draw_boxes, save_png

    coco, _ = synthetic_coco(3, seed=2)
    db = _db(load_coco(coco))
    old = os.umask(0o027)
    try:
        db.save(tmp_path / "a.npz")
        save_png(draw_boxes((20, 10), []), str(tmp_path / "a.png"))
        os.umask(0o002)
        db.save(tmp_path / "a.npz")  # replaced: the new file's mode
        save_png(draw_boxes((20, 10), []), str(tmp_path / "b.png"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.png").stat().st_mode & 0o777 == 0o664
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "a.png", "b.png"]


def test_chipdb_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("not a zip")
    with pytest.raises(DataError, match="x.npz: not a chip database"):
        ChipDB.load(p)
    np.savez(p, a=np.zeros(3))
    with pytest.raises(DataError, match="not a chip database"):
        ChipDB.load(p)
    with pytest.raises(FileNotFoundError):
        ChipDB.load(tmp_path / "missing.npz")


def _ref_box(x1, y1, x2, y2, W, H):
    """Plain-Python box rules: (kind word, box after repair or None)."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "non-finite", None
    if x2 - x1 < 0 or y2 - y1 < 0:
        return "negative", None
    if x2 - x1 == 0 or y2 - y1 == 0:
        return "zero-size", None
    if W is not None:
        if x1 >= W or y1 >= H or x2 <= 0 or y2 <= 0:
            return "entirely outside", None
        if x1 < 0 or y1 < 0 or x2 > W or y2 > H:
            return "partly outside", [max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)]
    return None, [x1, y1, x2, y2]


def _random_entries(rng, n, sizes):
    """n [x, y, w, h] boxes on random images, a third of them broken in some way."""
    out = []
    for _ in range(n):
        iid = int(rng.choice(list(sizes)))
        W, H = sizes.get(iid, (640, 480))
        x, y = rng.uniform(0, W - 20), rng.uniform(0, H - 20)
        w, h = rng.uniform(1, 20), rng.uniform(1, 20)
        defect = rng.integers(0, 12)
        if defect == 0:
            w = -w
        elif defect == 1:
            h = 0.0
        elif defect == 2:
            x = float("nan")
        elif defect == 3:
            x = W + 5.0
        elif defect == 4:
            x = -w / 2
        elif defect == 5:
            y = H - h / 2
        elif defect == 6:
            iid = 999  # unknown image
        elif defect == 7:
            w = float("inf")
        out.append((iid, [float(x), float(y), float(w), float(h)]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checks_match_a_plain_python_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = {1: (640, 480), 2: (100, 50), 3: (37, 1000)}
    entries = _random_entries(rng, 400, sizes)
    coco = {
        "images": [{"id": i, "width": w, "height": h} for i, (w, h) in sizes.items()],
        "annotations": [{"id": k, "image_id": iid, "bbox": b, "category_id": 1} for k, (iid, b) in enumerate(entries)],
    }
    # Reference: the kept (clipped) boxes per image and the counts by kind, in file order.
    want, counts, first = {i: [] for i in sizes}, {}, None
    for k, (iid, (x, y, w, h)) in enumerate(entries):
        kind, box = ("unknown image", None) if iid not in sizes else _ref_box(x, y, x + w, y + h, *sizes[iid])
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
            first = first or (k, iid, kind)
        if box is not None:
            want[iid].append(box)
    issues = DataIssues(skip=True)
    recs = load_coco(coco, issues=issues)
    for r in recs:
        assert np.allclose(r.boxes, np.array(want[r.image_id]).reshape(-1, 4), rtol=0, atol=1e-12)
    got = {}
    for kind, n in issues.counts.items():
        word = next(
            w
            for w in ("non-finite", "negative", "zero-size", "entirely outside", "partly outside", "unknown image")
            if w in kind
        )
        got[word] = n
    assert got == counts
    with pytest.raises(DataError) as e:
        load_coco(coco)
    k, iid, kind = first
    assert e.value.where == (f"annotation {k}" if kind == "unknown image" else f"image {iid}, annotation {k}")

    # The same boxes as proposals: a mapping [x1, y1, x2, y2] (lists or numpy rows) and detection results.
    by_image = {}
    for iid, (x, y, w, h) in entries:
        by_image.setdefault(iid, []).append([x, y, x + w, y + h])
    for props in ({str(i): rows for i, rows in by_image.items()}, {i: np.array(rows) for i, rows in by_image.items()}):
        issues = DataIssues(skip=True)
        out = load_proposals(props, recs, issues=issues)
        for i in sizes:
            ref = [b for b in (_ref_box(*row, *sizes[i])[1] for row in by_image.get(i, [])) if b is not None]
            assert np.allclose(out[i], np.array(ref).reshape(-1, 4), rtol=0, atol=1e-12)
        assert len(issues) == sum(counts.values())
    results = [{"image_id": iid, "bbox": b, "score": 0.5} for iid, b in entries]
    issues = DataIssues(skip=True)
    out = load_proposals(results, recs, issues=issues)
    for i in sizes:
        assert np.allclose(out.get(i, np.zeros((0, 4))), np.array(want[i]).reshape(-1, 4), rtol=0, atol=1e-12)
    assert len(issues) == sum(counts.values())


def test_malformed_rows_are_reported_in_file_order():
    recs = load_coco(_small_coco())
    props = {"17": [[1, 1, 5, 5], [1, 1, 0, 5], "x", [1, 1, 5, 5, 0.3]]}
    with pytest.raises(DataError, match="image 17, proposal 1: box has negative width"):
        load_proposals(props, recs)
    issues = DataIssues(skip=True)
    out = load_proposals(props, recs, issues=issues)
    assert out[17].tolist() == [[1, 1, 5, 5], [1, 1, 5, 5]] and len(issues) == 2
    props = {"17": [[1, 1, 5, 5], "x", [1, 1, 0, 5]]}
    with pytest.raises(DataError, match="image 17, proposal 1: a proposal must be"):
        load_proposals(props, recs)
    with pytest.raises(DataError, match="image 17, proposal 1: box is not finite"):
        load_proposals({"17": np.array([[1, 1, 5, 5], [np.nan, 1, 2, 3]])}, recs)
    with pytest.raises(DataError, match=r"image 17, proposal 0: box has negative width \(x1=5.0, x2=1.0\)"):
        load_proposals({"17": np.array([[5, 1, 1, 5]])}, recs)  # an int array


# ---------------------------------------------------------------------------------------------
# The vectorised planner equals the plain per-image, per-chip loop (reference_planner.py)


def _reference_db(records, proposals, config, seed, batch_size=1000):
    import reference_planner

    copies = [
        ImageRecord(r.image_id, r.width, r.height, r.boxes.copy(), r.labels.copy(), r.crowd.copy(), None, r.file_name)
        for r in records
    ]
    return reference_planner.plan_dataset(copies, proposals, config, seed=seed, batch_size=batch_size, progress=False)


def _assert_same_db(want, got):
    for key in want._ARRAYS:
        a, b = getattr(want, key), getattr(got, key)
        assert a.dtype == b.dtype and a.shape == b.shape, (key, a.dtype, b.dtype, a.shape, b.shape)
        assert np.array_equal(a, b), key
    assert want.uncoverable == got.uncoverable and want.stride == got.stride


@pytest.mark.parametrize(
    "n,seed,config",
    [
        (40, None, ChipConfig()),
        (90, 3, ChipConfig()),
        (60, 0, ChipConfig(chip_size=256, stride=16, neg_min_proposals=(2, 2, 2))),
        (70, 1, ChipConfig(neg_min_proposals=(1, 3, 5))),
        (50, 2, ChipConfig(scales=(2.0, None), valid_ranges=((0, 60), (40, math.inf)), neg_min_proposals=(4, 4))),
    ],
)
def test_vectorised_planner_equals_the_reference_loop(n, seed, config):
    coco, props = synthetic_coco(n, seed=n)
    coco["annotations"][0]["iscrowd"] = 1  # a crowd box: never valid, still carried
    recs = load_coco(coco)
    proposals = load_proposals(props, recs)
    want = _reference_db(recs, proposals, config, seed)
    _assert_same_db(want, plan_dataset(recs, proposals, config, seed=seed, progress=False))
    if n == 70:
        assert (want.chip_kind == NEGATIVE).sum() > 50  # the negative path is exercised
    # batches, records given as a list, and processes do not change the plan
    small = _reference_db(recs, proposals, config, seed, batch_size=7)
    _assert_same_db(small, plan_dataset(list(recs), proposals, config, seed=seed, batch_size=7, progress=False))
    _assert_same_db(small, plan_dataset(recs, proposals, config, seed=seed, batch_size=7, workers=2, progress=False))


def test_planner_edge_cases_equal_the_reference():
    """No GT, only crowd GT, boxes larger than a chip, degenerate (zero-size) GT, no images."""
    recs = [
        ImageRecord(1, 640, 480, np.zeros((0, 4)), np.zeros(0)),
        ImageRecord(2, 640, 480, [[10, 10, 50, 50]], [3], crowd=[True]),
        ImageRecord(3, 4000, 300, [[0, 0, 3900, 290], [5, 5, 9, 9], [100, 100, 100, 140]], [1, 2, 3]),
        ImageRecord(4, 1, 1, [[0, 0, 1, 1]], [1]),
    ]
    proposals = {1: np.array([[400, 300, 420, 330]] * 30, float), 3: np.zeros((0, 4))}
    cfg = ChipConfig(neg_min_proposals=(1, 1, 1))
    _assert_same_db(_reference_db(recs, proposals, cfg, 0), plan_dataset(recs, proposals, cfg, seed=0, progress=False))
    empty = plan_dataset([], None, cfg, progress=False)
    assert len(empty) == 0 and len(empty.image_ids) == 0
