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

__all__ = ["ResizedImages", "collate_images", "image_loader"]


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
