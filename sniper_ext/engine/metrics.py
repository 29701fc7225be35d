"""A run's metrics: one JSON object per logged iteration in ``metrics.jsonl``, cut back to the
checkpoint on resume (so the file reads as one uninterrupted run), and a loss-curve PNG."""

from __future__ import annotations

import json
import os

from PIL import Image, ImageDraw

from .._atomic import atomic_write
from ..viz import save_png

__all__ = ["MetricsLog", "read_metrics", "plot_losses"]

#: the order of the stages of ``sniper train``, for cutting the log back on resume
STAGE_ORDER = {"rpn": 0, "negatives": 1, "detector": 2}


def read_metrics(path: str) -> list[dict]:
    """The entries of a metrics file; a line cut short by a killed process is left out."""
    out: list[dict] = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
    return out


class MetricsLog:
    """Appends entries to ``path`` (line-buffered: each line is written whole or, when the process
    is killed mid-write, dropped on the next resume)."""

    def __init__(self, path: str, *, enabled: bool = True, keep_until: tuple | None = None, fresh: bool = False):
        """``keep_until=(stage, iter)`` keeps the entries up to that point (resume);
        ``fresh=True`` starts an empty file."""
        self.path = path
        self.enabled = enabled
        self._f = None
        if not enabled:
            return
        if fresh or keep_until is not None:
            kept = []
            if keep_until is not None:
                stage, it = keep_until
                limit = (STAGE_ORDER.get(stage, 99), it)
                kept = [
                    e
                    for e in read_metrics(path)
                    if (STAGE_ORDER.get(str(e.get("stage")), 99), e.get("iter", 0)) <= limit
                ]
            text = "".join(json.dumps(e) + "\n" for e in kept)
            atomic_write(path, lambda f: f.write(text.encode()), prefix=".metrics-", suffix=".jsonl.tmp")
        self._f = open(path, "a", encoding="utf-8", buffering=1)

    def log(self, entry: dict) -> None:
        if self._f is not None:
            self._f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def plot_losses(metrics_path: str, png_path: str, *, title: str = "training loss") -> str | None:
    """A loss-per-iteration chart (one line per stage, a smoothed line over the raw points) as PNG;
    None when there is nothing to plot."""
    entries = [e for e in read_metrics(metrics_path) if "loss" in e and "iter" in e]
    if not entries:
        return None
    stages = [s for s in STAGE_ORDER if any(e.get("stage") == s for e in entries)]
    W, H, L, R, T, B = 720, 360, 60, 20, 34, 46
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    losses = [float(e["loss"]) for e in entries]
    ymax = max(losses) * 1.05 or 1.0
    xmax = max(int(e["iter"]) for e in entries) or 1
    d.rectangle([L, T, W - R, H - B], outline=(0, 0, 0))
    d.text((L, 10), title, fill=(0, 0, 0))
    for k in range(5):
        y = T + (H - B - T) * k / 4
        d.line([L - 4, y, L, y], fill=(0, 0, 0))
        d.text((4, y - 6), f"{ymax * (1 - k / 4):.3g}", fill=(0, 0, 0))
    for k in range(5):
        x = L + (W - R - L) * k / 4
        d.line([x, H - B, x, H - B + 4], fill=(0, 0, 0))
        d.text((x - 10, H - B + 8), f"{round(xmax * k / 4)}", fill=(0, 0, 0))
    d.text((W // 2 - 20, H - 18), "iteration", fill=(0, 0, 0))
    colours = {"rpn": (30, 80, 230), "detector": (220, 40, 40), "negatives": (0, 0, 0)}
    lx, ly = W - R - 220, T + 10
    for s in stages:
        pts = [(int(e["iter"]), float(e["loss"])) for e in entries if e.get("stage") == s]
        xy = [(L + (W - R - L) * x / xmax, T + (H - B - T) * (1 - y / ymax)) for x, y in pts]
        light = tuple(int(c + (255 - c) * 0.6) for c in colours[s])
        if len(xy) > 1:
            d.line(xy, fill=light, width=1)
            smooth, acc = [], None
            for p in xy:
                acc = p if acc is None else (p[0], 0.8 * acc[1] + 0.2 * p[1])
                smooth.append(acc)
            d.line(smooth, fill=colours[s], width=2)
        d.line([lx, ly, lx + 16, ly], fill=colours[s], width=2)
        d.text((lx + 20, ly - 6), f"{s} stage ({len(pts)} points)", fill=(0, 0, 0))
        ly += 14
    return save_png(img, png_path)
