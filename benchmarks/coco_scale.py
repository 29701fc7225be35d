"""COCO-size synthetic data for the scale benchmark (issue 19), with COCO train2017's counts and
statistics, generated with numpy from a seed (the same bytes every time) and written fast
(the full training file in about 15 s of CPU: 5 s to generate, 8-10 s to write).

    python benchmarks/coco_scale.py OUT [--scale 1.0] [--seed 0] [--images] [--no-val]

writes ``OUT/instances_train2017.json`` (and with ``--images`` ``OUT/train2017/*.jpg``),
``OUT/instances_val2017.json`` and ``OUT/val2017_results.json``, and prints the statistics and
the seconds each file took. In code: :func:`make_train`, :func:`make_val`, or the pieces
(:func:`generate_split`, :func:`write_annotations`, :func:`write_images`,
:func:`generate_detections`, :func:`write_results`, :func:`statistics`).

What is COCO's, at ``scale=1`` (``scale`` multiplies the image and box counts; the quick mode is
:data:`QUICK_SCALE`, 10,000 training images):

* 118,287 training images (5,000 for validation) with COCO's sparse ids and file names, sizes
  like COCO's: 97% with a long side of 640, the short side mostly 480 or 427 (a mix of aspect
  ratios), 70% landscape; about 2,700 distinct sizes;
* 860,001 boxes (36,781 for validation): 7.27 per image, 0.9% of the images without any, the
  rest 1 + a negative binomial (Poisson with a gamma-distributed rate: COCO's counts are
  overdispersed; here up to ~70 objects in an image, COCO's most is 93);
* ``area`` (what COCO's small/medium/large split uses) 41.9% small (< 32²), 34.1% medium, 24%
  large; box aspect ratios log-normal; 80 categories with COCO's ids (1..90 with gaps) and names,
  ``person`` 30% of the boxes as in COCO, the rest falling off with rank;
* a polygon segmentation of 8..40 points per box (one of 64 random star shapes per point count,
  scaled and placed; ``area`` is its area, ``bbox`` its bounding box, both of the written
  coordinates, which have 2 decimals like COCO's), and for the ~1% crowd boxes (``iscrowd`` 1)
  an uncompressed RLE of their pixels, so that the training file (433 MB) is about COCO's
  (448 MB) and parses like it;
* optionally one valid JPEG per image of the declared width and height (the encoded bytes of one
  flat-colour template per distinct size, about 2 KB, written per file: what remains is the file
  system's cost of creating 118k files);
* a validation set and 100 detections per image in the results format (500,000 at full scale):
  scores uniform in [0, 1) (5 decimals, as ``sniper infer`` writes them, so scores tie), boxes
  jittered from the image's ground truth (5 per object, mostly its class) or anywhere, of any
  class.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from dataclasses import dataclass

import numpy as np

COCO_TRAIN_IMAGES = 118_287
COCO_TRAIN_BOXES = 860_001
COCO_VAL_IMAGES = 5_000
COCO_VAL_BOXES = 36_781
DETECTIONS_PER_IMAGE = 100
#: ``scale`` of the quick mode: 10,000 training images (423 validation images)
QUICK_SCALE = 10_000 / COCO_TRAIN_IMAGES

#: shares of small (area < 32²), medium (< 96²) and large boxes in COCO train2017
SIZE_SHARES = (0.419, 0.341, 0.240)
CROWD_SHARE = 0.0105  # 9,009 crowd annotations of 860,001 in train2017
EMPTY_SHARE = 1_021 / COCO_TRAIN_IMAGES  # train2017 images without annotations
POLYGON_POINTS = (8, 40)

#: COCO's 80 (id, name) categories
COCO_CATEGORIES = tuple(
    enumerate(
        "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant - stop_sign "
        "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe - backpack umbrella - - "
        "handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard "
        "surfboard tennis_racket bottle - wine_glass cup fork knife spoon bowl banana apple sandwich orange "
        "broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed - dining_table - - toilet - tv "
        "laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator - book clock vase "
        "scissors teddy_bear hair_drier toothbrush".split(),
        start=1,
    )
)
COCO_CATEGORIES = tuple((i, n.replace("_", " ")) for i, n in COCO_CATEGORIES if n != "-")
assert len(COCO_CATEGORIES) == 80 and COCO_CATEGORIES[-1] == (90, "toothbrush")

_CHUNK = 20_000  # annotations per json.dumps call: bounded memory, C-speed encoding


@dataclass
class Split:
    """One generated split as arrays. Boxes are COCO ``[x, y, w, h]``; ``ann_image`` indexes
    the image arrays; polygon k's points are ``poly_xy[poly_start[k]:poly_start[k + 1]]``
    (none for crowd boxes, which are whole-pixel rectangles written as RLE)."""

    name: str
    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    ann_ids: np.ndarray
    ann_image: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    categories: np.ndarray
    crowd: np.ndarray
    poly_start: np.ndarray
    poly_xy: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_boxes(self) -> int:
        return len(self.ann_ids)

    def file_name(self, i: int) -> str:
        return f"{int(self.image_ids[i]):012d}.jpg"


def counts_for(scale: float) -> dict:
    """Image, box and detection counts of the train and val splits at ``scale``."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must lie in (0, 1], got {scale}")
    val_images = max(1, round(COCO_VAL_IMAGES * scale))
    return {
        "train_images": max(1, round(COCO_TRAIN_IMAGES * scale)),
        "train_boxes": round(COCO_TRAIN_BOXES * scale),
        "val_images": val_images,
        "val_boxes": round(COCO_VAL_BOXES * scale),
        "val_detections": DETECTIONS_PER_IMAGE * val_images,
    }


# ---------------------------------------------------------------------------------------------
# Generation


def _image_sizes(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(widths, heights) like COCO's: long side 640 for 97%, short side mostly 480 or 427."""
    long = np.where(rng.random(n) < 0.97, 640, rng.integers(300, 640, n))
    ratios = np.array([480, 427, 426, 360, 512, 640]) / 640
    kind = rng.choice(len(ratios) + 1, n, p=[0.45, 0.2, 0.06, 0.05, 0.03, 0.04, 0.17])
    ratio = np.where(kind < len(ratios), ratios[np.minimum(kind, len(ratios) - 1)], rng.uniform(0.5, 1.0, n))
    short = np.maximum(1, np.round(long * ratio)).astype(np.int64)
    landscape = rng.random(n) < 0.7
    return np.where(landscape, long, short), np.where(landscape, short, long)


def _box_counts(rng, n_images: int, n_boxes: int) -> np.ndarray:
    """Objects per image summing to ``n_boxes``: EMPTY_SHARE of the images empty, the others
    1 + a negative binomial (dispersion 1.5) with COCO's mean."""
    empty = rng.random(n_images) < EMPTY_SHARE
    mean_extra = max(n_boxes / max(1, (~empty).sum()) - 1, 1e-6)
    r = 1.5
    counts = np.where(empty, 0, 1 + rng.negative_binomial(r, r / (r + mean_extra), n_images))
    if (~empty).sum() == 0:
        empty[0] = False
        counts[0] = 1
    # exactly n_boxes: add to, or take from, random non-empty images (never below 1)
    while (diff := n_boxes - int(counts.sum())) != 0:
        if diff > 0:
            np.add.at(counts, rng.choice(np.flatnonzero(~empty), diff), 1)
        else:
            can = np.flatnonzero(counts > 1)
            take = rng.choice(can, min(-diff, len(can)), replace=False)
            counts[take] -= 1
    return counts


def _category_weights() -> np.ndarray:
    """person 30% (as in COCO), the other 79 falling off with rank (1 / (rank + 8))."""
    w = 1.0 / (np.arange(1, 80) + 8.0)
    return np.concatenate([[0.3], 0.7 * w / w.sum()])


def _shape_bank(rng, variants: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random star-shaped polygons around 0 in [-1, 1]², ``variants`` of each point count
    8..40 (each box scales and places one of them): (start offsets [S + 1], points [P, 2], areas
    [S], boxes [S, 4] as x0, y0, x1, y1)."""
    pts = np.repeat(np.arange(POLYGON_POINTS[0], POLYGON_POINTS[1] + 1), variants)
    start = np.zeros(len(pts) + 1, np.int64)
    np.cumsum(pts, out=start[1:])
    owner = np.repeat(np.arange(len(pts)), pts)
    k = np.arange(start[-1]) - start[owner]
    theta = 2 * np.pi * (k + 0.8 * rng.random(start[-1])) / pts[owner]  # increasing within a polygon
    rho = rng.uniform(0.6, 1.0, start[-1])
    xy = np.stack([rho * np.cos(theta), rho * np.sin(theta)], axis=1)
    box = np.stack([np.minimum.reduceat(xy, start[:-1]), np.maximum.reduceat(xy, start[:-1])], axis=1).reshape(-1, 4)
    return start, xy, _shoelace(start, xy), box


def _shoelace(start: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Areas of the polygons ``xy[start[k]:start[k + 1]]`` (counter-clockwise positive)."""
    nxt = np.arange(1, len(xy) + 1)
    nxt[start[1:] - 1] = start[:-1]
    cross = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
    return 0.5 * np.add.reduceat(cross, start[:-1])


def generate_split(num_images: int, num_boxes: int, *, seed: int, name: str = "train2017") -> Split:
    """A COCO-like split of ``num_images`` images and ``num_boxes`` boxes (module docstring)."""
    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.choice(np.arange(1, 5 * num_images + 10), num_images, replace=False))
    widths, heights = _image_sizes(rng, num_images)
    counts = _box_counts(rng, num_images, num_boxes)
    ann_image = np.repeat(np.arange(num_images), counts)
    n = num_boxes
    ann_ids = np.sort(rng.choice(np.arange(1, 3 * n + 10), n, replace=False))
    cat_ids = np.array([c for c, _ in COCO_CATEGORIES])
    categories = cat_ids[rng.choice(80, n, p=_category_weights())]
    crowd = rng.random(n) < CROWD_SHARE

    W, H = widths[ann_image].astype(np.float64), heights[ann_image].astype(np.float64)
    # target areas: the size class by COCO's shares, log-uniform inside it
    size = rng.choice(3, n, p=SIZE_SHARES)
    lo = np.array([2.0**2, 32.0**2, 96.0**2])[size]
    hi = np.array([32.0**2, 96.0**2, np.inf])[size]
    hi = np.minimum(hi, np.maximum(0.5 * W * H, 96.0**2 * 1.5))  # large: up to half the image
    area = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    aspect = np.exp(rng.normal(0.0, 0.5, n))  # box width / height

    bank_start, bank_xy, bank_area, bank_box = _shape_bank(rng)
    shape = rng.integers(0, len(bank_area), n)
    ux0, uy0, ux1, uy1 = bank_box[shape].T
    # half-axes giving the target area with the wanted aspect, shrunk to fit inside the image
    b = np.sqrt(area / (bank_area[shape] * aspect))
    a = aspect * b
    shrink = np.minimum(1.0, np.minimum((W - 1) / (a * (ux1 - ux0)), (H - 1) / (b * (uy1 - uy0))))
    a, b = a * shrink, b * shrink
    # the polygon's bounding box placed uniformly inside the image; a point is
    # round(c + axis * unit, 2), so the box of the written points is that of the unit box's corners
    cx = rng.uniform(0, 1, n) * (W - a * (ux1 - ux0)) - a * ux0
    cy = rng.uniform(0, 1, n) * (H - b * (uy1 - uy0)) - b * uy0
    x0, x1 = (np.clip(np.round(cx + a * u, 2), 0, W) for u in (ux0, ux1))
    y0, y1 = (np.clip(np.round(cy + b * u, 2), 0, H) for u in (uy0, uy1))
    boxes = np.round(np.stack([x0, y0, x1 - x0, y1 - y0], axis=1), 2)
    areas = np.empty(n)

    # polygons for the others, scaled and placed: poly_xy[poly_start[k]:poly_start[k + 1]]
    poly = ~crowd
    pts = np.where(poly, np.diff(bank_start)[shape], 0)
    poly_start = np.zeros(n + 1, np.int64)
    np.cumsum(pts, out=poly_start[1:])
    P = int(poly_start[-1])
    owner = np.repeat(np.flatnonzero(poly), pts[poly])  # the box of each point
    idx = np.take(bank_start[shape] - poly_start[:-1], owner) + np.arange(P)  # its point in the bank
    xy = np.empty((P, 2))
    for col, c, axis, side in ((0, cx, a, W), (1, cy, b, H)):
        v = np.take(c, owner) + np.take(axis, owner) * np.take(bank_xy[:, col], idx)
        xy[:, col] = np.clip(np.round(v, 2), 0, np.take(side, owner))
    if P:
        areas[poly] = np.abs(_shoelace(np.append(poly_start[:-1][poly], P), xy))  # full precision like COCO's

    # crowd boxes: the whole pixels under the polygon's box, as a rectangle (RLE when written)
    if crowd.any():
        px0, py0 = np.floor(x0[crowd]), np.floor(y0[crowd])
        px1 = np.maximum(np.ceil(x1[crowd]), px0 + 1)
        py1 = np.maximum(np.ceil(y1[crowd]), py0 + 1)
        boxes[crowd] = np.stack([px0, py0, px1 - px0, py1 - py0], axis=1)
        areas[crowd] = (px1 - px0) * (py1 - py0)
    return Split(name, image_ids, widths, heights, ann_ids, ann_image, boxes, areas, categories, crowd, poly_start, xy)


def generate_detections(split: Split, *, per_image: int = DETECTIONS_PER_IMAGE, seed: int = 2) -> dict:
    """``per_image`` detections of every image of ``split`` as arrays {image_id, category_id,
    bbox [N, 4] xywh, score}: 5 per ground-truth object jittered from it (std 2-30% of its
    size; its class 90% of the time), the rest random boxes of random classes; scores uniform."""
    rng = np.random.default_rng(seed)
    n_img = split.num_images
    first = np.searchsorted(split.ann_image, np.arange(n_img))
    n_gt = np.bincount(split.ann_image, minlength=n_img)
    jittered = np.minimum(per_image, 5 * n_gt)
    image = np.repeat(np.arange(n_img), per_image)
    slot = np.tile(np.arange(per_image), n_img)
    is_jit = slot < jittered[image]
    N = len(image)
    W, H = split.widths[image].astype(np.float64), split.heights[image].astype(np.float64)
    cat_ids = np.array([c for c, _ in COCO_CATEGORIES])
    category = cat_ids[rng.integers(0, 80, N)]
    # random boxes: log-uniform sides 4..400 px, anywhere in the image
    w = np.minimum(np.exp(rng.uniform(np.log(4), np.log(400), N)), W)
    h = np.minimum(w * np.exp(rng.normal(0, 0.5, N)), H)
    box = np.stack([rng.uniform(0, 1, N) * (W - w), rng.uniform(0, 1, N) * (H - h), w, h], axis=1)
    # jittered copies of a random object of the image
    j = np.flatnonzero(is_jit)
    gt = first[image[j]] + (rng.random(len(j)) * n_gt[image[j]]).astype(np.int64)
    g = split.boxes[gt]
    sd = rng.uniform(0.02, 0.3, (len(j), 1)) * g[:, [2, 3, 2, 3]]
    jb = g + rng.normal(0, 1, (len(j), 4)) * sd
    jb[:, 2:] = np.abs(jb[:, 2:])
    box[j] = jb
    keep_class = rng.random(len(j)) < 0.9
    category[j[keep_class]] = split.categories[gt[keep_class]]
    return {
        "image_id": split.image_ids[image],
        "category_id": category,
        "bbox": np.round(box, 2),
        "score": np.round(rng.random(N), 5),
    }


# ---------------------------------------------------------------------------------------------
# Writing


def _rle_counts(x0: int, y0: int, w: int, h: int, W: int, H: int) -> list:
    """COCO's uncompressed RLE (column-major runs, zeros first) of the rectangle x0..x0+w-1,
    y0..y0+h-1 in an H x W image."""
    counts = [x0 * H + y0]
    for _ in range(w - 1):
        counts += [h, H - h]
    counts += [h, H - (y0 + h) + (W - x0 - w) * H]
    return counts


class _Writer:
    """Writes JSON text in pieces to a binary file; counts the bytes."""

    def __init__(self, f):
        self.f, self.bytes = f, 0

    def __call__(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.f.write(data)
        self.bytes += len(data)

    def items(self, rows: list, first: bool) -> None:
        """``rows`` as JSON array items (a comma before them unless ``first``)."""
        if rows:
            self(("" if first else ",") + json.dumps(rows, separators=(",", ":"))[1:-1])


class _Hundredths:
    """Vectorised JSON text of numbers with 2 decimals in [0, ``top``]: each the text that
    ``json.dumps`` writes for ``k / 100`` (Python's shortest repr), looked up in a table and
    scattered into one byte buffer. What makes the full training file a matter of seconds: its
    41 million polygon coordinates would take json.dumps' float formatting about half a minute."""

    def __init__(self, top: float):
        texts = [repr(k / 100).encode() for k in range(int(round(top * 100)) + 1)]
        self.width = max(len(t) for t in texts)
        self.table = np.frombuffer(b"".join(t.ljust(self.width) for t in texts), np.uint8).reshape(-1, self.width)
        self.lengths = np.array([len(t) for t in texts], np.int64)

    def text(self, values: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(buffer, offsets): number i of ``values`` (rounded to 2 decimals, flattened) is
        ``buffer[offsets[i]:offsets[i + 1] - 1]``, each followed by a comma, so that numbers
        i..j-1 joined by commas are ``buffer[offsets[i]:offsets[j] - 1]``."""
        k = np.round(np.asarray(values, np.float64).ravel() * 100).astype(np.int64)
        if k.size and (k.min() < 0 or k.max() >= len(self.lengths)):
            raise ValueError(f"values outside [0, {(len(self.lengths) - 1) / 100}]")
        lengths = self.lengths[k]
        offsets = np.zeros(len(k) + 1, np.int64)
        np.cumsum(lengths + 1, out=offsets[1:])
        out = np.full(int(offsets[-1]), ord(","), np.uint8)
        chars = self.table[k]
        for j in range(self.width):
            m = lengths > j
            out[offsets[:-1][m] + j] = chars[m, j]
        return out.tobytes(), offsets


_ANNOTATION = b'{"segmentation":[[%s]],"area":%r,"iscrowd":0,"image_id":%d,"bbox":[%s],"category_id":%d,"id":%d}'


def write_annotations(path, split: Split) -> int:
    """Writes ``split`` as a COCO instances file (the fields and key order of COCO's); returns
    its size in bytes. Coordinates go through :class:`_Hundredths`, the rest through json.dumps
    or bytes formatting, in chunks: seconds, not minutes, at full size."""
    folder = split.name
    numbers = _Hundredths(max(int(split.widths.max(initial=1)), int(split.heights.max(initial=1))))
    with open(path, "wb") as f:
        out = _Writer(f)
        info = {
            "description": f"synthetic COCO-size {split.name} (sniper_ext benchmarks/coco_scale.py)",
            "version": "1.0",
            "year": 2017,
        }
        licenses = [{"url": f"http://example.org/license/{k}", "id": k, "name": f"license {k}"} for k in range(1, 9)]
        out('{"info":' + json.dumps(info) + ',"licenses":' + json.dumps(licenses) + ',"images":[')
        for lo in range(0, split.num_images, _CHUNK):
            rows = []
            for i in range(lo, min(lo + _CHUNK, split.num_images)):
                name, iid = split.file_name(i), int(split.image_ids[i])
                rows.append(
                    {
                        "license": iid % 8 + 1,
                        "file_name": name,
                        "coco_url": f"http://images.cocodataset.org/{folder}/{name}",
                        "height": int(split.heights[i]),
                        "width": int(split.widths[i]),
                        "date_captured": f"2013-11-{iid % 28 + 1:02d} {iid % 24:02d}:{iid % 60:02d}:{iid // 60 % 60:02d}",
                        "flickr_url": f"http://farm{iid % 9 + 1}.staticflickr.com/{iid % 9000 + 1000}/{iid}_synthetic_z.jpg",
                        "id": iid,
                    }
                )
            out.items(rows, lo == 0)
        out('],"annotations":[')
        for lo in range(0, split.num_boxes, _CHUNK):
            hi = min(lo + _CHUNK, split.num_boxes)
            a, b = int(split.poly_start[lo]), int(split.poly_start[hi])
            coords, at = numbers.text(split.poly_xy[a:b])
            ends = (2 * (split.poly_start[lo : hi + 1] - a)).tolist()
            at_list = at.tolist()
            box_text, box_at = numbers.text(split.boxes[lo:hi])
            box_list = box_at.tolist()
            areas = split.areas[lo:hi].tolist()
            image_ids = split.image_ids[split.ann_image[lo:hi]].tolist()
            cats, ids, crowd = split.categories[lo:hi].tolist(), split.ann_ids[lo:hi].tolist(), split.crowd[lo:hi]
            rows = []
            for k in range(hi - lo):
                box = box_text[box_list[4 * k] : box_list[4 * k + 4] - 1]
                if crowd[k]:
                    i = int(split.ann_image[lo + k])
                    W, H = int(split.widths[i]), int(split.heights[i])
                    x0, y0, w, h = (int(v) for v in split.boxes[lo + k])
                    rle = {"counts": _rle_counts(x0, y0, w, h, W, H), "size": [H, W]}
                    row = {"segmentation": rle, "area": areas[k], "iscrowd": 1, "image_id": image_ids[k]}
                    text = json.dumps(row, separators=(",", ":"))[:-1].encode()
                    rows.append(text + b',"bbox":[%s],"category_id":%d,"id":%d}' % (box, cats[k], ids[k]))
                else:
                    seg = coords[at_list[ends[k]] : at_list[ends[k + 1]] - 1]
                    rows.append(_ANNOTATION % (seg, areas[k], image_ids[k], box, cats[k], ids[k]))
            out((b"," if lo else b"") + b",".join(rows))
        categories = [{"supercategory": "object", "id": c, "name": n} for c, n in COCO_CATEGORIES]
        out('],"categories":' + json.dumps(categories, separators=(",", ":")) + "}")
        return out.bytes


def write_results(path, detections: dict) -> int:
    """Writes ``detections`` (from :func:`generate_detections`) as a COCO results file (a list
    of {"image_id", "category_id", "bbox", "score"}); returns its size in bytes."""
    n = len(detections["score"])
    with open(path, "wb") as f:
        out = _Writer(f)
        out("[")
        for lo in range(0, n, _CHUNK):
            hi = min(lo + _CHUNK, n)
            rows = [
                {"image_id": i, "category_id": c, "bbox": b, "score": s}
                for i, c, b, s in zip(
                    detections["image_id"][lo:hi].tolist(),
                    detections["category_id"][lo:hi].tolist(),
                    detections["bbox"][lo:hi].tolist(),
                    detections["score"][lo:hi].tolist(),
                )
            ]
            out.items(rows, lo == 0)
        out("]")
        return out.bytes


def _jpeg(width: int, height: int) -> bytes:
    """A valid baseline JPEG of ``width`` x ``height`` (RGB, 4:2:0): a flat colour with optimised
    Huffman tables, about 2 KB at 640 x 480, since writing the bytes is what costs per file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (124, 116, 104)).save(
        buf, format="JPEG", quality=75, optimize=True, subsampling=2
    )
    return buf.getvalue()


def write_images(folder, split: Split) -> int:
    """One JPEG per image of ``split`` under ``folder`` (its ``file_name``), of the declared
    size: each distinct size encoded once, its bytes written per file. Returns the bytes written."""
    os.makedirs(folder, exist_ok=True)
    templates: dict = {}
    total = 0
    for i in range(split.num_images):
        key = (int(split.widths[i]), int(split.heights[i]))
        data = templates.get(key)
        if data is None:
            data = templates[key] = _jpeg(*key)
        with open(os.path.join(folder, split.file_name(i)), "wb") as f:
            f.write(data)
        total += len(data)
    return total


# ---------------------------------------------------------------------------------------------
# Statistics and the two sets


def statistics(split: Split) -> dict:
    """The numbers the module docstring promises, measured on ``split``."""
    n = max(1, split.num_boxes)
    per_image = np.bincount(split.ann_image, minlength=split.num_images)
    long = np.maximum(split.widths, split.heights)
    return {
        "images": split.num_images,
        "boxes": split.num_boxes,
        "boxes_per_image": split.num_boxes / split.num_images,
        "max_boxes_per_image": int(per_image.max(initial=0)),
        "empty_images": int((per_image == 0).sum()),
        "small": float((split.areas < 32**2).sum() / n),
        "medium": float(((split.areas >= 32**2) & (split.areas < 96**2)).sum() / n),
        "large": float((split.areas >= 96**2).sum() / n),
        "crowd": float(split.crowd.sum() / n),
        "categories": len(np.unique(split.categories)),
        "long_side_640": float((long == 640).mean()),
        "landscape": float((split.widths > split.heights).mean()),
        "distinct_sizes": len(set(zip(split.widths.tolist(), split.heights.tolist()))),
        "polygon_points_per_box": len(split.poly_xy) / max(1, int((~split.crowd).sum())),
    }


def make_train(out_dir, scale: float = 1.0, *, seed: int = 0, images: bool = False) -> dict:
    """``out_dir/instances_train2017.json`` (and with ``images`` the JPEGs in
    ``out_dir/train2017``) at ``scale``: {"annotations", "image_root", "split", "statistics",
    "bytes", "image_bytes", "seconds" (generate, write, images)}."""
    c = counts_for(scale)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    split = generate_split(c["train_images"], c["train_boxes"], seed=seed, name="train2017")
    t1 = time.perf_counter()
    path = os.path.join(out_dir, "instances_train2017.json")
    size = write_annotations(path, split)
    t2 = time.perf_counter()
    root = os.path.join(out_dir, "train2017")
    image_bytes = write_images(root, split) if images else 0
    t3 = time.perf_counter()
    return {
        "annotations": path,
        "image_root": root if images else None,
        "split": split,
        "statistics": statistics(split),
        "bytes": size,
        "image_bytes": image_bytes,
        "seconds": {"generate": t1 - t0, "write": t2 - t1, "images": t3 - t2},
    }


def make_val(out_dir, scale: float = 1.0, *, seed: int = 1) -> dict:
    """``out_dir/instances_val2017.json`` and ``out_dir/val2017_results.json`` (100 detections
    per image) at ``scale``: {"annotations", "results", "split", "statistics", "detections",
    "bytes", "seconds"}."""
    c = counts_for(scale)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    split = generate_split(c["val_images"], c["val_boxes"], seed=seed, name="val2017")
    dets = generate_detections(split, seed=seed + 1)
    t1 = time.perf_counter()
    ann = os.path.join(out_dir, "instances_val2017.json")
    res = os.path.join(out_dir, "val2017_results.json")
    size = write_annotations(ann, split) + write_results(res, dets)
    t2 = time.perf_counter()
    return {
        "annotations": ann,
        "results": res,
        "split": split,
        "statistics": statistics(split),
        "detections": len(dets["score"]),
        "bytes": size,
        "seconds": {"generate": t1 - t0, "write": t2 - t1},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", help="output folder")
    p.add_argument("--scale", type=float, default=1.0, help=f"fraction of COCO's counts (quick: {QUICK_SCALE:.4f})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", action="store_true", help="also write the training JPEGs")
    p.add_argument("--no-val", action="store_true", help="no validation set and results")
    args = p.parse_args(argv)
    train = make_train(args.out, args.scale, seed=args.seed, images=args.images)
    print(f"{train['annotations']}: {train['bytes'] / 2**20:.1f} MiB, seconds {train['seconds']}")
    print(json.dumps(train["statistics"], indent=1))
    if train["image_root"]:
        print(f"{train['image_root']}: {train['image_bytes'] / 2**20:.1f} MiB of JPEGs")
    if not args.no_val:
        val = make_val(args.out, args.scale, seed=args.seed + 1)
        print(f"{val['annotations']}, {val['results']} ({val['detections']} detections): seconds {val['seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
