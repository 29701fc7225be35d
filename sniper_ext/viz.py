"""Pictures: boxes drawn over an image or a blank canvas, saved atomically as PNG."""
from __future__ import annotations

import os
import tempfile

from PIL import Image, ImageDraw


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
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
