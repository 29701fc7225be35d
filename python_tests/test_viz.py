"""Pictures (sniper_ext.viz): labels never overlap, class colours are stable, sizes are as
documented, chip pictures still work, PNGs are written atomically."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from sniper_ext import viz
from sniper_ext.viz import PALETTE, class_colour, draw_chips, draw_detections, place_labels, save_png

NAMES = ["person", "car", "dog", "traffic light", "bicycle"]


def _crowd(n=80, seed=0, size=(320, 240)):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * torch.tensor(size, dtype=torch.float32)
    wh = 10 + torch.rand(n, 2, generator=g) * 60
    return torch.cat([c - wh / 2, c + wh / 2], 1), torch.rand(n, generator=g), torch.randint(1, 6, (n,), generator=g)


def _disjoint(rects):
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            a, b = rects[i], rects[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_place_labels_disjoint_inside_and_prefers_above():
    boxes, _, _ = _crowd(200, seed=1)
    sizes = [(60, 14)] * len(boxes)
    rects = place_labels(boxes.tolist(), sizes, (320, 240))
    placed = [r for r in rects if r is not None]
    assert 0 < len(placed) < len(rects)  # crowded: some dropped
    _disjoint(placed)
    assert all(0 <= r[0] and 0 <= r[1] and r[2] <= 320 and r[3] <= 240 for r in placed)
    assert all((r[2] - r[0], r[3] - r[1]) == (60, 14) for r in placed)
    # alone, a label sits just above its box; at the top edge, inside the top; then below
    assert place_labels([(50, 50, 100, 90)], [(30, 10)], (200, 200)) == [(50, 40, 80, 50)]
    assert place_labels([(50, 0, 100, 90)], [(30, 10)], (200, 200)) == [(50, 0, 80, 10)]
    three = place_labels([(50, 50, 100, 90)] * 3, [(20, 10)] * 3, (200, 200))
    assert three == [(50, 40, 70, 50), (80, 40, 100, 50), (50, 50, 70, 60)]  # above left, above right, inside
    assert place_labels([(0, 0, 10, 10)], [(300, 10)], (200, 200)) == [None]  # wider than the picture


def test_draw_detections_crowded_labels_do_not_overlap():
    boxes, scores, labels = _crowd()
    img = draw_detections((320, 240), boxes, scores, labels, NAMES, title="crowd", max_labels=60)
    info = img.info
    shown = int((scores >= 0.3).sum())
    assert info["labels_placed"] + info["labels_dropped"] == min(60, shown)
    assert info["labels_dropped"] > 0
    _disjoint(info["label_rects"])
    x0, y0, x1, y1 = info["image_box"]
    assert all(x0 <= r[0] and y0 <= r[1] and r[2] <= x1 and r[3] <= y1 for r in info["label_rects"])


def test_sizes_and_upscaling():
    big = draw_detections((800, 600), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), NAMES)
    assert big.info["scale"] == 1.0
    assert big.width == 800 + 2 * viz.MARGIN and big.height > 600
    x0, y0, x1, y1 = big.info["image_box"]
    assert (x1 - x0, y1 - y0) == (800, 600)
    small = draw_detections(np.zeros((48, 64, 3), np.uint8), [[4, 4, 20, 20]], [0.9], [2], NAMES)
    x0, y0, x1, y1 = small.info["image_box"]
    assert (x1 - x0, y1 - y0) == (640, 480) and small.info["scale"] == 10.0
    chw = draw_detections(torch.zeros(3, 48, 64, dtype=torch.uint8), [[4, 4, 20, 20]], [0.9], [2], NAMES)
    assert chw.size == small.size


def test_colours_per_class_are_stable():
    assert [class_colour(c) for c in range(1, 4)] == list(PALETTE[:3])
    assert class_colour(len(PALETTE) + 2) == class_colour(2)
    assert len(set(PALETTE)) == len(PALETTE)

    def edge_colour(labels):
        n = len(labels)
        boxes = torch.tensor([[20.0 + 150 * k, 200, 120 + 150 * k, 300] for k in range(n)])
        img = draw_detections((800, 600), boxes, torch.full((n,), 0.9), torch.tensor(labels), NAMES)
        ox, oy = img.info["image_box"][:2]
        k = labels.index(3)
        return img.getpixel((ox + 20 + 150 * k, oy + 280))  # left edge of the class-3 box, below its label

    assert edge_colour([3]) == edge_colour([1, 5, 3]) == class_colour(3)


def test_text_is_readable_on_its_background():
    img = draw_detections((800, 600), [[100, 100, 300, 300]], [0.87], [1], NAMES)
    (x1, y1, x2, y2) = img.info["label_rects"][0]
    patch = np.asarray(img.crop((x1, y1, x2, y2)))
    colours = {tuple(p) for p in patch.reshape(-1, 3)}
    assert class_colour(1) in colours and (255, 255, 255) in colours  # white text on red


def test_threshold_and_mismatch():
    img = draw_detections((400, 300), [[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.1], [1, 2], NAMES)
    assert img.info["labels_placed"] == 1
    with pytest.raises(ValueError, match="must match"):
        draw_detections((400, 300), [[10, 10, 50, 50]], [0.9, 0.1], [1], NAMES)


def test_draw_chips_picture():
    from sniper_ext.chips import ChipConfig, plan_dataset
    from sniper_ext.data import load_coco, load_proposals, synthetic_coco

    coco, props = synthetic_coco(2, seed=0)
    recs = load_coco(coco)
    db = plan_dataset(recs, load_proposals(props, recs), ChipConfig())
    img = draw_chips(db, 0, recs[0])
    w, h = int(db.image_sizes[0][0]), int(db.image_sizes[0][1])
    panel_w = round(420 / max(w, h) * w)
    assert img.width >= 3 * panel_w and img.height > round(420 / max(w, h) * h)
    assert img.getpixel((2, 2)) == (255, 255, 255)
    img2 = draw_chips(db, 0, recs[0], image=Image.new("RGB", (w, h), (0, 0, 0)))
    assert img2.size == img.size


def test_save_png_is_atomic(tmp_path):
    img = draw_detections((100, 80), [[10, 10, 50, 50]], [0.9], [1], NAMES)
    path = save_png(img, tmp_path / "sub" / "a.png")
    with Image.open(path) as f:
        assert f.size == img.size
    before = open(path, "rb").read()

    class Broken:
        def save(self, f, format):
            f.write(b"half a png")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_png(Broken(), path)
    assert open(path, "rb").read() == before  # the old file untouched
    assert os.listdir(tmp_path / "sub") == ["a.png"]  # no temporary file left
