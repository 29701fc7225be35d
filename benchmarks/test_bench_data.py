"""Data pipeline: chips/s of one loading process (workers=0, what each DataLoader worker does).

ChipDataset (decode with a small image cache, one bilinear resample of the chip's box straight to
its canvas size, flip, pad) beside a naive loader that decodes the image, resizes the WHOLE image
to the chip's scale and crops. Workload: the synthetic dataset planned with the tiny preset's
ChipConfig (192-px chips at scales 3, 1.667 and 192/max(W, H)), chips in the order of the
training stream (shuffled, so the cache rarely helps). A second workload, "coco-like", upscales
the same images x2.5 to COCO's size (480-800 px) as JPEG files and plans them with the paper's
ChipConfig (512-px chips). The summary line's "groups/s" are chips/s.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from bench_utils import QUICK
from PIL import Image

from sniper_ext.chips import ChipConfig, ImageRecord, plan_dataset
from sniper_ext.config import preset
from sniper_ext.data import (
    ChipDataset,
    ChipStream,
    check_images,
    load_coco,
    make_synthetic_dataset,
    pad_colour,
    read_image,
)

IMAGES = 48 if QUICK else 200
CHIPS = 96 if QUICK else 400
ROUNDS = 2 if QUICK else 5


@pytest.fixture(scope="module", params=["tiny", "coco-like"])
def workload(request, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench_data"))
    path = make_synthetic_dataset(root, num_images=IMAGES, seed=0)
    images = os.path.join(root, "images")
    records = check_images(load_coco(path), images)
    config = preset("tiny").chips
    if request.param == "coco-like":
        k, big = 2.5, os.path.join(root, "big")
        os.makedirs(big)
        scaled = []
        for r in records:
            W, H = round(r.width * k), round(r.height * k)
            img = Image.open(os.path.join(images, r.file_name)).resize((W, H), Image.Resampling.BICUBIC)
            name = r.file_name.replace(".png", ".jpg")
            img.save(os.path.join(big, name), quality=90)
            boxes = np.minimum(r.boxes * np.array([W / r.width, H / r.height] * 2), [W, H, W, H])
            scaled.append(ImageRecord(r.image_id, W, H, boxes, r.labels, file_name=name))
        records, images, config = scaled, big, ChipConfig()
    db = plan_dataset(records, config=config, progress=False)
    stream = ChipStream(db, batch_per_rank=8, seed=0)
    rows = [tuple(r) for r in stream.rows(0, CHIPS).tolist()]
    return request.param, db, images, rows


def naive_chip(db, image_root, chip, flip, mean):
    """Decode, resize the whole image to the chip's scale, crop, flip, pad."""
    i = int(db.chip_image[chip])
    img = read_image(os.path.join(image_root, str(db.file_names[i])))
    H, W = img.shape[:2]
    s = float(db.chip_scale[chip])
    full = np.asarray(
        Image.fromarray(img).resize((math.floor(W * s + 0.5), math.floor(H * s + 0.5)), Image.Resampling.BILINEAR)
    )
    x0, y0, x1, y1 = (int(round(v)) for v in db.chip_canvas[chip])
    part = full[y0:y1, x0:x1]
    if flip:
        part = part[:, ::-1]
    K = db.config.chip_size
    out = np.empty((3, K, K), np.uint8)
    out[:] = mean[:, None, None]
    out[:, : part.shape[0], : part.shape[1]] = part.transpose(2, 0, 1)
    return out


@pytest.mark.parametrize("impl", ["sniper", "sniper-nocache", "naive"])
def test_chip_loading(benchmark, workload, impl):
    name, db, images, rows = workload
    benchmark.group = f"chip loading {name}: {len(rows)} chips of {db.config.chip_size}px, {IMAGES} images, 1 process"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = len(rows)
    if impl == "naive":
        mean = pad_colour((0.485, 0.456, 0.406))

        def run():
            return [naive_chip(db, images, c, f, mean) for c, f, _ in rows]

        setup = None
    else:
        ds = ChipDataset(db, images, [1, 2, 3], cache_size=0 if impl == "sniper-nocache" else 8)

        def run():
            return [ds[r]["image"] for r in rows]

        def setup():
            ds._cache.clear()  # every round starts cold

    out = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert len(out) == len(rows) and out[0].shape == (3, db.config.chip_size, db.config.chip_size)
    benchmark.extra_info["chips_per_s"] = len(rows) / benchmark.stats.stats.median
