"""The chips of a :class:`~sniper_ext.chips.ChipDB` as training samples, and their batches.

``ChipDataset(db, image_root, category_ids)[(chip, flip, seed)]`` crops chip ``chip`` from its
original image and resizes it to the chip's canvas size in one bilinear resample (PIL's
``resize(..., box=...)``: the chip's box in original pixels maps onto its canvas extent, so the
result equals resizing the whole image to the chip's scale and cropping, without the whole-image
resize), flips it horizontally within its content width when ``flip``, and pads it to K x K with
the mean colour. Its ground truth comes from the database (chip pixels, flipped as the image).
:func:`collate_chips` makes the batch of the shared contract (``CONTRACT.md``)::

    images uint8 [B,3,K,K], gt_boxes float32 [B,G,4], gt_labels int64 [B,G], gt_state int8 [B,G],
    canvas_wh float32 [B,2], valid_range float32 [B,2], chip/image/seed int64 [B], flip bool [B]

Decoded images are kept in a small LRU cache (per DataLoader worker: each has its own copy of
the dataset), since the chips of one image at several scales often come close together.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

from ..chips.database import ChipDB
from ..config import DataConfig
from .images import image_path, open_image

__all__ = ["ChipDataset", "collate_chips", "pad_colour"]


def pad_colour(pixel_mean) -> np.ndarray:
    """uint8 [3]: round(255 * mean), the colour that normalises to ~0."""
    mean = np.asarray(pixel_mean, dtype=np.float64).reshape(-1)
    if mean.shape != (3,) or not np.all((mean >= 0) & (mean <= 1)):
        raise ValueError(f"ChipDataset: `pixel_mean` must be three numbers in [0, 1], got {pixel_mean!r}")
    return np.floor(255 * mean + 0.5).astype(np.uint8)


class ChipDataset:
    """Map-style dataset over a ChipDB; indices are (chip index, flip, seed) rows as
    :class:`~sniper_ext.data.ChipStream` yields them. ``category_ids``: the sorted COCO category
    ids (contiguous label = position + 1; the database holds COCO ids). ``cache_size``: decoded
    images kept (0: none)."""

    def __init__(
        self,
        db: ChipDB,
        image_root,
        category_ids,
        *,
        pixel_mean=DataConfig.pixel_mean,
        cache_size: int = 8,
    ):
        self.db = db
        self.image_root = image_root
        ids = np.asarray(list(category_ids), dtype=np.int64).reshape(-1)
        if len(ids) == 0 or np.any(np.diff(ids) <= 0):
            raise ValueError(
                f"ChipDataset: `category_ids` must be the sorted, distinct COCO category ids, got {list(ids)}"
            )
        self.category_ids = ids
        labels = np.asarray(db.gt_labels, dtype=np.int64)
        pos = np.searchsorted(ids, labels)
        known = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == labels)
        if not known.all():
            bad = sorted(set(labels[~known].tolist()))
            raise ValueError(f"ChipDataset: the chip database has labels {bad} that are not in `category_ids`")
        self._contiguous = (pos + 1).astype(np.int64)
        self.chip_size = int(db.config.chip_size)
        #: whole images (the baselines' databases): each padded only to a multiple of 16, and a
        #: batch to its own largest image (collate_chips), not every image to the largest of all
        self.whole_images = bool(db.extra.get("whole_images"))
        self.mean = pad_colour(pixel_mean)
        if cache_size < 0:
            raise ValueError("ChipDataset: `cache_size` must be >= 0")
        self.cache_size = int(cache_size)
        self._cache: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self.db)

    # -- images -------------------------------------------------------------------------------

    def image(self, i: int) -> Image.Image:
        """The decoded RGB image of image index ``i`` (cached); DataError if it cannot be read or
        has changed size since planning."""
        img = self._cache.get(i)
        if img is not None:
            self._cache.move_to_end(i)
            return img
        db = self.db
        img = open_image(
            image_path(self.image_root, str(db.file_names[i])), int(db.image_ids[i]), tuple(db.image_sizes[i])
        )
        if self.cache_size:
            self._cache[i] = img
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return img

    def __getstate__(self):
        # Workers start with an empty cache.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    # -- one chip -----------------------------------------------------------------------------

    def canvas_size(self, c: int) -> tuple:
        """(width, height) in chip pixels of chip ``c``'s content: its canvas extent, rounded."""
        x0, y0, x1, y1 = self.db.chip_canvas[c]
        K = self.chip_size
        return min(int(math.floor(x1 - x0 + 0.5)), K), min(int(math.floor(y1 - y0 + 0.5)), K)

    def padded_size(self, c: int) -> tuple:
        """(height, width) of chip ``c``'s pixels: K x K for a chip, the canvas rounded up to a
        multiple of 16 for a whole image."""
        if not self.whole_images:
            return self.chip_size, self.chip_size
        cw, ch = self.canvas_size(c)
        return _ceil16(ch), _ceil16(cw)

    def chip_pixels(self, c: int, flip: bool) -> np.ndarray:
        """uint8 [3, K, K] (whole images: [3, ceil16(h), ceil16(w)]): chip ``c`` cut from its
        image, resized, flipped, padded with the mean colour."""
        db = self.db
        img = self.image(int(db.chip_image[c]))
        W, H = img.size
        s = float(db.chip_scale[c])
        x0, y0, x1, y1 = (float(v) for v in db.chip_canvas[c])
        cw, ch = self.canvas_size(c)
        out = np.empty((3, *self.padded_size(c)), np.uint8)
        out[:] = self.mean[:, None, None]
        if cw > 0 and ch > 0:
            # The content spans canvas [x0, x0 + cw) x [y0, y0 + ch), i.e. original pixels
            # [x0/s, (x0 + cw)/s) ...; the canvas is round(W*s) wide, so its last column can reach
            # a fraction of a pixel past the image: clip (PIL needs the box inside the image).
            box = (
                max(x0 / s, 0.0),
                max(y0 / s, 0.0),
                min((x0 + cw) / s, float(W)),
                min((y0 + ch) / s, float(H)),
            )
            if box[2] > box[0] and box[3] > box[1]:
                part = np.asarray(img.resize((cw, ch), Image.Resampling.BILINEAR, box=box))
                if flip:
                    part = part[:, ::-1]
                out[:, :ch, :cw] = part.transpose(2, 0, 1)
        return out

    def chip_targets(self, c: int, flip: bool) -> dict:
        """The chip's GT in chip pixels (flipped with the image): boxes float32 [g, 4], contiguous
        labels int64 [g], state int8 [g] (1 valid, 0 invalid)."""
        db = self.db
        s, e = int(db.gt_offsets[c]), int(db.gt_offsets[c + 1])
        boxes = np.array(db.gt_boxes[s:e], dtype=np.float32).reshape(-1, 4)
        if flip:
            cw = np.float32(self.canvas_size(c)[0])
            boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], axis=1)
        return {
            "boxes": boxes,
            "labels": self._contiguous[s:e].copy(),
            "state": np.asarray(db.gt_valid[s:e], dtype=np.int8).copy(),
        }

    def __getitem__(self, index) -> dict:
        chip, flip, seed = index
        c = int(chip)
        if not 0 <= c < len(self.db):
            raise IndexError(f"ChipDataset: chip {c} is out of range for a database of {len(self.db)} chips")
        flip = bool(flip)
        t = self.chip_targets(c, flip)
        cw, ch = self.canvas_size(c)
        return {
            "image": self.chip_pixels(c, flip),
            "gt_boxes": t["boxes"],
            "gt_labels": t["labels"],
            "gt_state": t["state"],
            "canvas_wh": np.array([cw, ch], np.float32),
            "valid_range": np.asarray(self.db.chip_valid_range[c], dtype=np.float32),
            "chip": c,
            "flip": flip,
            "image_index": int(self.db.chip_image[c]),
            "seed": int(seed),
            "pad": self.mean,
        }


def _ceil16(v: int) -> int:
    return int(math.ceil(v / 16) * 16)


def _stack_images(samples: list) -> np.ndarray:
    """[B, 3, H, W]: the samples' images, padded to the largest (with the samples' pad colour)."""
    shapes = {s["image"].shape for s in samples}
    if len(shapes) == 1:
        return np.stack([s["image"] for s in samples])
    h = max(s["image"].shape[1] for s in samples)
    w = max(s["image"].shape[2] for s in samples)
    pad = np.asarray(samples[0].get("pad", np.zeros(3, np.uint8)), np.uint8)
    out = np.empty((len(samples), 3, h, w), np.uint8)
    out[:] = pad[None, :, None, None]
    for b, s in enumerate(samples):
        _, sh, sw = s["image"].shape
        out[b, :, :sh, :sw] = s["image"]
    return out


def collate_chips(samples: list) -> dict:
    """The batch of the contract from :meth:`ChipDataset.__getitem__` samples; G = the largest GT
    count (at least 1), padding rows: boxes 0, labels 0, state -1. Images of different sizes
    (whole images) are padded to the batch's largest."""
    if not samples:
        raise ValueError("collate_chips: empty list of chips")
    B = len(samples)
    G = max(1, max(len(s["gt_labels"]) for s in samples))
    boxes = np.zeros((B, G, 4), np.float32)
    labels = np.zeros((B, G), np.int64)
    state = np.full((B, G), -1, np.int8)
    for b, s in enumerate(samples):
        g = len(s["gt_labels"])
        boxes[b, :g] = s["gt_boxes"]
        labels[b, :g] = s["gt_labels"]
        state[b, :g] = s["gt_state"]
    return {
        "images": torch.from_numpy(_stack_images(samples)),
        "gt_boxes": torch.from_numpy(boxes),
        "gt_labels": torch.from_numpy(labels),
        "gt_state": torch.from_numpy(state),
        "canvas_wh": torch.from_numpy(np.stack([s["canvas_wh"] for s in samples]).astype(np.float32)),
        "valid_range": torch.from_numpy(np.stack([s["valid_range"] for s in samples]).astype(np.float32)),
        "chip": torch.tensor([s["chip"] for s in samples], dtype=torch.int64),
        "flip": torch.tensor([s["flip"] for s in samples], dtype=torch.bool),
        "image": torch.tensor([s["image_index"] for s in samples], dtype=torch.int64),
        "seed": torch.tensor([s["seed"] for s in samples], dtype=torch.int64),
    }
