"""AutoFocus inference (method §11): the coarsest resolution on whole images, each finer one only
on the FocusChips the scale before predicted, and focus stacking of all scales.

    engine = AutoFocusInference.for_config(model, cfg)       # a model with the FocusPixel head
    run = engine.run(records, image_root, categories)         # as MultiScaleInference.run
    run.stats["pixels"]                                       # processed vs full-pyramid pixels
    run.stats["chips"]                                        # [[(resolution, x1, y1, x2, y2)]] per image

Per step (coarse -> fine) every region of every image that reaches it — the whole image at the
first step, FocusChips after — is cut from the original image, resized by that resolution's
whole-image factor, and run in padded batches grouped by shape. Its detections (original pixels)
are kept where their size is in the step's valid range and, at the chip scales, unless an edge
lies within ``autofocus_border`` pixels of a chip edge that is not on the image border. Its
FocusPixel map, cut to the region's cells, goes through :func:`sniper_ext.ops.focus_chips`
(threshold, dilation, components, growth, merge) once per batch; the chips, in original pixels,
are the next step's regions. An image without a chip stops there. All detections of an image are
merged per class with one batched Soft-NMS, as in multi-scale inference.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..chips.records import ImageTable
from ..chips.validity import resolution_scale
from ..data.image_batches import crop_loader, crop_size
from ..errors import ConfigError
from ..ops import focus_chips
from ..runtime.distributed import all_gather_objects
from ..runtime.precision import autocast_for
from .merge import in_valid_range
from .multiscale import MultiScaleInference

__all__ = ["AutoFocusInference", "cascade_order", "chip_edge_keep", "check_autofocus_config"]

#: the stride of the FocusPixel grid (the RPN's features)
FOCUS_STRIDE = 16


def cascade_order(resolutions) -> list:
    """The resolution indices from the coarsest to the finest (by min side, then max side)."""
    return sorted(range(len(resolutions)), key=lambda r: (float(resolutions[r][0]), float(resolutions[r][1]), r))


def check_autofocus_config(icfg) -> None:
    """ConfigError unless the cascade's settings have one entry per step (resolutions - 1) and one
    valid range per resolution."""
    n = len(icfg.resolutions)
    for key in ("autofocus_thresholds", "autofocus_dilations", "autofocus_min_chip"):
        v = getattr(icfg, key)
        if len(v) < n - 1:
            raise ConfigError(
                f"inference.{key}: AutoFocus over {n} resolutions needs {n - 1} values (one per cascade step), got {list(v)}"
            )
    if len(icfg.autofocus_valid_ranges) != n:
        raise ConfigError(
            f"inference.autofocus_valid_ranges: AutoFocus over {n} resolutions needs {n} (lo, hi) ranges "
            f"(the order of inference.resolutions), got {len(icfg.autofocus_valid_ranges)}"
        )


def chip_edge_keep(boxes: torch.Tensor, chip: torch.Tensor, image_wh, border: float) -> torch.Tensor:
    """Focus stacking's pruning: bool mask [N] of the ``boxes`` (original pixels) to keep, a box
    being dropped when one of its edges lies within ``border`` pixels of the edge of ``chip``
    (x1, y1, x2, y2) on that side, unless that chip edge is on the image border (within a pixel)."""
    w, h = float(image_wh[0]), float(image_wh[1])
    cx1, cy1, cx2, cy2 = (float(v) for v in chip)
    keep = torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if cx1 > 1.0:
        keep &= boxes[:, 0] - cx1 > border
    if cy1 > 1.0:
        keep &= boxes[:, 1] - cy1 > border
    if cx2 < w - 1.0:
        keep &= cx2 - boxes[:, 2] > border
    if cy2 < h - 1.0:
        keep &= cy2 - boxes[:, 3] > border
    return keep


class AutoFocusInference(MultiScaleInference):
    """:class:`MultiScaleInference` with AutoFocus's cascade instead of the full pyramid. The model
    needs the FocusPixel head (``model.focus``). ``thresholds``, ``dilations``, ``min_chip``: per
    step (coarse -> fine), default the config's ``autofocus_*``."""

    def __init__(self, model, config, **kwargs):
        super().__init__(model, config, **kwargs)
        if getattr(model, "focus", None) is None:
            raise ConfigError(
                "AutoFocus needs a model trained with the FocusPixel head (model.focus_head, e.g. --preset tiny_autofocus)"
            )
        check_autofocus_config(config)
        self.order = cascade_order(config.resolutions)

    def _step_settings(self, step: int) -> tuple:
        c = self.config
        return (float(c.autofocus_thresholds[step]), int(c.autofocus_dilations[step]), int(c.autofocus_min_chip[step]))

    @torch.no_grad()
    def detect(self, records, image_root, *, stats: dict | None = None) -> list:
        """As :meth:`MultiScaleInference.detect`. ``stats`` also receives ``pixels``
        (``processed``/``full`` per resolution in cascade order and in all, ``share`` =
        processed/full) and ``chips`` (per record, the FocusChips as (resolution index, x1, y1, x2,
        y2) in original pixels)."""
        icfg = self.config
        t0 = time.perf_counter()
        records = ImageTable.from_records(records)
        mine, idx, bar = self._share(records, "AutoFocus")
        n = len(mine)
        widths, heights = mine.widths.astype(np.float64), mine.heights.astype(np.float64)
        parts: list = [[] for _ in range(n)]
        chips: list = [[] for _ in range(n)]
        processed, full, regions = [], [], []
        # the first step's regions: every whole image
        image = np.arange(n, dtype=np.int64)
        boxes = np.stack([np.zeros(n), np.zeros(n), widths, heights], axis=1) if n else np.zeros((0, 4))
        self.model.eval()
        for step, ri in enumerate(self.order):
            res = tuple(icfg.resolutions[ri])
            scale_of = np.array([resolution_scale(w, h, res) for w, h in zip(widths, heights)], np.float64)
            full.append(float(sum(np.prod(crop_size((0, 0, w, h), s)) for w, h, s in zip(widths, heights, scale_of))))
            scales = scale_of[image] if len(image) else np.zeros(0)
            processed.append(float(sum(np.prod(crop_size(b, s)) for b, s in zip(boxes, scales))))
            regions.append(len(image))
            last = step == len(self.order) - 1
            lo, hi = icfg.autofocus_valid_ranges[ri]
            next_image: list = []
            next_boxes: list = []
            if len(image):
                t, d, k = self._step_settings(step) if not last else (0.0, 1, 1)
                loader = crop_loader(
                    mine,
                    image_root,
                    image,
                    boxes,
                    scales,
                    batch_size=icfg.batch_size,
                    workers=self.workers,
                    divisibility=icfg.size_divisibility,
                    pixel_mean=self.pixel_mean,
                )
                for batch, wh, bscale, index in loader:
                    with autocast_for(self.device, self.precision):
                        outs = self.model.detect(
                            batch.to(self.device, non_blocking=True),
                            wh.to(self.device),
                            proposals_per_image=icfg.proposals_per_scale,
                            focus=not last,
                        )
                    items = index.tolist()
                    for kk, o in enumerate(outs):
                        item = items[kk]
                        i = int(image[item])
                        s = float(bscale[kk])
                        box = boxes[item]
                        det = o["boxes"].float() / s
                        det = det + det.new_tensor([box[0], box[1], box[0], box[1]])
                        w, h = widths[i], heights[i]
                        det = torch.minimum(det.clamp(min=0), det.new_tensor([w, h, w, h]))
                        ok = in_valid_range(det, lo, hi) & chip_edge_keep(
                            det, torch.as_tensor(box), (w, h), icfg.autofocus_border
                        )
                        parts[i].append(self._scored(det[ok], o["scores"].float()[ok]))
                    if not last:
                        maps = torch.stack([o["focus"].float() for o in outs])
                        cells = torch.stack(
                            [
                                torch.ceil(wh[:, 1] / FOCUS_STRIDE).clamp(max=maps.shape[1]),
                                torch.ceil(wh[:, 0] / FOCUS_STRIDE).clamp(max=maps.shape[2]),
                            ],
                            dim=1,
                        ).to(device=maps.device, dtype=torch.int64)
                        rows = focus_chips(maps, cells, threshold=t, dilation=d, min_size=k).cpu().numpy()
                        for m, x1, y1, x2, y2 in rows.tolist():
                            item = items[m]
                            s = float(bscale[m])
                            cw, ch = float(wh[m, 0]), float(wh[m, 1])
                            box = boxes[item]
                            px = np.array(
                                [
                                    min(x1 * FOCUS_STRIDE, cw),
                                    min(y1 * FOCUS_STRIDE, ch),
                                    min(x2 * FOCUS_STRIDE, cw),
                                    min(y2 * FOCUS_STRIDE, ch),
                                ]
                            )
                            i = int(image[item])
                            ob = np.array([box[0], box[1], box[0], box[1]]) + px / s
                            ob = np.minimum(np.maximum(ob, 0.0), [widths[i], heights[i], widths[i], heights[i]])
                            if ob[2] - ob[0] <= 0 or ob[3] - ob[1] <= 0:
                                continue
                            next_image.append(i)
                            next_boxes.append(ob)
                            chips[i].append((int(self.order[step + 1]), *(float(v) for v in ob)))
                    bar.update(len(items))
            image = np.asarray(next_image, np.int64)
            boxes = np.asarray(next_boxes, np.float64).reshape(-1, 4)
        bar.close()
        t1 = time.perf_counter()
        out = self._merge(parts)
        t2 = time.perf_counter()
        chip_lists = self._gather(idx, chips, len(records))
        pixels = _gather_pixels(self, processed, full, regions)
        if stats is not None:
            stats.update(
                seconds=t2 - t0,
                merge_seconds=t2 - t1,
                images=len(mine),
                pixels=pixels,
                chips=chip_lists,
                resolutions=[list(icfg.resolutions[r]) for r in self.order],
            )
        out = self._gather(idx, out, len(records))
        return [(np.asarray(b, np.float32), np.asarray(s, np.float32), np.asarray(lab, np.int64)) for b, s, lab in out]


def _gather_pixels(engine, processed, full, regions) -> dict:
    """The pixel counts summed over the ranks: per step (cascade order) and in all."""
    vals = [list(processed), list(full), list(regions)]
    if engine.dist is not None:
        gathered = all_gather_objects(engine.dist, vals)
        vals = [[sum(g[j][s] for g in gathered) for s in range(len(processed))] for j in range(3)]
    p, f, r = vals
    total_p, total_f = float(sum(p)), float(sum(f))
    return {
        "processed": [float(v) for v in p],
        "full": [float(v) for v in f],
        "regions": [int(v) for v in r],
        "share_per_scale": [float(a / b) if b > 0 else 0.0 for a, b in zip(p, f)],
        "share": total_p / total_f if total_f > 0 else 0.0,
    }
