"""Whole images at an inference resolution, batched: each image resized once (the scale of
:func:`~sniper_ext.chips.resolution_scale` for a (min side, max side) pair), padded with the mean
colour to a multiple of 16 in its batch."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from .chip_dataset import pad_colour
from .images import image_path, open_image

__all__ = ["ResizedCrops", "ResizedImages", "collate_images", "crop_loader", "crop_size", "image_loader"]


class ResizedImages(torch.utils.data.Dataset):
    """Item i: ``(uint8 [3, h, w] RGB, scale, i)`` with (w, h) = round(W·s), round(H·s). ``scale``
    is a fixed number or a function of (W, H) (e.g. ``partial(resolution_scale, resolution=r)``)."""

    def __init__(self, records, image_root, scale):
        self.records = records
        self.image_root = image_root
        self.scale = scale

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        img = open_image(image_path(self.image_root, r.file_name), r.image_id, (r.width, r.height))
        s = self.scale(r.width, r.height) if callable(self.scale) else float(self.scale)
        size = (max(1, round(r.width * s)), max(1, round(r.height * s)))
        if size != img.size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return arr, s, i


class collate_images:
    """Pads a list of ResizedImages items into ``(images [B, 3, H, W] uint8, image_wh [B, 2],
    scales [B] float64, index [B])`` with H, W multiples of ``divisibility``."""

    def __init__(self, divisibility: int, pad_rgb):
        self.divisibility = divisibility
        self.pad = torch.tensor(pad_rgb, dtype=torch.uint8).view(3, 1, 1)

    def __call__(self, items):
        d = self.divisibility
        h = max(math.ceil(t.shape[1] / d) * d for t, _, _ in items)
        w = max(math.ceil(t.shape[2] / d) * d for t, _, _ in items)
        out = self.pad.expand(len(items), 3, h, w).clone()
        wh = torch.zeros(len(items), 2)
        for k, (t, _, _) in enumerate(items):
            out[k, :, : t.shape[1], : t.shape[2]] = t
            wh[k, 0], wh[k, 1] = t.shape[2], t.shape[1]
        scales = torch.tensor([s for _, s, _ in items], dtype=torch.float64)
        index = torch.tensor([i for _, _, i in items], dtype=torch.int64)
        return out, wh, scales, index


def image_loader(records, image_root, scale, *, batch_size: int, workers: int, divisibility: int = 16, pixel_mean=None):
    """A DataLoader of padded batches (in record order) of the images at ``scale``."""
    pad = tuple(int(v) for v in pad_colour(DataConfig.pixel_mean if pixel_mean is None else pixel_mean))
    return torch.utils.data.DataLoader(
        ResizedImages(records, image_root, scale),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_images(divisibility, pad),
        pin_memory=torch.cuda.is_available(),
    )


def crop_size(box, scale: float) -> tuple:
    """(w, h) in pixels of the crop ``box`` (x1, y1, x2, y2, original pixels) resized by ``scale``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))


class ResizedCrops(torch.utils.data.Dataset):
    """Item i: ``(uint8 [3, h, w] RGB, scale_i, i)``: the region ``boxes[i]`` (original pixels)
    of image ``records[image[i]]`` resized by ``scales[i]`` to :func:`crop_size` (AutoFocus's
    FocusChips, cut from the original image, resampled once)."""

    def __init__(self, records, image_root, image, boxes, scales):
        self.records = records
        self.image_root = image_root
        self.image = np.asarray(image, np.int64)
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.scales = np.asarray(scales, np.float64)

    def __len__(self):
        return len(self.image)

    def __getitem__(self, i):
        r = self.records[int(self.image[i])]
        img = open_image(image_path(self.image_root, r.file_name), r.image_id, (r.width, r.height))
        s = float(self.scales[i])
        x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
        box = (x1, y1, x2, y2)
        part = img.resize(crop_size(box, s), Image.Resampling.BILINEAR, box=box)
        arr = torch.from_numpy(np.asarray(part, dtype=np.uint8).copy()).permute(2, 0, 1)
        return arr, s, i


def crop_loader(
    records, image_root, image, boxes, scales, *, batch_size: int, workers: int, divisibility: int = 16, pixel_mean=None
):
    """A DataLoader of padded batches of crops (see :class:`ResizedCrops`), grouped by shape:
    crops are taken in order of their resized (h, w), so that a batch pads little; ``index`` in
    each batch is the crop's position in ``boxes``."""
    pad = tuple(int(v) for v in pad_colour(DataConfig.pixel_mean if pixel_mean is None else pixel_mean))
    data = ResizedCrops(records, image_root, image, boxes, scales)
    sizes = np.array([crop_size(b, s) for b, s in zip(data.boxes, data.scales)], np.int64).reshape(-1, 2)
    order = np.lexsort((np.arange(len(data)), sizes[:, 0], sizes[:, 1])).tolist()
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, order),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_images(divisibility, pad),
        pin_memory=torch.cuda.is_available(),
    )
