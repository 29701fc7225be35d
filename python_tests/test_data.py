"""sniper_ext.data: the synthetic dataset, image checks, the chip dataset and the chip stream.

References are plain: a chip is checked against resizing the WHOLE image to the chip's scale with
PIL, then cropping, flipping and padding by numpy slicing; box geometry against a bright
rectangle rendered at the GT's place."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from sniper_ext.chips import ChipConfig, ChipDB, ImageRecord, plan_dataset
from sniper_ext.config import DataConfig, preset
from sniper_ext.data import (
    ChipDataset,
    ChipStream,
    check_images,
    collate_chips,
    load_coco,
    make_chip_loader,
    make_synthetic_dataset,
    read_image,
    stream_keys,
)
from sniper_ext.errors import DataError, DataIssues

MEAN = np.floor(255 * np.array(DataConfig.pixel_mean) + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    path = make_synthetic_dataset(root, num_images=10, seed=3)
    return str(root), path


@pytest.fixture(scope="module")
def synth_db(synth):
    root, path = synth
    records = check_images(load_coco(path), os.path.join(root, "images"))
    return plan_dataset(records, config=preset("tiny").chips, progress=False)


def _tree(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def smooth_image(W, H):
    """uint8 [H, W, 3] with gradients slow enough that bilinear resampling is near-exact."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 40 + 170 * xx / W
    g = 40 + 170 * yy / H
    b = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 11.0)
    return np.clip(np.stack([r, g, b], -1) + 0.5, 0, 255).astype(np.uint8)


def make_db(W, H, chips, *, K=64, gt=None, file_name="img.png", image_id=7):
    """A one-image ChipDB with the given chips [(scale, (x0, y0, x1, y1) canvas)] and, per chip,
    GT (boxes in chip pixels, COCO labels, valid flags)."""
    gt = gt or [(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, bool))] * len(chips)
    gt = [(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, bool))] + list(gt)  # concatenate needs one
    counts = [len(g[0]) for g in gt[1:]]
    return ChipDB(
        config=ChipConfig(chip_size=K, stride=8),
        stride=8,
        image_ids=np.array([image_id]),
        image_sizes=np.array([[W, H]]),
        file_names=np.array([file_name]),
        chip_image=np.zeros(len(chips), np.int64),
        chip_scale_index=np.zeros(len(chips), np.int8),
        chip_scale=np.array([s for s, _ in chips], dtype=np.float64),
        chip_canvas=np.array([c for _, c in chips], dtype=np.float64).reshape(-1, 4),
        chip_kind=np.zeros(len(chips), np.int8),
        chip_valid_range=np.tile([0.0, np.inf], (len(chips), 1)),
        gt_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        gt_boxes=np.concatenate([np.asarray(g[0], np.float64).reshape(-1, 4) for g in gt]),
        gt_labels=np.concatenate([np.asarray(g[1], np.int64) for g in gt]),
        gt_valid=np.concatenate([np.asarray(g[2], bool) for g in gt]),
        gt_index=np.concatenate([np.arange(n) for n in [0] + counts]).astype(np.int64),
    )


def reference_chip(img, scale, canvas, K, flip, mean=MEAN):
    """Whole image resized to round(W*s) x round(H*s), then the chip cut, flipped, padded."""
    H, W = img.shape[:2]
    CW, CH = int(np.floor(W * scale + 0.5)), int(np.floor(H * scale + 0.5))
    full = np.asarray(Image.fromarray(img).resize((CW, CH), Image.Resampling.BILINEAR))
    x0, y0, x1, y1 = (int(round(v)) for v in canvas)
    part = full[y0:y1, x0:x1]
    if flip:
        part = part[:, ::-1]
    out = np.empty((K, K, 3), np.uint8)
    out[:] = mean
    out[: part.shape[0], : part.shape[1]] = part
    return out.transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------
# synthetic dataset


def test_synthetic_deterministic_and_reused(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_images=4, seed=1)
    b = make_synthetic_dataset(tmp_path / "b", num_images=4, seed=1)
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(ta) == ["images/train_000001.png", "images/train_000002.png", "images/train_000003.png",
                          "images/train_000004.png", "train.json"]  # fmt: skip
    assert ta == tb and os.path.basename(b) == "train.json"
    # Same parameters: reused, nothing rewritten.
    mtime = os.stat(a).st_mtime_ns
    assert make_synthetic_dataset(tmp_path / "a", num_images=4, seed=1) == a
    assert os.stat(a).st_mtime_ns == mtime
    # Another seed or split: other content; a deleted image is regenerated.
    c = make_synthetic_dataset(tmp_path / "c", num_images=4, seed=2)
    assert _tree(tmp_path / "c")["train.json"] != ta["train.json"]
    v = make_synthetic_dataset(tmp_path / "a", num_images=2, seed=1, split="val")
    assert os.path.basename(v) == "val.json" and os.path.exists(tmp_path / "a/images/val_000002.png")
    os.unlink(tmp_path / "a/images/train_000002.png")
    make_synthetic_dataset(tmp_path / "a", num_images=4, seed=1)
    assert _tree(tmp_path / "a")["images/train_000002.png"] == ta["images/train_000002.png"]
    assert c != a
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_dataset(tmp_path / "d", num_images=1, num_classes=0)
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic_dataset(tmp_path / "d", num_images=0)


def _inter(a, b):
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def test_synthetic_valid_coco(synth):
    from pycocotools.coco import COCO

    root, path = synth
    with open(path) as f:
        data = json.load(f)
    coco = COCO(path)
    assert sorted(coco.getCatIds()) == [1, 2, 3]
    assert [c["name"] for c in coco.loadCats([1, 2, 3])] == ["disc", "square", "triangle"]
    assert len(coco.getImgIds()) == 10
    records = load_coco(path)  # strict: raises on any problem
    assert len(records) == 10
    assert check_images(records, os.path.join(root, "images")) == records
    sizes = []
    for im in data["images"]:
        W, H = im["width"], im["height"]
        assert 192 <= max(W, H) <= 320 and min(W, H) >= 100
        assert read_image(os.path.join(root, "images", im["file_name"])).shape == (H, W, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        assert 1 <= len(anns) <= 12
        dis = [d for d in data["distractors"] if d["image_id"] == im["id"]]
        boxes = [a["bbox"] for a in anns] + [d["bbox"] for d in dis]
        for x, y, w, h in boxes:
            assert 0 <= x and 0 <= y and x + w <= W + 1e-6 and y + h <= H + 1e-6 and w > 0 and h > 0
        # Nothing hides another completely: any two boxes share at most 40% of the larger one.
        for i in range(len(boxes)):
            for j in range(i):
                big = max(boxes[i][2] * boxes[i][3], boxes[j][2] * boxes[j][3])
                assert _inter(boxes[i], boxes[j]) <= 0.4 * big + 1e-3
        for a in anns:
            assert a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.02)
            sizes.append(np.sqrt(a["bbox"][2] * a["bbox"][3]))
    assert min(sizes) >= 3.5 and np.median(sizes) < 60  # many small objects
    assert len(data["distractors"]) > 0 and all(d["kind"] for d in data["distractors"])


def test_synthetic_distractors_visible(synth):
    """A distractor is drawn: its box differs from the background around it."""
    root, path = synth
    data = json.load(open(path))
    files = {im["id"]: im["file_name"] for im in data["images"]}
    big = [d for d in data["distractors"] if d["bbox"][2] * d["bbox"][3] > 400]
    assert big
    for d in big[:5]:
        img = read_image(os.path.join(root, "images", files[d["image_id"]])).astype(float)
        x, y, w, h = d["bbox"]
        inside = img[int(y) + 1 : int(y + h), int(x) + 1 : int(x + w)]
        assert inside.std(axis=(0, 1)).max() > 8


# ---------------------------------------------------------------------------------------------
# image checks


@pytest.fixture()
def bad_images(tmp_path):
    W, H = 40, 30
    img = Image.fromarray(smooth_image(W, H))
    img.save(tmp_path / "good.png")
    img.save(tmp_path / "good.jpg", quality=90)
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    jdata = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jdata[: len(jdata) - 200])
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all" * 10)
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(smooth_image(W + 1, H)).save(tmp_path / "wide.png")
    names = ["good.png", "good.jpg", "truncated.png", "truncated.jpg", "garbage.png", "empty.png", "wide.png",
             "missing.png"]  # fmt: skip
    recs = [
        ImageRecord(image_id=100 + k, width=W, height=H, boxes=[[1, 1, 5, 5]], labels=[1], file_name=n)
        for k, n in enumerate(names)
    ]
    return tmp_path, recs


@pytest.mark.parametrize(
    "index, what",
    [
        (2, "truncated"),
        (3, "truncated"),
        (4, "not a readable image"),
        (5, "empty"),
        (6, "41x30 but the annotations say 40x30"),
        (7, "missing"),
    ],
)
def test_check_images_errors(bad_images, index, what):
    root, recs = bad_images
    with pytest.raises(DataError) as e:
        check_images([recs[0], recs[index]], root)
    msg = str(e.value)
    assert recs[index].file_name in msg and f"image {100 + index}" in msg and what in msg
    assert e.value.file == os.path.join(str(root), recs[index].file_name)


def test_check_images_skip(bad_images):
    root, recs = bad_images
    issues = DataIssues(skip=True)
    kept = check_images(recs, root, issues)
    assert [r.file_name for r in kept] == ["good.png", "good.jpg"]
    assert len(issues) == 6
    assert issues.counts == {
        "unreadable or corrupt image file: image skipped": 4,
        "image size differs from the annotations: image skipped": 1,
        "missing image file: image skipped": 1,
    }
    # The full decode finds the same problems.
    issues2 = DataIssues(skip=True)
    assert [r.file_name for r in check_images(recs, root, issues2, decode=True)] == ["good.png", "good.jpg"]
    assert len(issues2) == 6


def test_decode_errors_name_the_file(bad_images):
    root, recs = bad_images
    for name, what in [
        ("truncated.png", "cannot decode"),
        ("missing.png", "image file is missing"),
        ("garbage.png", "cannot"),
    ]:
        with pytest.raises(DataError, match=f"{name}: image 5: {what}"):
            read_image(root / name, 5)
    # A file that changes after planning: DataError from the chip dataset, naming file and id.
    db = make_db(40, 30, [(1.0, (0, 0, 40, 30))], file_name="good.png", image_id=55)
    ds = ChipDataset(db, root, [1])
    assert ds[(0, False, 0)]["image"].shape == (3, 64, 64)
    (root / "good.png").write_bytes((root / "truncated.png").read_bytes())
    ds = ChipDataset(db, root, [1])
    with pytest.raises(DataError, match=r"good\.png: image 55: cannot decode the image"):
        ds[(0, False, 0)]
    Image.fromarray(smooth_image(41, 30)).save(root / "good.png")
    with pytest.raises(DataError, match=r"good\.png: image 55: image is 41x30 but the annotations say 40x30"):
        ChipDataset(db, root, [1])[(0, False, 0)]
    e = DataError("f.png", "image 1", "bad", "k")
    assert pickle.loads(pickle.dumps(e)).kind == "k"


# ---------------------------------------------------------------------------------------------
# the chip dataset


@pytest.mark.parametrize(
    "W, H, scale, tol",
    [
        # canvas exactly W*s x H*s: the two paths resample alike, up to PIL's fixed-point rounding
        # where a sample falls exactly between two pixels
        (100, 80, 1.75, 2),
        (100, 80, 0.5, 2),  # downscaling, the whole image in one chip
        (300, 200, 0.4, 2),  # downscaling, interior chips
        (101, 77, 1.7, 3),  # canvas rounded: the whole-image resize has a ratio 0.2% off
        (101, 77, 64 / 101, 3),  # the coarsest scale: the whole image in one chip
    ],
)
@pytest.mark.parametrize("flip", [False, True])
def test_chip_matches_whole_image_reference(tmp_path, W, H, scale, tol, flip):
    img = smooth_image(W, H)
    Image.fromarray(img).save(tmp_path / "img.png")
    CW, CH = int(np.floor(W * scale + 0.5)), int(np.floor(H * scale + 0.5))
    K = 64
    canvases = [(0, 0, min(K, CW), min(K, CH))]
    if CW > K and CH > K:
        canvases += [
            (CW - 48, CH - 40, CW, CH),  # clipped at the canvas edge: content 48 x 40
            (24, 16, 24 + K, 16 + K),
            (CW - K, 8, CW, 8 + K),
        ]
    db = make_db(W, H, [(scale, c) for c in canvases], K=K)
    ds = ChipDataset(db, tmp_path, [1])
    for c, canvas in enumerate(canvases):
        got = ds[(c, flip, 0)]
        ref = reference_chip(img, scale, canvas, K, flip)
        assert got["image"].dtype == np.uint8 and got["image"].shape == (3, K, K)
        diff = np.abs(got["image"].astype(int) - ref.astype(int))
        assert diff.max() <= tol, (canvas, diff.max())
        cw, ch = canvas[2] - canvas[0], canvas[3] - canvas[1]
        assert got["canvas_wh"].tolist() == [cw, ch]
        # Padding: exactly the mean colour beyond the content.
        pad = got["image"][:, :, cw:].reshape(3, -1)
        assert (pad == MEAN[:, None]).all()
        assert (got["image"][:, ch:, :].reshape(3, -1) == MEAN[:, None]).all()


def test_flip_pixels_and_boxes(tmp_path):
    """A bright rectangle: the chip's GT box must sit on the bright pixels, flipped or not."""
    W, H = 120, 90
    img = np.zeros((H, W, 3), np.uint8)
    box = np.array([30.0, 20.0, 70.0, 50.0])  # original pixels
    img[20:50, 30:70] = 255
    Image.fromarray(img).save(tmp_path / "img.png")
    s, canvas = 2.0, (40, 20, 40 + 100, 20 + 100)  # K = 128: content 100 x 100 of 240 x 180
    K = 128
    gt = (box * s - [canvas[0], canvas[1], canvas[0], canvas[1]]).clip(0, 100)
    db = make_db(W, H, [(s, canvas)], K=K, gt=[([gt, [20, 20, 60, 60]], [3, 9], [True, False])])
    ds = ChipDataset(db, tmp_path, [3, 5, 9], pixel_mean=(0.0, 0.5, 1.0))
    mean = np.array([0, 128, 255], np.uint8)
    plain, flipped = ds[(0, False, 11)], ds[(0, True, 12)]
    assert plain["gt_labels"].tolist() == [1, 3] and plain["gt_state"].tolist() == [1, 0]
    assert plain["seed"] == 11 and flipped["flip"] is True
    for sample in (plain, flipped):
        x1, y1, x2, y2 = sample["gt_boxes"][0]
        bright = sample["image"][0] > 128
        ys, xs = np.nonzero(bright)
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
        assert (sample["image"][:, :, 100:].reshape(3, -1) == mean[:, None]).all()
    np.testing.assert_array_equal(flipped["gt_boxes"][:, [0, 2]], 100 - plain["gt_boxes"][:, [2, 0]])
    np.testing.assert_array_equal(flipped["gt_boxes"][:, [1, 3]], plain["gt_boxes"][:, [1, 3]])
    np.testing.assert_array_equal(flipped["image"][:, :, :100], plain["image"][:, :, :100][:, :, ::-1])
    np.testing.assert_array_equal(flipped["image"][:, :, 100:], plain["image"][:, :, 100:])


def test_chip_dataset_arguments(tmp_path):
    db = make_db(10, 10, [(1.0, (0, 0, 10, 10))], gt=[([[1, 1, 4, 4]], [2], [True])])
    with pytest.raises(ValueError, match="not in `category_ids`"):
        ChipDataset(db, tmp_path, [1, 3])
    with pytest.raises(ValueError, match="sorted"):
        ChipDataset(db, tmp_path, [3, 2])
    with pytest.raises(ValueError, match="pixel_mean"):
        ChipDataset(db, tmp_path, [2], pixel_mean=(120, 110, 100))
    with pytest.raises(IndexError):
        ChipDataset(db, tmp_path, [2])[(5, False, 0)]


def test_collate(synth, synth_db):
    root, _ = synth
    ds = ChipDataset(synth_db, os.path.join(root, "images"), [1, 2, 3])
    counts = np.diff(synth_db.gt_offsets)
    empty = int(np.flatnonzero(counts == 0)[0]) if (counts == 0).any() else None
    many = int(np.argmax(counts))
    chips = [many, 0] + ([empty] if empty is not None else [])
    samples = [ds[(c, i % 2 == 1, 1000 + i)] for i, c in enumerate(chips)]
    b = collate_chips(samples)
    B, G, K = len(chips), int(counts[many]), 192
    expect = {
        "images": ((B, 3, K, K), torch.uint8),
        "gt_boxes": ((B, G, 4), torch.float32),
        "gt_labels": ((B, G), torch.int64),
        "gt_state": ((B, G), torch.int8),
        "canvas_wh": ((B, 2), torch.float32),
        "valid_range": ((B, 2), torch.float32),
        "chip": ((B,), torch.int64),
        "flip": ((B,), torch.bool),
        "image": ((B,), torch.int64),
        "seed": ((B,), torch.int64),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in b.items()} == expect
    for i, (c, s) in enumerate(zip(chips, samples)):
        g = int(counts[c])
        assert (b["gt_state"][i, g:] == -1).all() and (b["gt_labels"][i, g:] == 0).all()
        assert (b["gt_boxes"][i, g:] == 0).all()
        np.testing.assert_array_equal(b["gt_boxes"][i, :g].numpy(), s["gt_boxes"])
        assert set(b["gt_state"][i, :g].tolist()) <= {0, 1} and set(b["gt_labels"][i, :g].tolist()) <= {1, 2, 3}
        assert b["image"][i] == synth_db.chip_image[c] and b["seed"][i] == 1000 + i
    # No GT anywhere: G = 1, all padding.
    one = collate_chips([dict(samples[0], gt_boxes=np.zeros((0, 4), np.float32), gt_labels=np.zeros(0, np.int64),
                              gt_state=np.zeros(0, np.int8))])  # fmt: skip
    assert one["gt_boxes"].shape == (1, 1, 4) and one["gt_state"].tolist() == [[-1]]
    with pytest.raises(ValueError):
        collate_chips([])


def test_planned_chips_are_in_range(synth, synth_db):
    """Every planned chip of the synthetic set: content <= K, GT inside the content."""
    root, _ = synth
    ds = ChipDataset(synth_db, os.path.join(root, "images"), [1, 2, 3])
    for c in range(0, len(synth_db), max(1, len(synth_db) // 25)):
        for flip in (False, True):
            s = ds[(c, flip, 0)]
            cw, ch = s["canvas_wh"]
            assert 0 < cw <= 192 and 0 < ch <= 192
            bx = s["gt_boxes"]
            assert (bx[:, 0] >= -1e-4).all() and (bx[:, 2] <= cw + 1e-4).all() and (bx[:, 3] <= ch + 1e-4).all()
            assert (bx[:, 2] > bx[:, 0]).all()


# ---------------------------------------------------------------------------------------------
# the chip stream


def _batches(stream):
    return [list(b) for b in stream]


def test_stream_ranks_restart_keys_epochs(synth_db):
    L = len(synth_db.epoch(0, 5))
    one = ChipStream(synth_db, 6, seed=5, num_iters=3 + L // 6)
    assert one.epoch_length == L and one.iters_per_epoch == pytest.approx(L / 6)
    r0 = ChipStream(synth_db, 3, seed=5, rank=0, world_size=2, num_iters=3 + L // 6)
    r1 = ChipStream(synth_db, 3, seed=5, rank=1, world_size=2, num_iters=3 + L // 6)
    b1, b0, bb = _batches(one), _batches(r0), _batches(r1)
    assert len(b1) == 3 + L // 6
    assert b1 == [x + y for x, y in zip(b0, bb)]
    # Restart at iteration k == continuing.
    k = 4
    again = ChipStream(synth_db, 6, seed=5, start_iter=k, num_iters=len(b1) - k)
    assert _batches(again) == b1[k:]
    assert _batches(one) == b1  # iterating twice gives the same stream
    # The stream is epoch 0's rows, then epoch 1's: batches straddle the boundary.
    flat = [row for b in b1 for row in b]
    e0, e1 = synth_db.epoch(0, 5), synth_db.epoch(1, 5)
    assert [(c, int(f)) for c, f, _ in flat[:L]] == [tuple(r) for r in e0.tolist()]
    assert [(c, int(f)) for c, f, _ in flat[L:]] == [tuple(r) for r in e1[: len(flat) - L].tolist()]
    # Keys: a function of (seed, position), distinct, 63-bit, and other for another seed.
    keys = [key for _, _, key in flat]
    assert keys == stream_keys(5, np.arange(len(flat))).tolist()
    assert len(set(keys)) == len(keys) and all(0 <= x < 2**63 for x in keys)
    other = [key for b in ChipStream(synth_db, 6, seed=6, num_iters=2) for _, _, key in b]
    assert not set(other) & set(keys[:12])
    assert one.epoch_of(0) == 0 and one.epoch_of(L) == pytest.approx(6.0)
    assert one.iters_for(1.0) == -(-L // 6)


def test_stream_errors(synth_db):
    empty = make_db(10, 10, [])
    with pytest.raises(ValueError, match="no chips"):
        ChipStream(empty, 4)
    with pytest.raises(ValueError, match="rank"):
        ChipStream(synth_db, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_per_rank"):
        ChipStream(synth_db, 0)
    with pytest.raises(TypeError):
        len(ChipStream(synth_db, 4))
    assert len(ChipStream(synth_db, 4, num_iters=7)) == 7


def test_loader_workers_identical(synth, synth_db):
    root, _ = synth
    ds = ChipDataset(synth_db, os.path.join(root, "images"), [1, 2, 3])

    def run(workers):
        loader = make_chip_loader(ds, ChipStream(synth_db, 4, seed=1, num_iters=5), workers=workers, pin_memory=False)
        return list(loader), list(loader)  # persistent workers: a second pass

    (a, a2), (b, b2) = run(0), run(2)
    assert len(a) == len(b) == 5
    for x, y in zip(a + a2, b + b2):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_loader_data_error_from_worker(tmp_path):
    Image.fromarray(smooth_image(40, 30)).save(tmp_path / "img.png")
    db = make_db(40, 30, [(1.0, (0, 0, 40, 30))] * 4, file_name="img.png", image_id=9)
    ds = ChipDataset(db, tmp_path, [1])
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for workers in (0, 1):
        loader = make_chip_loader(ds, ChipStream(db, 2, num_iters=2), workers=workers, pin_memory=False)
        with pytest.raises(DataError, match=r"img\.png: image 9: cannot decode the image"):
            list(loader)


# ---------------------------------------------------------------------------------------------
# Whole images (the baselines): grouped by orientation and scale, padded per batch


def test_whole_image_batches_pad_to_their_own_largest_image(tmp_path):
    from sniper_ext.data import group_by_shape
    from sniper_ext.engine.single_scale import pyramid_db, single_scale_db

    path = make_synthetic_dataset(str(tmp_path), num_images=10, seed=4)
    records = load_coco(path)
    cfg = preset("tiny")
    for db in (single_scale_db(records, (320, 533), cfg.chips), pyramid_db(records, cfg.chips)):
        assert db.extra["whole_images"]
        dataset = ChipDataset(db, str(tmp_path / "images"), [1, 2, 3])
        stream = ChipStream(db, 2, seed=1, num_iters=ChipStream(db, 2, seed=1).iters_for(1) - 1)
        canvas = db.chip_canvas
        for rows, batch in zip(stream, make_chip_loader(dataset, stream)):
            chips = [c for c, _, _ in rows]
            w = [int(np.floor(canvas[c, 2] - canvas[c, 0] + 0.5)) for c in chips]
            h = [int(np.floor(canvas[c, 3] - canvas[c, 1] + 0.5)) for c in chips]
            H, W = batch["images"].shape[2:]
            assert H == -(-max(h) // 16) * 16 and W == -(-max(w) // 16) * 16  # the batch's own largest
            assert len({(w_ >= h_, int(db.chip_scale_index[c])) for c, w_, h_ in zip(chips, w, h)}) <= 1 or (
                len(chips) < 2
            )  # one orientation and scale per batch (but an epoch's last leftovers)
            wh = batch["canvas_wh"].numpy()
            for k in range(len(chips)):  # outside its content, an image is the mean colour
                pad = batch["images"][k, :, int(wh[k, 1]) :, :]
                assert pad.numel() == 0 or bool((pad == pad[:, :1, :1]).all())
    # the grouping: a permutation of the epoch's rows, full batches of one bucket
    rows = np.stack([np.arange(20), np.zeros(20, np.int64)], 1)
    bucket = np.array([0, 1, 2] * 7)[:20]
    out = group_by_shape(rows, bucket, 3)
    assert sorted(out[:, 0].tolist()) == list(range(20))
    full = len(out) - sum(int((bucket == b).sum()) % 3 for b in range(3))
    for k in range(0, full, 3):
        assert len(set(bucket[out[k : k + 3, 0]].tolist())) == 1
