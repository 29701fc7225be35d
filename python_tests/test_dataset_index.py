"""The data side at scale: ImageTable (records as arrays), annotations parsed without their
segmentations, the dataset index (built once, memory-mapped, keyed by content and options,
image check remembered by size and mtime), and proposals in the binary format."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sniper_ext import cli
from sniper_ext.chips import ChipConfig, ChipDB, ImageRecord, ImageTable, plan_dataset
from sniper_ext.data import (
    ProposalSet,
    load_coco,
    load_proposals,
    open_coco,
    read_annotations_json,
    read_json,
    read_proposals,
    read_proposals_npz,
    synthetic_coco,
    write_proposals_npz,
)
from sniper_ext.data import images as images_module
from sniper_ext.data import index as index_module
from sniper_ext.errors import DataError, DataIssues

# ---------------------------------------------------------------------------------------------
# ImageTable


def _records():
    return [
        ImageRecord(5, 640, 480, [[0, 0, 10, 10], [5, 5, 50, 60]], [1, 2], crowd=[False, True], file_name="a.jpg"),
        ImageRecord(2, 300, 200, np.zeros((0, 4)), [], file_name="b.png"),
        ImageRecord(9, 100, 120, [[1, 2, 3, 4]], [7], file_name="c.jpg"),
    ]


def test_image_table_rows_read_as_records():
    recs = _records()
    t = ImageTable.from_records(recs)
    assert len(t) == 3 and repr(t) == "ImageTable(3 images, 3 boxes)"
    for r, got in zip(recs, t):
        assert (got.image_id, got.width, got.height, got.file_name) == (r.image_id, r.width, r.height, r.file_name)
        assert np.array_equal(got.boxes, r.boxes) and np.array_equal(got.labels, r.labels)
        assert np.array_equal(got.crowd, r.crowd)
    assert t[-1].image_id == 9
    with pytest.raises(IndexError):
        t[3]
    sub = t[1:]
    assert isinstance(sub, ImageTable) and sub.image_ids.tolist() == [2, 9] and sub.box_offsets.tolist() == [0, 0, 1]
    back = t.take([2, 0])
    assert back.image_ids.tolist() == [9, 5] and back.boxes.tolist() == [[1, 2, 3, 4], [0, 0, 10, 10], [5, 5, 50, 60]]
    assert back.crowd.tolist() == [False, False, True]
    assert ImageTable.concat([t[:1], t[1:]]) == t and t != back
    assert len(t.take([])) == 0 and ImageTable.from_records([]).box_offsets.tolist() == [0]
    with pytest.raises(ValueError, match="box_offsets"):
        ImageTable([1], [[2, 2]], ["x"], [1, 3], np.zeros((3, 4)), np.zeros(3), np.zeros(3))


def test_load_coco_gives_a_table_equal_to_the_records():
    coco, _ = synthetic_coco(20, seed=1)
    t = load_coco(coco)
    assert isinstance(t, ImageTable)
    anns = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for r in t:
        want = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns.get(r.image_id, []))])
        assert np.allclose(r.boxes, want.reshape(-1, 4))


# ---------------------------------------------------------------------------------------------
# Parsing without segmentations


def _coco_with_segmentations(n=6):
    coco, _ = synthetic_coco(n, seed=4)
    for k, a in enumerate(coco["annotations"]):
        x, y, w, h = a["bbox"]
        if k % 3 == 0:
            a["segmentation"] = {"counts": [3, 5, 1e2, -0.5], "size": [480, 640]}  # RLE
        else:
            a["segmentation"] = [[x, y, x + w, y, x + w, y + h, -1.5e-3, 2e2], [x, y, x + 1, y + 1, x, y + 1]]
    coco["images"][0]["file_name"] = '"segmentation": [1, 2]\\"x.jpg'  # a key-like string stays
    return coco


def test_annotations_are_parsed_without_their_segmentations(tmp_path):
    coco = _coco_with_segmentations()
    path = tmp_path / "a.json"
    path.write_text(json.dumps(coco, indent=1))
    got = read_annotations_json(path)
    want = json.loads(path.read_text())
    for a in want["annotations"]:
        a["segmentation"] = 0
    assert got == want
    assert got["images"][0]["file_name"] == coco["images"][0]["file_name"]
    assert load_coco(str(path)) == load_coco(coco)


def test_bad_json_is_located_in_the_original_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [],\n "annotations": [{"segmentation": [[1, 2, 3]], "bbox": [1, 2,\n ]}]}')
    with pytest.raises(DataError) as e:
        read_annotations_json(path)
    with pytest.raises(DataError) as plain:
        read_json(path)
    assert e.value.where == plain.value.where == "line 3, column 2"


# ---------------------------------------------------------------------------------------------
# The dataset index


def _write_images(root, coco):
    from PIL import Image

    os.makedirs(root, exist_ok=True)
    for im in coco["images"]:
        Image.new("RGB", (im["width"], im["height"]), (90, 100, 110)).save(os.path.join(root, im["file_name"]))


@pytest.fixture()
def dataset(tmp_path):
    coco, _ = synthetic_coco(12, seed=2)
    for im in coco["images"]:
        im["width"], im["height"] = im["width"] // 8, im["height"] // 8  # small image files
        im["file_name"] = im["file_name"].replace(".jpg", ".png")
    size = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = (v / 8 for v in a["bbox"])
        W, H = size[a["image_id"]]
        a["bbox"] = [x, y, max(0.5, min(w, W - x - 0.1)), max(0.5, min(h, H - y - 0.1))]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    _write_images(tmp_path / "images", coco)
    return str(path), str(tmp_path / "images"), str(tmp_path / "cache")


def test_index_is_built_once_and_memory_mapped(dataset, monkeypatch):
    path, root, cache = dataset
    first = open_coco(path, root, cache_dir=cache)
    folders = os.listdir(os.path.join(cache, "datasets"))
    assert len(folders) == 1 and not folders[0].startswith(".")

    def no_parsing(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(index_module, "read_annotations_json", no_parsing)
    monkeypatch.setattr(index_module, "image_header", no_parsing)  # nor any image file read
    again = open_coco(path, root, cache_dir=cache)
    assert again.records == first.records and again.categories == first.categories
    boxes = again.records.boxes  # a read-only view of the mapped file, not a copy
    assert not boxes.flags.writeable and not boxes.flags.owndata and isinstance(boxes.base, np.memmap | np.ndarray)
    # a changed image file is read again; an unchanged one not
    monkeypatch.undo()
    monkeypatch.setattr(index_module, "read_annotations_json", no_parsing)
    calls = []
    real = images_module.image_header
    monkeypatch.setattr(index_module, "image_header", lambda *a: calls.append(a) or real(*a))
    name = first.records.file_names[3]
    os.utime(os.path.join(root, name), ns=(1, 1))
    open_coco(path, root, cache_dir=cache)
    assert [os.path.basename(c[0]) for c in calls] == [name]
    calls.clear()
    open_coco(path, root, cache_dir=cache)
    assert calls == []
    open_coco(path, root, cache_dir=cache, check_files=False)  # no check at all
    assert calls == []


def test_index_follows_the_file_content_and_options(dataset):
    path, root, cache = dataset
    a = open_coco(path, root, cache_dir=cache)
    data = json.load(open(path))
    data["annotations"] = data["annotations"][:-1]
    with open(path, "w") as f:
        json.dump(data, f)
    b = open_coco(path, root, cache_dir=cache)
    assert int(b.records.box_offsets[-1]) == int(a.records.box_offsets[-1]) - 1
    open_coco(path, root, cache_dir=cache, issues=DataIssues(skip=True))
    assert len(os.listdir(os.path.join(cache, "datasets"))) == 3  # two contents, two policies
    assert open_coco(path, root, use_cache=False).records == b.records


def test_index_keeps_what_was_skipped(dataset):
    path, root, cache = dataset
    data = json.load(open(path))
    data["annotations"][0]["bbox"][2] = -3.0
    with open(path, "w") as f:
        json.dump(data, f)
    os.remove(os.path.join(root, data["images"][1]["file_name"]))
    for _ in range(2):  # built, then read from the index: the same counts
        issues = DataIssues(skip=True)
        ds = open_coco(path, root, cache_dir=cache, issues=issues)
        assert dict(issues.counts) == {
            "annotation with a negative width or height: skipped": 1,
            "missing image file: image skipped": 1,
        }
        assert len(ds.records) == len(data["images"]) - 1
    with pytest.raises(DataError, match="negative width"):
        open_coco(path, root, cache_dir=cache)


def test_unwritable_cache_still_opens(dataset, tmp_path):
    path, root, _ = dataset
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert len(open_coco(path, root, cache_dir=str(ro)).records) == 12
    finally:
        os.chmod(ro, 0o700)


# ---------------------------------------------------------------------------------------------
# Binary proposals


def _props():
    coco, props = synthetic_coco(15, seed=8)
    recs = load_coco(coco)
    return coco, recs, load_proposals(props, recs)


def test_binary_proposals_round_trip_and_plan_the_same_chips(tmp_path):
    coco, recs, props = _props()
    path = str(tmp_path / "p.npz")
    write_proposals_npz(path, props)
    got = read_proposals(path, recs)
    assert isinstance(got, ProposalSet) and sorted(got) == sorted(props)
    for iid, boxes in props.items():
        np.testing.assert_allclose(got[iid], boxes, rtol=1e-6, atol=1e-3)  # float32 on disk
        assert got[iid].dtype == np.float64
    cfg = ChipConfig(neg_min_proposals=(2, 2, 2))
    f32 = {i: b.astype(np.float32).astype(np.float64) for i, b in props.items()}
    a = plan_dataset(recs, f32, cfg, progress=False)
    b = plan_dataset(recs, got, cfg, progress=False)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ChipDB._ARRAYS)
    assert (b.chip_kind == 1).sum() > 0
    # about 20 bytes per proposal on disk, so in memory once read
    n = got.num_proposals
    assert os.path.getsize(path) < 24 * n + 2000


def test_binary_proposals_are_checked(tmp_path):
    recs = load_coco(
        {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "a"}], "annotations": [], "categories": []}
    )
    path = str(tmp_path / "p.npz")
    write_proposals_npz(path, {1: [[10, 10, 20, 20], [5, 5, 3, 9], [90, 70, 120, 90]], 7: [[1, 1, 2, 2]] * 2})
    with pytest.raises(DataError) as e:
        read_proposals_npz(path, recs)
    assert e.value.file == path and "unknown image id 7" in str(e.value)
    issues = DataIssues(skip=True)
    got = read_proposals_npz(path, recs, issues=issues)
    assert got[1].tolist() == [[10, 10, 20, 20], [90, 70, 100, 80]] and got.get(7) is not None and len(got[7]) == 0
    assert dict(issues.counts) == {
        "proposal of an unknown image: skipped": 2,
        "proposal with a negative width or height: skipped": 1,
        "proposal with a box partly outside its image: clipped": 1,
    }
    # without images only the boxes themselves are checked: the unknown image and the outside box pass
    assert read_proposals_npz(path, issues=DataIssues(skip=True)).num_proposals == 4
    np.savez(str(tmp_path / "x.npz"), boxes=np.zeros((1, 4)))
    with pytest.raises(DataError, match="not a proposals file: no format, image_ids, offsets"):
        read_proposals_npz(str(tmp_path / "x.npz"))
    (tmp_path / "y.npz").write_text("junk")
    with pytest.raises(DataError, match="not a proposals file"):
        read_proposals_npz(str(tmp_path / "y.npz"))


def test_sniper_chips_reads_binary_proposals_with_workers(tmp_path):
    coco, recs, props = _props()
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "p.json").write_text(json.dumps({str(k): v.tolist() for k, v in props.items()}))
    write_proposals_npz(str(tmp_path / "p.npz"), {k: v.astype(np.float32) for k, v in props.items()})
    out = []
    for p, workers in (("p.json", "0"), ("p.npz", "2")):
        db = str(tmp_path / f"{p}.db.npz")
        argv = ["chips", str(tmp_path / "ann.json"), "--proposals", str(tmp_path / p), "--out", db, "--quiet"]
        assert cli.main([*argv, "--workers", workers, "--negatives-per-image", "3"]) == 0
        out.append(ChipDB.load(db))
    assert len(out[0]) == len(out[1]) and np.array_equal(out[0].chip_kind, out[1].chip_kind)
