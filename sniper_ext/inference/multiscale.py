"""Multi-scale inference (method §9) and the RPN pass that finds negative-chip regions (§4), as one
object built once and used by training (negative mining), ``sniper infer``/``eval``/``detect`` and
the demo.

Every image runs at each inference resolution in padded batches; detections scoring above the
threshold whose size (original pixels) lies in that resolution's valid range are kept; all scales
are merged per class with Soft-NMS in one batched call (:func:`~sniper_ext.inference.merge.
merge_detections`), top N per image. With ``torchrun`` each rank takes every world_size-th image
and the results are gathered on every rank.

    engine = MultiScaleInference.for_config(model, cfg, device="cuda")   # cfg: the TrainConfig
    dets = engine.detect(records, image_root)          # [(boxes, scores, labels)] per record
    run = engine.run(records, image_root, categories)  # + COCO results and timings
    props = engine.proposals(records, image_root)      # {image_id: [P, 4]}: RPN proposals (§4)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from ..chips.records import ImageTable
from ..chips.validity import resolution_scale
from ..config import DataConfig, InferenceConfig, TrainConfig
from ..data.image_batches import image_loader
from ..runtime.distributed import DistInfo, all_gather_objects
from ..runtime.precision import autocast_for
from .merge import in_valid_range, merge_detections, merge_proposals
from .results import detections_to_coco

__all__ = ["InferenceRun", "MultiScaleInference", "resolution_loaders"]


@dataclass
class InferenceRun:
    """What :meth:`MultiScaleInference.run` returns. ``detections``: one ``(boxes [N, 4] xyxy,
    scores [N], labels [N] 1..C)`` per record, original pixels (every rank holds all of them under
    torchrun); ``results``: the COCO results list (category ids mapped back); ``seconds``: wall
    time of the whole run on this rank; ``stats``: the timings of this rank's share
    (``seconds``, ``merge_seconds``, ``images``)."""

    records: ImageTable
    detections: list
    results: list
    category_ids: list
    seconds: float
    stats: dict = field(default_factory=dict)
    is_main: bool = True
    image_root: str | None = None
    categories: list = field(default_factory=list)
    #: the InferenceConfig the run used (set by the command line)
    config: object = None

    @property
    def images_per_s(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else math.inf

    @property
    def merge_share(self) -> float:
        """The Soft-NMS merge as a share of this rank's inference time."""
        total = self.stats.get("seconds", 0.0)
        return self.stats.get("merge_seconds", 0.0) / total if total > 0 else 0.0


def resolution_loaders(
    records: ImageTable, image_root, config: InferenceConfig, pixel_mean, *, workers=0, batch_size=None
):
    """``(order, loaders)``: the records in order of aspect ratio (landscape with landscape, so
    that a batch pads little; ``order[k]`` is the k-th image's record index) and one DataLoader of
    padded batches per resolution of ``config``, batch k of every loader holding the same images."""
    order = np.lexsort((np.arange(len(records)), records.widths / records.heights)).tolist()
    grouped = records.take(order)
    loaders = [
        image_loader(
            grouped,
            image_root,
            partial(resolution_scale, resolution=tuple(res)),
            batch_size=int(batch_size or config.batch_size),
            workers=workers,
            divisibility=config.size_divisibility,
            pixel_mean=pixel_mean,
        )
        for res in config.resolutions
    ]
    return order, loaders


class MultiScaleInference:
    """A trained detector (anything with ``detect(images, image_wh, ...)`` and ``num_classes``, in
    practice :class:`~sniper_ext.modeling.SniperRCNN`) run over images at the resolutions of an
    :class:`~sniper_ext.config.InferenceConfig`.

    ``device``: where the model runs; ``precision``: autocast ("auto": bf16 on a GPU, none on the
    CPU); ``pixel_mean``: the padding colour's source (the training data's mean); ``workers``:
    image-decoding processes; ``dist``: a :class:`~sniper_ext.runtime.DistInfo` to shard the
    images over the ranks of ``torchrun`` (None: this process does all); ``progress``: a
    progress bar (first rank only)."""

    def __init__(
        self,
        model,
        config: InferenceConfig,
        *,
        device="cpu",
        precision: str = "auto",
        pixel_mean=None,
        workers: int = 0,
        dist: DistInfo | None = None,
        progress: bool = False,
    ):
        self.model = model
        self.config = config
        self.device = torch.device(device)
        self.precision = precision
        self.pixel_mean = DataConfig.pixel_mean if pixel_mean is None else tuple(pixel_mean)
        self.workers = workers
        self.dist = dist if dist is not None and dist.distributed else None
        self.progress = progress

    @classmethod
    def for_config(cls, model, cfg: TrainConfig, *, config: InferenceConfig | None = None, **kwargs):
        """For a model trained with ``cfg``: its inference settings (or ``config``) and its data's
        pixel mean; ``kwargs`` as the constructor's."""
        kwargs.setdefault("pixel_mean", cfg.data.pixel_mean)
        return cls(model, config if config is not None else cfg.inference, **kwargs)

    # -- this rank's share ------------------------------------------------------------------

    def _share(self, records, desc: str):
        """This rank's slice of ``records``, their indices, and a progress bar over its images x
        resolutions (first rank only)."""
        rank, world = (self.dist.rank, self.dist.world_size) if self.dist is not None else (0, 1)
        idx = np.arange(rank, len(records), world)
        bar = tqdm(
            total=len(idx) * len(self.config.resolutions),
            unit="img",
            desc=desc,
            disable=not self.progress or rank != 0,
            mininterval=0.5,
        )
        return records.take(idx), idx.tolist(), bar

    def _gather(self, idx, local: list, n: int) -> list:
        """Every rank's outputs (``local`` for the records at ``idx``) in record order."""
        if self.dist is None:
            return local
        out: list = [None] * n
        for rank_idx, rank_out in all_gather_objects(self.dist, (idx, local)):
            for i, r in zip(rank_idx, rank_out):
                out[i] = r
        return out

    def _passes(self, records, image_root, bar, **detect_kw):
        """Yields (resolution index, record index, output of model.detect with boxes in original
        pixels). Images are batched in order of aspect ratio (landscape with landscape), so that a
        batch pads little; the results do not depend on the grouping except through that padding."""
        order, loaders = resolution_loaders(records, image_root, self.config, self.pixel_mean, workers=self.workers)
        self.model.eval()
        for ri, loader in enumerate(loaders):
            for images, wh, scales, index in loader:
                with autocast_for(self.device, self.precision):
                    outs = self.model.detect(images.to(self.device, non_blocking=True), wh.to(self.device), **detect_kw)
                for k, o in enumerate(outs):
                    s = float(scales[k])
                    yield (
                        ri,
                        order[int(index[k])],
                        {key: (v / s if key in ("boxes", "proposals") else v) for key, v in o.items()},
                    )
                bar.update(len(index))

    # -- §9: detections -----------------------------------------------------------------------

    def _scale_part(self, ri: int, boxes: torch.Tensor, probs: torch.Tensor, size) -> tuple:
        """One image's ``_scored`` part at resolution ``ri``: its ``boxes`` (original pixels) clipped
        to the image (``size`` = (W, H)), those in the resolution's valid range."""
        boxes, probs = boxes.float(), probs.float()
        # clipped in the resized image (round(W*s) x round(H*s)), so up to 0.5/s px beyond (W, H)
        w, h = (float(v) for v in size)
        boxes = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
        lo, hi = self.config.valid_ranges[ri]
        ok = in_valid_range(boxes, lo, hi)
        return self._scored(boxes[ok], probs[ok])

    def _scored(self, boxes: torch.Tensor, probs: torch.Tensor) -> tuple:
        """(boxes, scores, labels 1..C) on the CPU of every (box, class) scoring above the threshold;
        ``probs`` [N, C+1] with column 0 the background."""
        probs = probs[:, 1:]
        r, k = (probs > self.config.score_threshold).nonzero(as_tuple=True)
        return boxes[r].cpu(), probs[r, k].cpu(), (k + 1).cpu()

    def _merge(self, parts: list) -> list:
        """Per image, its scales' (and chips') ``_scored`` parts merged per class with one batched
        Soft-NMS call over all images: ``(boxes, scores, labels)`` NumPy arrays per image."""
        icfg = self.config
        per_image = []
        for p in parts:
            if p:
                per_image.append(tuple(torch.cat([x[j] for x in p]) for j in range(3)))
            else:
                per_image.append((torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)))
        merged = merge_detections(
            per_image,
            num_classes=self.model.num_classes,
            method=icfg.nms_method,
            sigma=icfg.soft_nms_sigma,
            iou_threshold=icfg.nms_iou,
            score_threshold=icfg.score_threshold,
            top_k=icfg.detections_per_image,
        )
        return [(b.numpy(), s.numpy(), lab.numpy()) for b, s, lab in merged]

    @torch.no_grad()
    def detect(self, records, image_root, *, stats: dict | None = None) -> list:
        """Multi-scale detection of ``records``: one ``(boxes [N, 4] float32, scores [N], labels
        [N] int64 1..C)`` per record, original pixels, at most ``detections_per_image``. A single
        resolution is single-scale inference. ``stats`` (a dict) receives this rank's timings:
        ``seconds``, ``merge_seconds``, ``images``."""
        icfg = self.config
        t0 = time.perf_counter()
        records = ImageTable.from_records(records)
        mine, idx, bar = self._share(records, "detecting")
        parts: list = [[] for _ in mine]
        for ri, i, o in self._passes(mine, image_root, bar, proposals_per_image=icfg.proposals_per_scale):
            parts[i].append(self._scale_part(ri, o["boxes"], o["scores"], mine.sizes[i]))
        bar.close()
        t1 = time.perf_counter()
        out = self._merge(parts)
        t2 = time.perf_counter()
        if stats is not None:
            stats.update(seconds=t2 - t0, merge_seconds=t2 - t1, images=len(mine))
        out = self._gather(idx, out, len(records))
        return [(np.asarray(b, np.float32), np.asarray(s, np.float32), np.asarray(lab, np.int64)) for b, s, lab in out]

    def run(self, records, image_root, categories) -> InferenceRun:
        """:meth:`detect` and the COCO results, labels mapped to ``categories`` ([{"id", "name"}]
        sorted by id; label c is the c-th)."""
        stats: dict = {}
        t = time.perf_counter()
        records = ImageTable.from_records(records)
        dets = self.detect(records, image_root, stats=stats)
        seconds = time.perf_counter() - t
        cat_ids = [int(c["id"]) for c in categories]
        return InferenceRun(
            records=records,
            detections=dets,
            results=detections_to_coco(records.image_ids.tolist(), dets, cat_ids),
            category_ids=cat_ids,
            seconds=seconds,
            stats=stats,
            is_main=self.dist is None or self.dist.is_main,
            image_root=image_root,
            categories=list(categories),
        )

    # -- §4: RPN proposals for negative chips ---------------------------------------------------

    @torch.no_grad()
    def proposals(self, records, image_root, *, nms_iou: float = 0.7) -> dict:
        """§4 step 2: the top ``proposals_per_scale`` RPN proposals per image at each inference
        resolution, merged over the scales with NMS at ``nms_iou``. Returns {image_id: float64
        [P, 4]} in original pixels, inside the image."""
        records = ImageTable.from_records(records)
        mine, idx, bar = self._share(records, "RPN proposals")
        boxes: list = [[] for _ in mine]
        scores: list = [[] for _ in mine]
        passes = self._passes(mine, image_root, bar, proposals_per_image=self.config.proposals_per_scale, rpn_only=True)
        for _, i, o in passes:
            # clipped to the image: up to 0.5/s px beyond it in the resized image's pixels
            w, h = (float(v) for v in mine.sizes[i])
            p = o["proposals"].float()
            boxes[i].append(torch.minimum(p.clamp(min=0), p.new_tensor([w, h, w, h])).cpu())
            scores[i].append(o["objectness"].float().cpu())
        bar.close()
        out = (
            merge_proposals([torch.cat(x) for x in boxes], [torch.cat(x) for x in scores], nms_iou=nms_iou)
            if len(mine)
            else []
        )
        gathered = self._gather(idx, out, len(records))
        return dict(zip(records.image_ids.tolist(), gathered))
