"""The SNIPER chip planner (``docs/method.md`` §1–§4).

For every image and training scale: which ground truths (GT) are *valid* at that scale (§1), the
positive chips that cover them (§2, through the batched ``greedy_chip_cover`` op), every chip's GT
cropped into chip pixels with valid/invalid flags and the chip's valid range (§3), and a pool of
negative chips from proposals (§4). A :class:`ChipDB` holds the result for a whole dataset, saves
and loads atomically, and samples each epoch's chips (all positives, ``n`` negatives per image,
flips), seeded.

Typical use::

    cfg = ChipConfig()
    db = plan_dataset(load_coco("instances_train2017.json"), proposals=None, config=cfg)
    db.save("chips.npz")
    print(format_stats(db.stats()))
    chips = db.epoch(epoch=0, seed=0)   # [(chip index, flip), ...]
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .ops import greedy_chip_cover

__all__ = [
    "ChipConfig",
    "ImageRecord",
    "ChipDB",
    "image_scales",
    "canvas_size",
    "valid_at_scale",
    "plan_images",
    "plan_dataset",
    "load_coco",
    "load_proposals",
    "format_stats",
]

INF = float("inf")
POSITIVE, NEGATIVE = 0, 1


@dataclass
class ChipConfig:
    """Every number of the method, configurable. ``None`` as a scale means ``chip_size / max(W, H)``."""

    scales: tuple = (3.0, 1.667, None)
    valid_ranges: tuple = ((0.0, 80.0), (32.0, 150.0), (120.0, INF))
    chip_size: int = 512
    stride: int = 32
    #: (lo, hi): each epoch draws its stride uniformly in [lo, hi] (see :meth:`epoch_stride`).
    stride_jitter: tuple | None = None
    #: crops smaller than this (chip pixels) on a side are dropped from a chip
    min_box_size: float = 2.0
    #: boxes narrower than this (original pixels) are never valid
    min_valid_side: float = 2.0
    #: a negative chip needs at least this many proposals, per scale
    neg_min_proposals: tuple = (26, 11, 11)
    negatives_per_image: int = 2
    #: "both" (every chip also flipped: doubles the set), "random" or "none"
    flip: str = "both"

    def __post_init__(self):
        n = len(self.scales)
        if n == 0 or len(self.valid_ranges) != n or len(self.neg_min_proposals) != n:
            raise ValueError("ChipConfig: `scales`, `valid_ranges` and `neg_min_proposals` need one entry per scale")
        for s in self.scales:
            if s is not None and not (isinstance(s, (int, float)) and s > 0):
                raise ValueError(f"ChipConfig: scales must be positive numbers or None, got {s!r}")
        for lo, hi in self.valid_ranges:
            if not 0 <= lo < hi:
                raise ValueError(f"ChipConfig: a valid range must satisfy 0 <= lo < hi, got ({lo}, {hi})")
        if self.chip_size <= 0 or self.stride <= 0 or self.stride >= self.chip_size:
            raise ValueError("ChipConfig: need 0 < stride < chip_size")
        if self.flip not in ("both", "random", "none"):
            raise ValueError(f"ChipConfig: `flip` must be 'both', 'random' or 'none', got {self.flip!r}")
        if self.negatives_per_image < 0:
            raise ValueError("ChipConfig: `negatives_per_image` must be >= 0")
        if self.stride_jitter is not None:
            lo, hi = self.stride_jitter
            if not 0 < lo <= hi < self.chip_size:
                raise ValueError("ChipConfig: `stride_jitter` must be (lo, hi) with 0 < lo <= hi < chip_size")

    def epoch_stride(self, epoch: int, seed: int = 0) -> int:
        """The grid stride for an epoch: ``stride``, or a seeded draw from ``stride_jitter``."""
        if self.stride_jitter is None:
            return self.stride
        lo, hi = self.stride_jitter
        return int(np.random.default_rng([seed, epoch, 0x5D]).integers(lo, hi + 1))

    def to_json(self) -> str:
        d = asdict(self)
        d["valid_ranges"] = [[lo, "inf" if hi == INF else hi] for lo, hi in self.valid_ranges]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "ChipConfig":
        d = json.loads(text)
        d["valid_ranges"] = tuple((lo, INF if hi == "inf" else hi) for lo, hi in d["valid_ranges"])
        for k in ("scales", "neg_min_proposals"):
            d[k] = tuple(d[k])
        if d.get("stride_jitter") is not None:
            d["stride_jitter"] = tuple(d["stride_jitter"])
        return cls(**d)


@dataclass
class ImageRecord:
    """One image: size, GT boxes (xyxy, original pixels), labels, crowd flags, optional proposals."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # [G, 4] float64
    labels: np.ndarray  # [G] int64
    crowd: np.ndarray = None  # [G] bool
    proposals: np.ndarray = None  # [P, 4] float64 or None
    file_name: str = ""

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.crowd = np.zeros(len(self.boxes), bool) if self.crowd is None else np.asarray(self.crowd, bool)
        if self.proposals is not None:
            self.proposals = np.asarray(self.proposals, dtype=np.float64).reshape(-1, 4)
        if len(self.labels) != len(self.boxes) or len(self.crowd) != len(self.boxes):
            raise ValueError(f"image {self.image_id}: boxes, labels and crowd flags differ in length")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image {self.image_id}: width and height must be positive")


# ---------------------------------------------------------------------------------------------
# §1 scales and validity


def image_scales(width: float, height: float, config: ChipConfig) -> list:
    """Training scale factors of an image (the coarsest fits the image into one chip)."""
    return [config.chip_size / max(width, height) if s is None else float(s) for s in config.scales]


def canvas_size(width: float, height: float, scale: float) -> tuple:
    """round(W·s) × round(H·s), rounding halves up."""
    return math.floor(width * scale + 0.5), math.floor(height * scale + 0.5)


def valid_at_scale(boxes: np.ndarray, scale_index: int, scale: float, config: ChipConfig,
                   stride: int | None = None, crowd: np.ndarray | None = None) -> np.ndarray:
    """§1: size sqrt(w·h) (original pixels) in the scale's range; no side under ``min_valid_side``;
    at every scale but the coarsest, max(w, h)·s <= K − d. Crowd boxes are never valid."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size = np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))
    lo, hi = config.valid_ranges[scale_index]
    ok = (size >= lo) & (size < hi) & (np.minimum(w, h) >= config.min_valid_side)
    if scale_index != len(config.scales) - 1:
        d = config.stride if stride is None else stride
        ok &= np.maximum(w, h) * scale <= config.chip_size - d
    if crowd is not None:
        ok &= ~np.asarray(crowd, bool)
    return ok


# ---------------------------------------------------------------------------------------------
# §2–§4 planning a batch of images


def _cover(problems, config: ChipConfig, stride: int, seed):
    """Runs one greedy_chip_cover call over many (canvas, boxes) problems.
    Returns per problem (chips [C, 4] canvas coords, box_chip [N])."""
    if not problems:
        return []
    boxes = np.concatenate([p[1] for p in problems])
    group = np.concatenate([np.full(len(p[1]), k, dtype=np.int64) for k, p in enumerate(problems)])
    canvas = np.array([p[0] for p in problems], dtype=np.float64)
    chips, chip_group, box_chip = greedy_chip_cover(
        torch.from_numpy(boxes), torch.from_numpy(group), torch.from_numpy(canvas),
        chip_size=config.chip_size, stride=stride, seed=seed)
    chips, chip_group, box_chip = chips.double().numpy(), chip_group.numpy(), box_chip.numpy()
    first = np.searchsorted(chip_group, np.arange(len(problems)))
    last = np.searchsorted(chip_group, np.arange(len(problems)), side="right")
    out, start = [], 0
    for k, p in enumerate(problems):
        n = len(p[1])
        bc = box_chip[start:start + n]
        out.append((chips[first[k]:last[k]], np.where(bc >= 0, bc - first[k], -1)))
        start += n
    return out


def _inside(boxes, chips):
    """[N, C]: box entirely inside chip (both in the same coordinates)."""
    return ((chips[None, :, 0] <= boxes[:, None, 0]) & (chips[None, :, 1] <= boxes[:, None, 1])
            & (boxes[:, None, 2] <= chips[None, :, 2]) & (boxes[:, None, 3] <= chips[None, :, 3]))


def _intersection(boxes, chips):
    w = np.minimum(boxes[:, None, 2], chips[None, :, 2]) - np.maximum(boxes[:, None, 0], chips[None, :, 0])
    h = np.minimum(boxes[:, None, 3], chips[None, :, 3]) - np.maximum(boxes[:, None, 1], chips[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _clip(boxes, w, h):
    b = boxes.copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    return b


def plan_images(images: list, config: ChipConfig, stride: int | None = None, seed: int | None = None) -> dict:
    """Plans chips for a batch of images: two op calls (positives, then negatives) for all of them.

    Returns columns (numpy arrays) for :class:`ChipDB`, with ``chip_image`` indexing ``images``.
    """
    d = config.stride if stride is None else stride
    K = config.chip_size
    n_scales = len(config.scales)
    per_image = []
    pos_problems, pos_keys = [], []
    for ii, im in enumerate(images):
        scales = image_scales(im.width, im.height, config)
        info = {"scales": scales, "canvas": [], "valid": []}
        for si, s in enumerate(scales):
            cw, ch = canvas_size(im.width, im.height, s)
            valid = valid_at_scale(im.boxes, si, s, config, d, im.crowd)
            info["canvas"].append((cw, ch))
            info["valid"].append(valid)
            if valid.any():
                pos_problems.append(((cw, ch), im.boxes[valid] * s))
                pos_keys.append((ii, si))
        per_image.append(info)
    pos = dict(zip(pos_keys, _cover(pos_problems, config, d, seed)))

    # §4: proposals valid at the scale and not inside any positive chip of it.
    neg_problems, neg_keys = [], []
    for ii, im in enumerate(images):
        if im.proposals is None or len(im.proposals) == 0:
            continue
        info = per_image[ii]
        for si, s in enumerate(info["scales"]):
            cw, ch = info["canvas"][si]
            p = im.proposals[valid_at_scale(im.proposals, si, s, config, d)]
            if len(p) == 0:
                continue
            pc = _clip(p * s, cw, ch)
            if (ii, si) in pos and len(pos[ii, si][0]):
                pc = pc[~_inside(pc, pos[ii, si][0]).any(axis=1)]
            if len(pc):
                neg_problems.append(((cw, ch), pc))
                neg_keys.append((ii, si))
    neg = {}
    for key, problem, (chips, _) in zip(neg_keys, neg_problems, _cover(neg_problems, config, d, seed)):
        if len(chips):
            enough = _inside(problem[1], chips).sum(axis=0) >= config.neg_min_proposals[key[1]]
            if enough.any():
                neg[key] = chips[enough]

    cols = {k: [] for k in ("chip_image", "chip_scale_index", "chip_scale", "chip_canvas", "chip_kind",
                            "chip_valid_range", "gt_count", "gt_boxes", "gt_labels", "gt_valid", "gt_index")}
    for ii, im in enumerate(images):
        info = per_image[ii]
        for si, s in enumerate(info["scales"]):
            cw, ch = info["canvas"][si]
            pos_chips = pos[ii, si][0] if (ii, si) in pos else np.zeros((0, 4))
            neg_chips = neg.get((ii, si), np.zeros((0, 4)))
            chips = np.concatenate([pos_chips, neg_chips])
            if len(chips) == 0:
                continue
            gt = im.boxes * s
            valid = info["valid"][si]
            inter_all = _intersection(gt, chips) if len(gt) else np.zeros((0, len(chips)))
            # §3: each valid GT belongs to the positive chip it overlaps most (first on ties);
            # positive chips come first in `chips`.
            owner = np.full(len(gt), -1)
            if len(pos_chips) and valid.any():
                owner[valid] = np.argmax(inter_all[valid][:, :len(pos_chips)], axis=1)
            lo, hi = config.valid_ranges[si]
            for c, chip in enumerate(chips):
                hit = np.flatnonzero(inter_all[:, c] > 0)
                crop = np.empty((len(hit), 4))
                crop[:, 0::2] = np.clip(gt[hit][:, 0::2], chip[0], chip[2]) - chip[0]
                crop[:, 1::2] = np.clip(gt[hit][:, 1::2], chip[1], chip[3]) - chip[1]
                keep = ((crop[:, 2] - crop[:, 0]) >= config.min_box_size) & ((crop[:, 3] - crop[:, 1]) >= config.min_box_size)
                hit, crop = hit[keep], crop[keep]
                kind = POSITIVE if c < len(pos_chips) else NEGATIVE
                cols["chip_image"].append(ii)
                cols["chip_scale_index"].append(si)
                cols["chip_scale"].append(s)
                cols["chip_canvas"].append(chip)
                cols["chip_kind"].append(kind)
                cols["chip_valid_range"].append((lo * s, hi * s))
                cols["gt_count"].append(len(hit))
                cols["gt_boxes"].append(crop)
                cols["gt_labels"].append(im.labels[hit])
                cols["gt_valid"].append(valid[hit] & (owner[hit] == c) & (kind == POSITIVE))
                cols["gt_index"].append(hit)
    n_chips = len(cols["chip_image"])
    out = {
        "chip_image": np.array(cols["chip_image"], dtype=np.int64),
        "chip_scale_index": np.array(cols["chip_scale_index"], dtype=np.int8),
        "chip_scale": np.array(cols["chip_scale"], dtype=np.float64),
        "chip_canvas": np.array(cols["chip_canvas"], dtype=np.float64).reshape(n_chips, 4),
        "chip_kind": np.array(cols["chip_kind"], dtype=np.int8),
        "chip_valid_range": np.array(cols["chip_valid_range"], dtype=np.float64).reshape(n_chips, 2),
        "gt_offsets": np.concatenate([[0], np.cumsum(cols["gt_count"], dtype=np.int64)]).astype(np.int64),
        "gt_boxes": np.concatenate(cols["gt_boxes"]) if n_chips else np.zeros((0, 4)),
        "gt_labels": np.concatenate(cols["gt_labels"]).astype(np.int64) if n_chips else np.zeros(0, np.int64),
        "gt_valid": np.concatenate(cols["gt_valid"]).astype(bool) if n_chips else np.zeros(0, bool),
        "gt_index": np.concatenate(cols["gt_index"]).astype(np.int64) if n_chips else np.zeros(0, np.int64),
        "uncoverable": sum(int((bc < 0).sum()) for _, bc in pos.values()),
    }
    return out


# ---------------------------------------------------------------------------------------------
# The chip database


@dataclass
class ChipDB:
    """All chips of a dataset. Chip ``c`` lies on image ``chip_image[c]`` at scale
    ``chip_scale[c]``; ``chip_canvas[c]`` is its box on the scaled canvas (width/height <= K; the
    chip is padded to K×K), ``chip_box(c)`` the same in original pixels. Its GT are rows
    ``gt_offsets[c]:gt_offsets[c+1]`` of ``gt_boxes`` (chip pixels), ``gt_labels``, ``gt_valid``,
    ``gt_index`` (the GT's index in its image). ``chip_kind``: 0 positive, 1 negative (the pool)."""

    config: ChipConfig
    stride: int
    image_ids: np.ndarray
    image_sizes: np.ndarray  # [I, 2] (W, H)
    file_names: np.ndarray
    chip_image: np.ndarray
    chip_scale_index: np.ndarray
    chip_scale: np.ndarray
    chip_canvas: np.ndarray
    chip_kind: np.ndarray
    chip_valid_range: np.ndarray
    gt_offsets: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_valid: np.ndarray
    gt_index: np.ndarray
    uncoverable: int = 0
    extra: dict = field(default_factory=dict)

    FORMAT = 1
    _ARRAYS = ("image_ids", "image_sizes", "file_names", "chip_image", "chip_scale_index", "chip_scale",
               "chip_canvas", "chip_kind", "chip_valid_range", "gt_offsets", "gt_boxes", "gt_labels",
               "gt_valid", "gt_index")

    def __len__(self):
        return len(self.chip_image)

    def chip_box(self, c: int) -> np.ndarray:
        """Chip ``c`` in original-image pixels."""
        return self.chip_canvas[c] / self.chip_scale[c]

    def chip_gt(self, c: int) -> dict:
        s, e = self.gt_offsets[c], self.gt_offsets[c + 1]
        return {"boxes": self.gt_boxes[s:e], "labels": self.gt_labels[s:e], "valid": self.gt_valid[s:e],
                "index": self.gt_index[s:e]}

    def epoch(self, epoch: int, seed: int = 0) -> np.ndarray:
        """The chips of one epoch as rows (chip index, flip): every positive chip, plus
        ``negatives_per_image`` negatives per image drawn uniformly from its pool (all of a smaller
        pool); flips per ``config.flip``. Seeded by (seed, epoch); the order is shuffled."""
        rng = np.random.default_rng([seed, epoch])
        chosen = [np.flatnonzero(self.chip_kind == POSITIVE)]
        neg = np.flatnonzero(self.chip_kind == NEGATIVE)
        n = self.config.negatives_per_image
        if len(neg) and n > 0:
            by_image = np.split(neg, np.flatnonzero(np.diff(self.chip_image[neg])) + 1)
            for pool in by_image:
                chosen.append(pool if len(pool) <= n else rng.choice(pool, size=n, replace=False))
        chips = np.sort(np.concatenate(chosen))
        if self.config.flip == "both":
            rows = np.concatenate([np.stack([chips, np.zeros_like(chips)], 1), np.stack([chips, np.ones_like(chips)], 1)])
        elif self.config.flip == "random":
            rows = np.stack([chips, rng.integers(0, 2, len(chips))], 1)
        else:
            rows = np.stack([chips, np.zeros_like(chips)], 1)
        return rows[rng.permutation(len(rows))]

    # -- statistics -------------------------------------------------------------------------

    def stats(self) -> dict:
        """Chips per image (and per scale), and pixels processed per image per epoch (positives
        plus sampled negatives, each K² as chips are padded) relative to single-scale 800×1333 and
        to the full pyramid of the training scales. Flipping scales both sides alike, so it is left out."""
        cfg, K = self.config, self.config.chip_size
        n_img = max(1, len(self.image_ids))
        pos = self.chip_kind == POSITIVE
        neg = ~pos
        neg_pool = np.bincount(self.chip_image[neg], minlength=len(self.image_ids))
        sampled_neg = np.minimum(neg_pool, cfg.negatives_per_image).sum()
        chips_per_epoch = int(pos.sum() + sampled_neg)
        single, pyramid = 0.0, 0.0
        for w, h in self.image_sizes:
            s = min(800 / min(w, h), 1333 / max(w, h))
            cw, ch = canvas_size(w, h, s)
            single += cw * ch
            for sc in image_scales(w, h, cfg):
                pw, ph = canvas_size(w, h, sc)
                pyramid += pw * ph
        chip_pixels = chips_per_epoch * K * K
        per_scale = [int((pos & (self.chip_scale_index == i)).sum()) for i in range(len(cfg.scales))]
        gt_valid = int(self.gt_valid.sum())
        return {
            "images": len(self.image_ids),
            "positive_chips": int(pos.sum()),
            "negative_pool": int(neg.sum()),
            "chips_per_epoch": chips_per_epoch,
            "positive_chips_per_image": float(pos.sum() / n_img),
            "positive_chips_per_image_per_scale": [c / n_img for c in per_scale],
            "negative_pool_per_image": float(neg.sum() / n_img),
            "chips_per_image_per_epoch": chips_per_epoch / n_img,
            "pixels_vs_single_scale_800x1333": chip_pixels / single if single else 0.0,
            "pixels_vs_full_pyramid": chip_pixels / pyramid if pyramid else 0.0,
            "pyramid_vs_single_scale": pyramid / single if single else 0.0,
            "valid_gt_assignments": gt_valid,
            "uncoverable_valid_gt": int(self.uncoverable),
            "stride": self.stride,
        }

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str) -> str:
        """Writes an .npz through a temporary file and a rename: an existing database is never
        left half-written, and a reader never sees a partial file."""
        path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        meta = {"format": self.FORMAT, "config": self.config.to_json(), "stride": self.stride,
                "uncoverable": self.uncoverable, "extra": self.extra}
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".chipdb-", suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str) -> "ChipDB":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != cls.FORMAT:
                raise ValueError(f"{path}: chip database format {meta.get('format')} is not {cls.FORMAT}")
            arrays = {k: z[k] for k in cls._ARRAYS}
        return cls(config=ChipConfig.from_json(meta["config"]), stride=meta["stride"],
                   uncoverable=meta["uncoverable"], extra=meta.get("extra", {}), **arrays)


# ---------------------------------------------------------------------------------------------
# Datasets


def load_coco(annotations) -> list:
    """ImageRecords from a COCO-format annotation file (path) or dict, through pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        if isinstance(annotations, (str, os.PathLike)):
            coco = COCO(os.fspath(annotations))
        else:
            coco = COCO()
            coco.dataset = annotations
            coco.createIndex()
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        anns = coco.imgToAnns.get(img_id, [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float64).reshape(-1, 4)
        records.append(ImageRecord(
            image_id=int(img_id), width=int(info["width"]), height=int(info["height"]), boxes=boxes,
            labels=np.array([a["category_id"] for a in anns], dtype=np.int64),
            crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            file_name=info.get("file_name", "")))
    return records


def load_proposals(path_or_obj) -> dict:
    """Proposals per image id, xyxy original pixels. Accepts a JSON file or object that is either
    COCO detection results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) or a mapping
    ``{image_id: [[x1, y1, x2, y2(, score)], ...]}``."""
    obj = path_or_obj
    if isinstance(obj, (str, os.PathLike)):
        with open(obj) as f:
            obj = json.load(f)
    out = {}
    if isinstance(obj, list):
        for r in obj:
            x, y, w, h = r["bbox"]
            out.setdefault(int(r["image_id"]), []).append([x, y, x + w, y + h])
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out[int(k)] = [row[:4] for row in v]
    else:
        raise ValueError("proposals must be COCO detection results (a list) or {image_id: boxes}")
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in out.items()}


def plan_dataset(images: list, proposals: dict | None = None, config: ChipConfig | None = None, *,
                 stride: int | None = None, seed: int | None = None, batch_size: int = 1000,
                 progress: bool = True) -> ChipDB:
    """Plans a whole dataset, ``batch_size`` images per op call, with a progress bar."""
    from tqdm import tqdm

    config = config or ChipConfig()
    d = config.stride if stride is None else stride
    if proposals:
        for im in images:
            if im.image_id in proposals:
                im.proposals = proposals[im.image_id]
    parts, offset = [], 0
    bar = tqdm(total=len(images), unit="img", desc="planning chips", disable=not progress, mininterval=0.5)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        part = plan_images(batch, config, stride=d, seed=seed)
        part["chip_image"] = part["chip_image"] + offset
        parts.append(part)
        offset += len(batch)
        bar.update(len(batch))
    bar.close()

    def cat(key, empty):
        arrays = [p[key] for p in parts]
        return np.concatenate(arrays) if arrays else empty

    gt_offsets, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        gt_offsets.append(p["gt_offsets"][1:] + base)
        base += p["gt_offsets"][-1]
    return ChipDB(
        config=config, stride=d,
        image_ids=np.array([im.image_id for im in images], dtype=np.int64),
        image_sizes=np.array([[im.width, im.height] for im in images], dtype=np.int64).reshape(-1, 2),
        file_names=np.array([im.file_name for im in images], dtype=str),
        chip_image=cat("chip_image", np.zeros(0, np.int64)),
        chip_scale_index=cat("chip_scale_index", np.zeros(0, np.int8)),
        chip_scale=cat("chip_scale", np.zeros(0)),
        chip_canvas=cat("chip_canvas", np.zeros((0, 4))),
        chip_kind=cat("chip_kind", np.zeros(0, np.int8)),
        chip_valid_range=cat("chip_valid_range", np.zeros((0, 2))),
        gt_offsets=np.concatenate(gt_offsets),
        gt_boxes=cat("gt_boxes", np.zeros((0, 4))),
        gt_labels=cat("gt_labels", np.zeros(0, np.int64)),
        gt_valid=cat("gt_valid", np.zeros(0, bool)),
        gt_index=cat("gt_index", np.zeros(0, np.int64)),
        uncoverable=sum(p["uncoverable"] for p in parts),
    )


def format_stats(s: dict) -> str:
    per_scale = ", ".join(f"{v:.2f}" for v in s["positive_chips_per_image_per_scale"])
    return "\n".join([
        f"images                          {s['images']}",
        f"positive chips                  {s['positive_chips']} ({s['positive_chips_per_image']:.2f} per image; "
        f"per scale, finest first: {per_scale})",
        f"negative chip pool              {s['negative_pool']} ({s['negative_pool_per_image']:.2f} per image)",
        f"chips per epoch                 {s['chips_per_epoch']} ({s['chips_per_image_per_epoch']:.2f} per image, "
        "before flipping)",
        f"pixels vs single-scale 800x1333 {s['pixels_vs_single_scale_800x1333']:.2f}x",
        f"pixels vs full 3-scale pyramid  {s['pixels_vs_full_pyramid']:.2f}x "
        f"(the pyramid is {s['pyramid_vs_single_scale']:.2f}x single-scale)",
        f"valid GT assigned to chips      {s['valid_gt_assignments']} "
        f"({s['uncoverable_valid_gt']} valid GT could not be covered)",
    ])
