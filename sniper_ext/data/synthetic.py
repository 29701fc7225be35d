"""A rendered multi-scale detection dataset in COCO format (the demo's and the tests' data).

Every image has a textured background (a smooth two-colour gradient, soft blobs, sometimes
stripes, sensor noise) and 1–12 objects whose class is their *shape* ("disc", "square",
"triangle", ...), in any colour, with sizes log-uniform from ~4 px to 90% of the image's short
side, so that most objects are small, as in COCO. Each image also holds a few *distractors*:
unannotated things that look like objects (hollow outlines of the class shapes, pentagons,
hexagons, thin bars) in the same colours. A detector trained without negative chips tends to
fire on them; their boxes are listed under the top-level key ``"distractors"`` of the JSON
(``[{"image_id", "bbox", "kind"}]``; pycocotools ignores unknown keys).

Images are 192–320 px on the long side with COCO-like aspect ratios, sized for the ``tiny``
preset (COCO's geometry scaled by 0.4). Objects are drawn large first, and a later (smaller)
object may cover at most 40% of an earlier one's box, so nothing is hidden completely.

Everything is a function of ``(seed, split, image index)``: the same arguments give identical
files, byte for byte. Files are written atomically; a second call with the same parameters
finds the JSON (it records the generator's parameters) and returns at once.
"""

from __future__ import annotations

import io
import json
import math
import os
import zlib

import numpy as np
from PIL import Image
from tqdm import tqdm

from .._atomic import atomic_write

__all__ = ["make_synthetic_dataset", "CLASS_SHAPES", "GENERATOR_VERSION"]

#: class names, in category-id order (category id = position + 1)
CLASS_SHAPES = ("disc", "square", "triangle", "cross", "star", "diamond")
#: distractor kinds besides hollow versions of the class shapes
_DISTRACTOR_POLYGONS = ("pentagon", "hexagon", "bar")
#: bumped whenever the rendered content changes, so that old files are regenerated
GENERATOR_VERSION = 1
_ASPECTS = np.array([4 / 3, 3 / 4, 3 / 2, 2 / 3, 1.0, 16 / 9, 9 / 16])
_ASPECT_P = np.array([0.3, 0.2, 0.12, 0.1, 0.12, 0.1, 0.06])
_MAX_COVER = 0.4  # a later object may cover at most this fraction of an earlier object's box


# ---------------------------------------------------------------------------------------------
# shapes: vertices in the unit box [0, 1]^2, each touching all four sides (the box is tight)


def _regular(n: int, phase: float, inner: float | None = None) -> np.ndarray:
    """A regular n-gon (or an n-pointed star with ``inner`` radius), scaled to fill the unit box."""
    k = np.arange(n * (2 if inner else 1))
    step = math.pi / n if inner else 2 * math.pi / n
    r = np.where(k % 2 == 1, inner, 1.0) if inner else np.ones(len(k))
    a = phase + k * step
    v = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    v -= v.min(0)
    return v / v.max(0)


_POLYGONS = {
    "diamond": np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]]),
    "star": _regular(5, -math.pi / 2, inner=0.45),
    "pentagon": _regular(5, -math.pi / 2),
    "hexagon": _regular(6, 0.0),
}


def _triangle(rng) -> np.ndarray:
    """A triangle with its base on one side of the box and its apex somewhere on the opposite side."""
    apex = rng.uniform(0.2, 0.8)
    v = np.array([[0.0, 1.0], [1.0, 1.0], [apex, 0.0]])
    side = rng.integers(4)  # pointing up, right, down, left
    if side == 1:
        v = np.stack([1 - v[:, 1], v[:, 0]], 1)
    elif side == 2:
        v = np.stack([v[:, 0], 1 - v[:, 1]], 1)
    elif side == 3:
        v = np.stack([v[:, 1], v[:, 0]], 1)
    return v


def _in_polygon(u, v, poly) -> np.ndarray:
    """Even-odd point-in-polygon test of the points (u, v) (arrays of one shape)."""
    inside = np.zeros(u.shape, bool)
    n = len(poly)
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (y0 > v) != (y1 > v)
        xc = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < xc)
    return inside


def _in_shape(u, v, shape: str, params) -> np.ndarray:
    """Inside test in unit-box coordinates (u, v in [0, 1] over the shape's box)."""
    if shape == "disc":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape in ("square", "bar"):
        return (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "cross":
        t = params
        inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        return inside & ((np.abs(u - 0.5) <= t / 2) | (np.abs(v - 0.5) <= t / 2))
    return _in_polygon(u, v, params)


def _coverage(shape: str, params, box, hollow: float | None, ss: int):
    """Anti-aliased coverage of a shape with box ``box`` (x0, y0, x1, y1, image pixels), over the
    pixel window it touches: (coverage [h, w] float32, (left, top) of the window). ``hollow``: the
    outline's thickness in pixels (an outline only)."""
    x0, y0, x1, y1 = box
    left, top = int(math.floor(x0)), int(math.floor(y0))
    right, bottom = int(math.ceil(x1)), int(math.ceil(y1))
    w, h = right - left, bottom - top
    # Sample points at the centres of an ss x ss grid in every pixel.
    off = (np.arange(ss) + 0.5) / ss
    xs = (left + (np.arange(w)[:, None] + off[None, :]).reshape(-1) - x0) / (x1 - x0)
    ys = (top + (np.arange(h)[:, None] + off[None, :]).reshape(-1) - y0) / (y1 - y0)
    u, v = np.meshgrid(xs, ys)
    mask = _in_shape(u, v, shape, params)
    if hollow is not None:
        # The same shape shrunk about its centre by the thickness on every side.
        tx, ty = hollow / (x1 - x0), hollow / (y1 - y0)
        if tx < 0.5 and ty < 0.5:
            mask &= ~_in_shape((u - tx) / (1 - 2 * tx), (v - ty) / (1 - 2 * ty), shape, params)
    cov = mask.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)
    return cov, (left, top)


# ---------------------------------------------------------------------------------------------
# colours and backgrounds


def _hsv_to_rgb(h, s, v) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return 255.0 * np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _background(rng, W: int, H: int) -> np.ndarray:
    """[H, W, 3] float32: a gradient between two muted colours, soft blobs, sometimes stripes."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    c0 = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9))
    c1 = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9))
    a = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        sx, sy = rng.uniform(0.05, 0.3) * W, rng.uniform(0.05, 0.3) * H
        g = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) / 2) * rng.uniform(0.2, 0.6)
        col = _hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.2, 0.95))
        img += g[..., None] * (col[None, None, :] - img)
    for _ in range(int(rng.integers(0, 3))):
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 40)
        s = np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period + rng.uniform(0, 2 * math.pi))
        img += (s * rng.uniform(6, 22))[..., None] * rng.uniform(0.5, 1.0, 3)[None, None, :]
    return img.astype(np.float32)


def _object_colour(rng, local_mean) -> np.ndarray:
    """A saturated colour that stands out from the background under the object."""
    best, best_d = np.zeros(3), -1.0
    for _ in range(8):
        c = _hsv_to_rgb(rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.3, 1.0))
        d = float(np.linalg.norm(c - local_mean))
        if d > best_d:
            best, best_d = c, d
        if d >= 80:
            break
    return best


# ---------------------------------------------------------------------------------------------
# one image


def _item_sizes(rng, n, lo, hi, W, H, aspect_lo, aspect_hi):
    size = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    aspect = np.exp(rng.uniform(math.log(aspect_lo), math.log(aspect_hi), n))
    w = np.minimum(size * np.sqrt(aspect), 0.95 * W)
    h = np.minimum(size / np.sqrt(aspect), 0.95 * H)
    return w, h


def _place(rng, items, W, H):
    """Positions for items (dicts with w, h), largest first; a later item covers at most
    ``_MAX_COVER`` of an earlier one's box (summed over the later ones). Items without room are
    dropped. Returns the placed items, in drawing order."""
    placed: list = []
    covered: list = []
    for it in sorted(items, key=lambda it: -it["w"] * it["h"]):
        for _ in range(30):
            # Two decimals, rounded down so that the box stays inside the image.
            x = math.floor(rng.uniform(0, W - it["w"]) * 100) / 100
            y = math.floor(rng.uniform(0, H - it["h"]) * 100) / 100
            box = (x, y, x + it["w"], y + it["h"])
            inter = []
            for p in placed:
                px0, py0, px1, py1 = p["box"]
                iw = min(box[2], px1) - max(box[0], px0)
                ih = min(box[3], py1) - max(box[1], py0)
                inter.append(max(iw, 0.0) * max(ih, 0.0))
            if all(covered[k] + inter[k] <= _MAX_COVER * (p["w"] * p["h"]) for k, p in enumerate(placed)):
                for k in range(len(placed)):
                    covered[k] += inter[k]
                it["box"] = box
                placed.append(it)
                covered.append(0.0)
                break
    return placed


def _render_image(rng, num_classes: int):
    """(uint8 [H, W, 3], objects [(box, category id)], distractors [(box, kind)]) of one image."""
    long_side = int(rng.integers(192, 321))
    aspect = float(rng.choice(_ASPECTS, p=_ASPECT_P))
    W, H = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    short = min(W, H)
    img = _background(rng, W, H)
    classes = CLASS_SHAPES[:num_classes]
    while True:
        items = []
        n_obj = int(rng.integers(1, 13))
        w, h = _item_sizes(rng, n_obj, 4.0, 0.9 * short, W, H, 0.5, 2.0)
        for k in range(n_obj):
            cat = int(rng.integers(num_classes))
            items.append(
                {"w": round(float(w[k]), 2), "h": round(float(h[k]), 2), "cat": cat + 1, "shape": classes[cat]}
            )
        n_dis = int(rng.integers(0, 5))
        w, h = _item_sizes(rng, n_dis, 10.0, 0.6 * short, W, H, 0.5, 2.0)
        for k in range(n_dis):
            kind = (["hollow " + c for c in classes] + list(_DISTRACTOR_POLYGONS))[
                int(rng.integers(num_classes + len(_DISTRACTOR_POLYGONS)))
            ]
            dw, dh = float(w[k]), float(h[k])
            if kind == "bar":  # thin: 1:4 to 1:8, either way
                r = rng.uniform(4, 8)
                s = math.sqrt(dw * dh)
                dw, dh = (
                    (s * math.sqrt(r), s / math.sqrt(r)) if rng.random() < 0.5 else (s / math.sqrt(r), s * math.sqrt(r))
                )
                dw, dh = min(dw, 0.95 * W), min(dh, 0.95 * H)
            items.append({"w": round(dw, 2), "h": round(dh, 2), "cat": 0, "shape": kind.removeprefix("hollow ")})
            items[-1]["hollow"] = kind.startswith("hollow ")
            items[-1]["kind"] = kind
        placed = _place(rng, items, W, H)
        if any(it["cat"] for it in placed):
            break
    objects, distractors = [], []
    for it in placed:
        shape = it["shape"]
        params = None
        if shape == "triangle":
            params = _triangle(rng)
        elif shape == "cross":
            params = rng.uniform(0.3, 0.45)
        elif shape in _POLYGONS:
            params = _POLYGONS[shape]
        x0, y0, x1, y1 = it["box"]
        size = math.sqrt(it["w"] * it["h"])
        hollow = max(1.2, rng.uniform(0.1, 0.18) * min(it["w"], it["h"])) if it.get("hollow") else None
        cov, (left, top) = _coverage(shape, params, it["box"], hollow, ss=4 if size < 48 else 2)
        region = img[top : top + cov.shape[0], left : left + cov.shape[1]]
        hh, ww = region.shape[:2]
        cov = cov[:hh, :ww]
        colour = _object_colour(rng, region.reshape(-1, 3).mean(0))
        # Shading across the object and a little texture, so that objects are not flat.
        shade = np.linspace(-1, 1, ww, dtype=np.float32)[None, :] * rng.uniform(-20, 20) + np.linspace(
            -1, 1, hh, dtype=np.float32
        )[:, None] * rng.uniform(-20, 20)
        fill = colour[None, None, :] + shade[..., None]
        region += cov[..., None] * (fill - region)
        if it["cat"]:
            objects.append((it["box"], it["cat"]))
        else:
            distractors.append((it["box"], it["kind"]))
    img += rng.normal(0, rng.uniform(2, 7), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), objects, distractors


# ---------------------------------------------------------------------------------------------
# the dataset


def _params(num_images, seed, split, num_classes) -> dict:
    return {
        "generator": "sniper_ext.data.synthetic",
        "version": GENERATOR_VERSION,
        "num_images": int(num_images),
        "seed": int(seed),
        "split": split,
        "num_classes": int(num_classes),
    }


def _existing(path, params, root, file_names) -> bool:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("synthetic") != params:
        return False
    return all(os.path.isfile(os.path.join(root, "images", n)) for n in file_names)


def _bbox(box) -> list:
    x0, y0, x1, y1 = box
    return [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)]


def make_synthetic_dataset(
    root,
    num_images: int = 64,
    seed: int = 0,
    *,
    split: str = "train",
    num_classes: int = 3,
    progress: bool = False,
) -> str:
    """Renders ``num_images`` images into ``root/images/<split>_000001.png`` ... and writes the
    COCO annotations ``root/<split>.json`` (returned). Same arguments, identical bytes; a second
    call with the same parameters reuses the files. See the module docstring for the content."""
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"make_synthetic_dataset: `num_images` must be a positive integer, got {num_images!r}")
    if not 1 <= num_classes <= len(CLASS_SHAPES):
        raise ValueError(
            f"make_synthetic_dataset: `num_classes` must be in 1..{len(CLASS_SHAPES)}, got {num_classes!r}"
        )
    if not split or not all(ch.isalnum() or ch in "-_" for ch in split):
        raise ValueError(
            f"make_synthetic_dataset: `split` must be a plain name (letters, digits, - or _), got {split!r}"
        )
    root = os.fspath(root)
    json_path = os.path.join(root, f"{split}.json")
    params = _params(num_images, seed, split, num_classes)
    file_names = [f"{split}_{i + 1:06d}.png" for i in range(num_images)]
    if _existing(json_path, params, root, file_names):
        return json_path

    split_key = zlib.crc32(split.encode())
    images: list = []
    annotations: list = []
    distractors: list = []
    for i in tqdm(range(num_images), desc=f"rendering {split}", unit="img", disable=not progress):
        rng = np.random.default_rng([int(seed), split_key, i])
        pixels, objects, dis = _render_image(rng, num_classes)
        H, W = pixels.shape[:2]
        image_id = i + 1
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
        atomic_write(os.path.join(root, "images", file_names[i]), lambda f, d=data: f.write(d), prefix=".img-")
        images.append({"id": image_id, "width": W, "height": H, "file_name": file_names[i]})
        for box, cat in objects:
            bbox = _bbox(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": bbox,
                    "area": round(bbox[2] * bbox[3], 2),
                    "iscrowd": 0,
                }
            )
        for box, kind in dis:
            distractors.append({"image_id": image_id, "bbox": _bbox(box), "kind": kind})
    coco = {
        "info": {"description": f"sniper_ext synthetic shapes dataset ({split})", "version": str(GENERATOR_VERSION)},
        "synthetic": params,
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CLASS_SHAPES[:num_classes])
        ],
        "distractors": distractors,
    }
    text = json.dumps(coco, separators=(",", ":")).encode()
    return atomic_write(json_path, lambda f: f.write(text), prefix=".coco-", suffix=".json.tmp")
