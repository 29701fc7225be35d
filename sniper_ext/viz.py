"""Pictures: boxes drawn over an image or a blank canvas, saved atomically as PNG."""

from __future__ import annotations

from PIL import Image, ImageDraw

from ._atomic import atomic_write


def draw_boxes(size, layers, image=None, scale=1.0):
    """Draws `layers` = [(boxes [N,4] xyxy, (r,g,b), width, labels or None), ...] over `image`
    (a PIL image) or a white canvas of `size` = (W, H), everything scaled by `scale`."""
    w, h = int(round(size[0] * scale)), int(round(size[1] * scale))
    canvas = image.convert("RGB").resize((w, h)) if image is not None else Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for boxes, colour, width, labels in layers:
        for i, b in enumerate(boxes.tolist() if hasattr(boxes, "tolist") else boxes):
            x1, y1, x2, y2 = (v * scale for v in b)
            draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=width)
            if labels is not None:
                draw.text((x1 + 2, y1 + 1), str(labels[i]), fill=colour)
    return canvas


def save_png(img, path: str) -> str:
    """Writes through a temporary file and a rename, so a reader never sees half a PNG."""
    return atomic_write(path, lambda f: img.save(f, format="PNG"), prefix=".png-", suffix=".png.tmp")


def draw_chips(db, image_index: int, record, image=None, panel: int = 420):
    """One panel per training scale of image ``image_index`` of a ChipDB: GT valid at that scale
    (green) and invalid (red), positive chips (blue) and the negative-chip pool (orange), drawn in
    original-image coordinates over the image (or a blank canvas)."""
    import numpy as np
    from PIL import ImageDraw

    from .chips import NEGATIVE, canvas_size, image_scales, valid_at_scale

    cfg = db.config
    w, h = int(db.image_sizes[image_index][0]), int(db.image_sizes[image_index][1])
    scale = panel / max(w, h)
    scales = image_scales(w, h, cfg)
    panels = []
    for si, s in enumerate(scales):
        valid = valid_at_scale(record.boxes, si, s, cfg, db.stride, record.crowd)
        sel = np.flatnonzero((db.chip_image == image_index) & (db.chip_scale_index == si))
        chips = np.array([db.chip_box(c) for c in sel]).reshape(-1, 4)
        neg = db.chip_kind[sel] == NEGATIVE
        img = draw_boxes(
            (w, h),
            [
                (record.boxes[~valid], (220, 40, 40), 1, None),
                (record.boxes[valid], (20, 160, 40), 2, None),
                (chips[~neg], (30, 80, 230), 3, None),
                (chips[neg], (245, 140, 0), 3, None),
            ],
            image=image,
            scale=scale,
        )
        cw, ch = canvas_size(w, h, s)
        framed = Image.new("RGB", (img.width, img.height + 20), "white")
        framed.paste(img, (0, 20))
        ImageDraw.Draw(framed).text(
            (4, 4),
            f"scale {s:.3f} ({cw}x{ch}): {int((~neg).sum())} pos, {int(neg.sum())} neg "
            f"chips; {int(valid.sum())}/{len(valid)} GT valid",
            fill=(0, 0, 0),
        )
        panels.append(framed)
    width = sum(p.width for p in panels) + 8 * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels) + 22), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + 8
    draw = ImageDraw.Draw(out)
    y, x = out.height - 16, 4
    for label, colour in (
        ("GT valid at the scale", (20, 160, 40)),
        ("GT invalid", (220, 40, 40)),
        ("positive chip", (30, 80, 230)),
        ("negative chip (pool)", (245, 140, 0)),
    ):
        draw.rectangle([x, y + 2, x + 10, y + 12], outline=colour, width=2)
        draw.text((x + 14, y), label, fill=(0, 0, 0))
        x += 24 + 7 * len(label)
    return out
