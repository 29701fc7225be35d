"""Pictures: detections and chips drawn over an image (or a blank canvas), saved atomically as PNG.

* :func:`draw_detections`: boxes in per-class colours, ``name 0.87`` labels on a filled background
  placed so that no two overlap (:func:`place_labels`), a title bar, a legend, the image outlined;
  small images are upscaled so that the text stays legible.
* :func:`draw_chips`: the chips of one image of a ChipDB, one panel per training scale, with the
  same title bar, legend and outlines.
* :func:`draw_boxes`: plain layers of boxes (used by ``sniper demo``); :func:`save_png`.

Colours come from a fixed palette indexed by the contiguous class label (:func:`class_colour`), so
a class has the same colour in every picture.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._atomic import atomic_write
from .chips import NEGATIVE, canvas_size, image_scales, valid_at_scale

__all__ = [
    "PALETTE",
    "SCALE_COLOURS",
    "class_colour",
    "draw_boxes",
    "draw_chips",
    "draw_detections",
    "place_labels",
    "save_png",
]

#: Saturated, mutually distinct colours (no pale ones: they vanish on white); class label c
#: (1..C) gets ``PALETTE[(c - 1) % len(PALETTE)]``.
PALETTE = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 110, 220),  # blue
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (0, 170, 190),  # cyan
    (220, 40, 200),  # magenta
    (130, 170, 0),  # lime
    (0, 128, 128),  # teal
    (170, 110, 40),  # brown
    (128, 0, 0),  # maroon
    (110, 110, 0),  # olive
    (0, 0, 128),  # navy
    (200, 160, 0),  # gold
    (255, 90, 170),  # pink
    (100, 100, 100),  # grey
)

#: AutoFocus's FocusChips, one colour per cascade step after the first (yellow, then white-ish
#: cyan, then black): outlines that stay apart from the class colours
SCALE_COLOURS = ((255, 200, 0), (0, 230, 255), (30, 30, 30), (255, 255, 255))

_INK, _PAPER, _BORDER = (20, 20, 20), (255, 255, 255), (60, 60, 60)
MARGIN = 8


def class_colour(label: int) -> tuple:
    """The colour of contiguous class ``label`` (1..C), the same in every picture."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


@functools.lru_cache(maxsize=16)
def _font(size: int):
    """Pillow's bundled scalable font (no system fonts needed); the bitmap one if FreeType is
    missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_wh(font, text: str) -> tuple:
    left, top, right, bottom = font.getbbox(text)
    return int(right - min(0, left)) + 1, int(bottom) + 1


def _line_height(font) -> int:
    return _text_wh(font, "Ag|")[1]


def _ink_on(colour) -> tuple:
    """Black or white text, whichever reads better on ``colour``."""
    r, g, b = colour[:3]
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _overlap(a, b) -> bool:
    """Rectangles (x1, y1, x2, y2), right/bottom exclusive, share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(anchors, sizes, bounds) -> list:
    """Label rectangles that do not overlap each other, greedily in the given order (put the
    most important first).

    ``anchors`` are the boxes (x1, y1, x2, y2) the labels belong to, ``sizes`` the labels'
    (width, height), ``bounds`` the (W, H) the labels must stay inside. Each label tries, in
    turn: above its box, inside its top edge, below its box, each left-aligned and then
    right-aligned with the box (shifted into the bounds horizontally); the first place that
    overlaps no label placed before wins. Returns one integer rectangle (x1, y1, x2, y2),
    right/bottom exclusive, or None (no room: the label is dropped) per anchor."""
    W, H = int(bounds[0]), int(bounds[1])
    placed: list = []
    out: list = []
    for (x1, y1, x2, y2), (w, h) in zip(anchors, sizes):
        w, h = int(w), int(h)
        x1, y1, x2, y2 = round(x1), round(y1), round(x2), round(y2)
        chosen = None
        if w <= W and h <= H:
            for cy in (y1 - h, y1, y2):
                if cy < 0 or cy + h > H:
                    continue
                for cx in (x1, x2 - w):
                    cx = min(max(cx, 0), W - w)
                    r = (cx, cy, cx + w, cy + h)
                    if not any(_overlap(r, p) for p in placed):
                        chosen = r
                        break
                if chosen:
                    break
        out.append(chosen)
        if chosen:
            placed.append(chosen)
    return out


def _as_image(image):
    """A PIL RGB image from a PIL image, an HWC uint8 array, a CHW uint8 tensor, or a (W, H)
    size (a white canvas)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (tuple, list)) and len(image) == 2:
        return Image.new("RGB", (int(image[0]), int(image[1])), _PAPER)
    if hasattr(image, "detach"):  # torch CHW
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype != np.uint8:
        raise TypeError(f"draw_detections: `image` must be uint8 pixels, got {a.dtype}")
    return Image.fromarray(a).convert("RGB")


def _scale_for(w: int, h: int, min_side: int) -> float:
    """Upscale factor so that the longer side is at least ``min_side`` (never downscales)."""
    return max(1.0, min_side / max(1, w, h))


def _legend_rows(entries, font, width: int) -> list:
    """Wraps legend ``entries`` [(text, colour, style)] into rows that fit ``width``."""
    sw = _line_height(font)
    rows: list = []
    row: list = []
    x = 0
    for text, colour, style in entries:
        w = sw + 4 + _text_wh(font, text)[0] + 14
        if row and x + w > width:
            rows.append(row)
            row, x = [], 0
        row.append((x, text, colour, style))
        x += w
    if row:
        rows.append(row)
    return rows


def _draw_legend(draw, rows, font, top: int) -> None:
    lh = _line_height(font)
    for r, row in enumerate(rows):
        y = top + r * (lh + 6)
        for x, text, colour, style in row:
            x += MARGIN
            if style == "fill":
                draw.rectangle([x, y, x + lh - 1, y + lh - 1], fill=colour, outline=_BORDER)
            else:
                draw.rectangle([x, y, x + lh - 1, y + lh - 1], outline=colour, width=max(2, lh // 6))
            draw.text((x + lh + 4, y), text, font=font, fill=_INK)


def _compose(picture, title: str, legend, font, title_font, outline: bool = True):
    """The picture with a title bar above, the legend below and its border outlined; returns
    (canvas, (x, y) of the picture in it)."""
    tw = picture.width + 2 * MARGIN
    rows = _legend_rows(legend, font, tw - 2 * MARGIN)
    lh = _line_height(font)
    th = _line_height(title_font) + 2 * MARGIN
    legend_h = (len(rows) * (lh + 6) + MARGIN) if rows else 0
    canvas = Image.new("RGB", (tw, th + picture.height + MARGIN + legend_h), _PAPER)
    canvas.paste(picture, (MARGIN, th))
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, MARGIN), _fit(title, title_font, tw - 2 * MARGIN), font=title_font, fill=_INK)
    if outline:
        draw.rectangle([MARGIN - 1, th - 1, MARGIN + picture.width, th + picture.height], outline=_BORDER)
    if rows:
        _draw_legend(draw, rows, font, th + picture.height + MARGIN)
    return canvas, (MARGIN, th)


def _fit(text: str, font, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if _text_wh(font, text)[0] <= width:
        return text
    while text and _text_wh(font, text + "...")[0] > width:
        text = text[:-1]
    return text + "..."


def draw_detections(
    image,
    boxes,
    scores,
    labels,
    class_names,
    *,
    title: str | None = None,
    score_threshold: float = 0.3,
    max_labels: int = 60,
    min_side: int = 640,
    font_size: int | None = None,
    regions=None,
):
    """A picture of detections: ``boxes`` [N, 4] xyxy in ``image`` pixels, ``scores`` [N],
    ``labels`` [N] contiguous 1..C with names ``class_names[label - 1]``; ``image`` is a PIL
    image, an HWC uint8 array, a CHW uint8 tensor or a (W, H) size for a white canvas.

    Detections scoring below ``score_threshold`` are left out; the rest are drawn lowest score
    first (the strongest on top) in their class colour. The ``max_labels`` highest-scoring get a
    ``name 0.87`` label on a filled background, placed by :func:`place_labels` so that no two
    labels overlap; a label with no free place is dropped, and the title says how many were.
    Images whose longer side is below ``min_side`` are upscaled first. A title bar (``title``
    or a summary) goes above, a legend of the classes shown (with counts) below, the image is
    outlined. ``image.info`` of the result holds ``labels_placed``, ``labels_dropped``,
    ``label_rects`` (in canvas pixels), ``image_box`` (where the image lies in the canvas) and
    ``scale``.

    ``regions``: optional ``[(name, (r, g, b), boxes [K, 4])]`` drawn under the detections as
    outlines in their colour, each named in the legend with its count (AutoFocus's FocusChips,
    one colour per scale: :data:`SCALE_COLOURS`)."""
    base = _as_image(image)
    b = np.asarray(boxes.detach().cpu().double() if hasattr(boxes, "detach") else boxes, dtype=np.float64)
    b = b.reshape(-1, 4)
    s = np.asarray(scores.detach().cpu().double() if hasattr(scores, "detach") else scores, dtype=np.float64)
    s = s.reshape(-1)
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels, dtype=np.int64).reshape(-1)
    if not (len(b) == len(s) == len(lab)):
        raise ValueError(f"draw_detections: {len(b)} boxes, {len(s)} scores and {len(lab)} labels; they must match")
    shown = np.flatnonzero(s >= score_threshold)
    shown = shown[np.argsort(-s[shown], kind="stable")]  # strongest first

    scale = _scale_for(base.width, base.height, min_side)
    W, H = round(base.width * scale), round(base.height * scale)
    if (W, H) != base.size:
        base = base.resize((W, H), Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)
    size = font_size or max(13, min(28, round(max(W, H) / 55)))
    font, title_font = _font(size), _font(size + 3)
    lw = max(2, round(size / 6))

    def name(c):
        return class_names[c - 1] if 1 <= c <= len(class_names) else f"class {c}"

    draw = ImageDraw.Draw(base)
    region_legend = []
    for rname, rcolour, rboxes in regions or ():
        rb = np.asarray(rboxes, dtype=np.float64).reshape(-1, 4) * scale
        for x1, y1, x2, y2 in rb:
            draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=tuple(rcolour), width=lw + 1)
        region_legend.append((f"{rname} ({len(rb)})", tuple(rcolour), "outline"))
    sb = b[shown] * scale
    for k in range(len(shown) - 1, -1, -1):  # weakest first, so the strongest are drawn on top
        x1, y1, x2, y2 = sb[k]
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=class_colour(lab[shown[k]]), width=lw)

    labelled = shown[:max_labels]
    texts = [f"{name(int(lab[i]))} {s[i]:.2f}" for i in labelled]
    pad = 2
    sizes = [(_text_wh(font, t)[0] + 2 * pad, _line_height(font) + 2 * pad) for t in texts]
    rects = place_labels(sb[: len(labelled)].tolist(), sizes, (W, H))
    for i, text, r in zip(labelled, texts, rects):
        if r is None:
            continue
        colour = class_colour(lab[i])
        draw.rectangle([r[0], r[1], r[2] - 1, r[3] - 1], fill=colour)
        draw.text((r[0] + pad, r[1] + pad), text, font=font, fill=_ink_on(colour))
    placed = sum(r is not None for r in rects)
    dropped = len(rects) - placed

    counts: dict = {}
    for i in shown:
        counts[int(lab[i])] = counts.get(int(lab[i]), 0) + 1
    legend = [(f"{name(c)} ({counts[c]})", class_colour(c), "fill") for c in sorted(counts)]
    if not legend:
        legend = [(f"no detections scoring >= {score_threshold:g}", _BORDER, "outline")]
    legend = region_legend + legend
    head = title or f"{len(shown)} detections scoring >= {score_threshold:g}"
    notes = []
    if dropped:
        notes.append(f"{dropped} labels hidden (no room)")
    if len(shown) > len(labelled):
        notes.append(f"{len(shown) - len(labelled)} unlabelled beyond the top {max_labels}")
    if scale > 1:
        notes.append(f"shown at {scale:.2g}x")
    if notes:
        head += "  [" + "; ".join(notes) + "]"
    canvas, (ox, oy) = _compose(base, head, legend, font, title_font)
    canvas.info.update(
        labels_placed=placed,
        labels_dropped=dropped,
        label_rects=[(r[0] + ox, r[1] + oy, r[2] + ox, r[3] + oy) for r in rects if r is not None],
        image_box=(ox, oy, ox + W, oy + H),
        scale=scale,
    )
    return canvas


def draw_boxes(size, layers, image=None, scale=1.0):
    """Draws `layers` = [(boxes [N,4] xyxy, (r,g,b), width, labels or None), ...] over `image`
    (a PIL image) or a white canvas of `size` = (W, H), everything scaled by `scale`."""
    w, h = int(round(size[0] * scale)), int(round(size[1] * scale))
    canvas = image.convert("RGB").resize((w, h)) if image is not None else Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    for boxes, colour, width, labels in layers:
        for i, b in enumerate(boxes.tolist() if hasattr(boxes, "tolist") else boxes):
            x1, y1, x2, y2 = (v * scale for v in b)
            draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=width)
            if labels is not None:
                draw.text((x1 + 2, y1 + 1), str(labels[i]), fill=colour, font=font)
    return canvas


def save_png(img, path: str) -> str:
    """Writes through a temporary file and a rename, so a reader never sees half a PNG."""
    return atomic_write(path, lambda f: img.save(f, format="PNG"), prefix=".png-", suffix=".png.tmp")


_CHIP_LAYERS = (
    ("GT valid at the scale", (20, 160, 40), 2),
    ("GT invalid at the scale", (220, 40, 40), 1),
    ("positive chip", (30, 80, 230), 3),
    ("negative chip (pool)", (245, 140, 0), 3),
)


def draw_chips(db, image_index: int, record, image=None, panel: int = 420, title: str | None = None):
    """One panel per training scale of image ``image_index`` of a ChipDB: GT valid at that scale
    (green) and invalid (red), positive chips (blue) and the negative-chip pool (orange), drawn in
    original-image coordinates over the image (or a blank canvas). Each panel has a two-line
    caption (scale, canvas size, chip and GT counts) and its image outlined; a title bar and a
    legend go around them."""
    cfg = db.config
    w, h = int(db.image_sizes[image_index][0]), int(db.image_sizes[image_index][1])
    scale = panel / max(w, h)
    scales = image_scales(w, h, cfg)
    font = _font(13)
    lh = _line_height(font)
    cap_h = 2 * lh + 8
    panels, totals = [], [0, 0]
    for si, s in enumerate(scales):
        valid = valid_at_scale(record.boxes, si, s, cfg, db.stride, record.crowd)
        sel = np.flatnonzero((db.chip_image == image_index) & (db.chip_scale_index == si))
        chips = np.array([db.chip_box(c) for c in sel]).reshape(-1, 4)
        neg = db.chip_kind[sel] == NEGATIVE
        layers = [
            (record.boxes[valid], _CHIP_LAYERS[0][1], _CHIP_LAYERS[0][2], None),
            (record.boxes[~valid], _CHIP_LAYERS[1][1], _CHIP_LAYERS[1][2], None),
            (chips[~neg], _CHIP_LAYERS[2][1], _CHIP_LAYERS[2][2], None),
            (chips[neg], _CHIP_LAYERS[3][1], _CHIP_LAYERS[3][2], None),
        ]
        img = draw_boxes((w, h), layers, image=image, scale=scale)
        cw, ch = canvas_size(w, h, s)
        framed = Image.new("RGB", (img.width + 2, img.height + cap_h + 2), _PAPER)
        framed.paste(img, (1, cap_h + 1))
        d = ImageDraw.Draw(framed)
        d.rectangle([0, cap_h, img.width + 1, cap_h + img.height + 1], outline=_BORDER)
        npos, nneg = int((~neg).sum()), int(neg.sum())
        totals[0] += npos
        totals[1] += nneg
        d.text((1, 1), _fit(f"scale {si + 1}: x{s:.3f} -> {cw}x{ch} px", font, img.width), font=font, fill=_INK)
        d.text(
            (1, 1 + lh + 2),
            _fit(f"{npos} positive, {nneg} negative chips; {int(valid.sum())}/{len(valid)} GT valid", font, img.width),
            font=font,
            fill=_INK,
        )
        panels.append(framed)
    gap = 12
    row = Image.new(
        "RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)), _PAPER
    )
    x = 0
    for p in panels:
        row.paste(p, (x, 0))
        x += p.width + gap
    head = title or (
        f"image {record.image_id} ({w}x{h}): {totals[0]} positive, {totals[1]} negative chips of "
        f"{cfg.chip_size}x{cfg.chip_size} over {len(scales)} scales"
    )
    legend = [(text, colour, "outline") for text, colour, _ in _CHIP_LAYERS]
    canvas, _ = _compose(row, head, legend, font, _font(15), outline=False)  # the panels have their own
    return canvas
