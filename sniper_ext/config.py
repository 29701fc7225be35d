"""Configuration of the detector, its training and its inference: dataclasses with the numbers of
``docs/method.md`` as defaults, named presets, JSON files and ``key=value`` overrides.

    cfg = preset("tiny")                       # or "sniper_r101_coco", "r50"
    cfg = apply_overrides(cfg, ["solver.lr=0.02", "chips.chip_size=256"])
    save_config(cfg, "run/config.json"); cfg2 = load_config("run/config.json")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ._atomic import atomic_write
from .chips.config import INF, ChipConfig
from .errors import ConfigError

__all__ = [
    "ModelConfig",
    "InferenceConfig",
    "SolverConfig",
    "DataConfig",
    "TrainConfig",
    "PRESETS",
    "preset",
    "apply_overrides",
    "save_config",
    "load_config",
    "config_to_dict",
    "config_from_dict",
    "ConfigError",
    "validate_config",
]


@dataclass
class ModelConfig:
    """The network (method §5–§7)."""

    depth: int = 101
    width: float = 1.0
    #: "train": BatchNorm on batch statistics (SNIPER); "frozen": affine only (tiny batches)
    norm: str = "train"
    freeze_at: int = 2
    deformable_res5: bool = True
    offset_groups: int = 4
    num_classes: int = 80
    # RPN (§5)
    rpn_channels: int = 512
    anchor_stride: int = 16
    anchor_base: float = 16.0
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    anchor_scales: tuple = (2.0, 4.0, 7.0, 10.0, 13.0, 16.0, 24.0)
    rpn_pos_iou: float = 0.5
    rpn_neg_iou: float = 0.4
    rpn_invalid_iou: float = 0.3
    rpn_allowed_border: float = 32.0
    rpn_batch_per_chip: int = 256
    rpn_positive_fraction: float = 0.5
    # proposals and R-CNN targets (§6)
    proposal_min_size: float = 3.0
    proposal_nms_iou: float = 0.7
    proposal_pre_nms_top_n: int | None = 6000
    proposal_post_nms_top_n: int = 300
    rcnn_fg_iou: float = 0.5
    rcnn_bbox_stds: tuple = (0.1, 0.1, 0.2, 0.2)
    # R-CNN head (§7)
    rcnn_reduce_channels: int = 256
    #: "deform_roi_pool" (SNIPER) or "roi_align"
    roi_pooler: str = "deform_roi_pool"
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    fc_channels: int = 1024
    # AutoFocus's FocusPixel head (§11): off in the SNIPER presets (their checkpoints still load)
    focus_head: bool = False
    focus_channels: int = 256
    #: a cell is a FocusPixel (label 1) where it overlaps a box whose sqrt(area) in chip pixels is
    #: in (lo, hi); ignored (-1) where it overlaps one <= lo or in [hi, focus_ignore_below)
    focus_range: tuple = (5.0, 64.0)
    focus_ignore_below: float = 90.0
    focus_loss_weight: float = 1.0


@dataclass
class InferenceConfig:
    """Multi-scale inference (method §9). ``resolutions`` are (min side, max side) pairs; a scale
    of an image is min/min(W,H), lowered to max/max(W,H) when the long side would exceed max.
    ``valid_ranges`` are box sizes sqrt(w·h) in original pixels, one per resolution."""

    resolutions: tuple = ((1400, 2000), (800, 1280), (480, 512))
    valid_ranges: tuple = ((0.0, 90.0), (32.0, 180.0), (75.0, INF))
    score_threshold: float = 1e-3
    #: per-class Soft-NMS over the detections of all scales
    nms_method: str = "gaussian"
    soft_nms_sigma: float = 0.55
    nms_iou: float = 0.3  # for "linear" and "hard"
    detections_per_image: int = 200
    #: RPN proposals per image and scale before the R-CNN head
    proposals_per_scale: int = 300
    #: pads every image of a batch to a multiple of this
    size_divisibility: int = 16
    batch_size: int = 2
    # AutoFocus (§11): the cascade runs the resolutions from the coarsest (the last) to the finest,
    # each finer one only on the FocusChips of the one before. One entry per step (coarse -> fine).
    #: FocusPixel probability threshold t of each step
    autofocus_thresholds: tuple = (0.02, 0.2)
    #: dilation d (a d x d square, cells) of each step
    autofocus_dilations: tuple = (3, 3)
    #: the smallest FocusChip side k (cells of the coarser scale) of each step
    autofocus_min_chip: tuple = (16, 20)
    #: detections at a FocusChip scale with an edge within this many original pixels of a chip
    #: edge that is not on the image border are dropped
    autofocus_border: float = 10.0
    #: valid ranges of the cascade, one per resolution (same order as ``resolutions``)
    autofocus_valid_ranges: tuple = ((0.0, 75.0), (32.0, 180.0), (75.0, INF))


@dataclass
class SolverConfig:
    """SGD with linear warm-up and step decay (method §8)."""

    #: chips per GPU/process; the global batch is this times the world size
    batch_size: int = 16
    #: the learning rate for ``reference_batch`` chips, scaled linearly with the global batch
    base_lr: float = 0.015
    reference_batch: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 1000
    warmup_factor: float = 1.0 / 3
    #: epochs of the detector stage and the epochs at which lr is multiplied by ``gamma``
    epochs: float = 7.0
    steps: tuple = (5.33,)
    gamma: float = 0.1
    #: epochs of the RPN-only stage (§4)
    rpn_epochs: float = 2.0
    #: "bf16" (autocast, GPU default), "fp16" (autocast + grad scaler), "fp32"
    precision: str = "auto"
    clip_grad_norm: float | None = None
    checkpoint_every: int = 1000
    log_every: int = 20
    max_iter: int | None = None
    #: training steps whose loss is not finite that may be skipped (each counted and logged)
    #: before the run stops; 0 stops at the first
    max_bad_steps: int = 0


@dataclass
class DataConfig:
    """Where the data is. Without ``annotations`` the embedded synthetic dataset is used."""

    annotations: str | None = None
    image_root: str | None = None
    #: "error": stop at the first bad image/annotation; "skip": skip and count
    bad_data: str = "error"
    #: keep the checked annotations as a memory-mapped index, reused by later starts
    index_cache: bool = True
    #: the index's folder (default: $SNIPER_CACHE_DIR, else ~/.cache/sniper_ext)
    cache_dir: str | None = None
    #: check every image file (header, end marker, size) at the start; unchanged files are
    #: not read again once they passed
    check_images: bool = True
    #: the largest image side accepted (pixels); a larger declared size is a data error
    max_image_side: int = 20000
    workers: int = 2
    synthetic_images: int = 64
    synthetic_seed: int = 0
    #: images are normalised as (x/255 - mean) / std, RGB
    pixel_mean: tuple = (0.485, 0.456, 0.406)
    pixel_std: tuple = (0.229, 0.224, 0.225)


@dataclass
class TrainConfig:
    name: str = "sniper_r101_coco"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    chips: ChipConfig = field(default_factory=ChipConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    backbone_weights: str | None = None
    #: "two_stage" (RPN, negative chips, detector), "positives" (no negative chips),
    #: "single_scale" (full images at one resolution), "pyramid" (full images at every training
    #: scale, SNIP-style): the baselines of method §10
    mode: str = "two_stage"
    #: for mode "single_scale": (min side, max side)
    single_scale_resolution: tuple = (800, 1333)


def _tiny() -> TrainConfig:
    """ResNet-18 at 1/8 width on 192-px chips, COCO's geometry scaled by 0.4 (images of ~256 px)."""
    k = 0.4
    return TrainConfig(
        name="tiny",
        model=ModelConfig(
            depth=18,
            width=0.125,
            # trained from scratch (no ImageNet weights on the demo's path): nothing frozen, and
            # BatchNorm on batch statistics (frozen random norms would leave it without any)
            norm="train",
            freeze_at=0,
            num_classes=3,
            rpn_channels=64,
            anchor_base=8.0,
            anchor_scales=(1.0, 2.0, 4.0, 7.0, 12.0, 20.0),
            rpn_batch_per_chip=128,
            rpn_allowed_border=12.0,
            proposal_pre_nms_top_n=1000,
            proposal_post_nms_top_n=100,
            rcnn_reduce_channels=32,
            fc_channels=128,
        ),
        chips=ChipConfig(
            scales=(3.0, 1.667, None),
            valid_ranges=((0.0, 80 * k), (32 * k, 150 * k), (120 * k, INF)),
            chip_size=192,
            stride=12,
        ),
        solver=SolverConfig(
            batch_size=8,
            base_lr=0.1,  # from scratch with batch-statistics BN: measured best of 0.02/0.06/0.1 (demo AP)
            reference_batch=8,
            warmup_iters=50,
            epochs=6.0,
            steps=(4.5,),
            rpn_epochs=2.0,
            checkpoint_every=100,
            log_every=10,
        ),
        data=DataConfig(workers=1),
        inference=InferenceConfig(
            resolutions=((560, 800), (320, 512), (192, 205)),
            valid_ranges=((0.0, 90 * k), (32 * k, 180 * k), (75 * k, INF)),
            detections_per_image=100,
            proposals_per_scale=100,
            batch_size=4,
        ),
        single_scale_resolution=(320, 533),
    )


def _tiny_autofocus() -> TrainConfig:
    """``tiny`` with the FocusPixel head; AutoFocus's sizes scaled like the rest of the preset
    (0.4 of COCO's: focus range (2, 25.6), ignored up to 36; FocusChips of at least 6 and 8 cells)."""
    k = 0.4
    cfg = _tiny()
    cfg.name = "tiny_autofocus"
    cfg.model.focus_head = True
    cfg.model.focus_channels = 64
    cfg.model.focus_range = (5 * k, 64 * k)
    cfg.model.focus_ignore_below = 90 * k
    cfg.inference.autofocus_min_chip = (6, 8)
    cfg.inference.autofocus_border = 10 * k
    cfg.inference.autofocus_valid_ranges = ((0.0, 75 * k), (32 * k, 180 * k), (75 * k, INF))
    return cfg


def _r101_autofocus() -> TrainConfig:
    cfg = TrainConfig(name="sniper_r101_coco_autofocus")
    cfg.model.focus_head = True
    return cfg


def _r50() -> TrainConfig:
    cfg = TrainConfig(name="sniper_r50_coco")
    cfg.model.depth = 50
    return cfg


PRESETS = {
    "sniper_r101_coco": lambda: TrainConfig(),
    "r101": lambda: TrainConfig(),
    "r50": _r50,
    "sniper_r50_coco": _r50,
    "tiny": _tiny,
    "tiny_autofocus": _tiny_autofocus,
    "sniper_r101_coco_autofocus": _r101_autofocus,
    "r101_autofocus": _r101_autofocus,
}


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named configuration: ``sniper_r101_coco`` (the paper's; alias ``r101``),
    ``r50`` (alias ``sniper_r50_coco``), ``tiny`` (CPU tests and the demo); with AutoFocus's
    FocusPixel head: ``sniper_r101_coco_autofocus`` (alias ``r101_autofocus``), ``tiny_autofocus``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# Validation: every field checked in one pass, before any work


def _fail(key: str, need: str, value) -> None:
    raise ConfigError(f"{key}: must be {need}, got {value!r}")


def _int(key, v, lo=None, none_ok=False):
    if v is None and none_ok:
        return
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
        _fail(key, "an integer" + (f" >= {lo}" if lo is not None else "") + (" or null" if none_ok else ""), v)


def _num(key, v, lo=None, hi=None, *, lo_open=False, hi_open=False, none_ok=False):
    if v is None and none_ok:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        bounds = []
        if lo is not None:
            bounds.append(f"{'>' if lo_open else '>='} {lo}")
        if hi is not None:
            bounds.append(f"{'<' if hi_open else '<='} {hi}")
        _fail(
            key, "a finite number" + (" " + " and ".join(bounds) if bounds else "") + (" or null" if none_ok else ""), v
        )


def _choice(key, v, choices):
    if v not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {v!r}")


def _numbers(key, v, n=None, lo=None, lo_open=False):
    if not isinstance(v, (tuple, list)) or (n is not None and len(v) != n) or (n is None and not v):
        _fail(key, f"a list of {n} numbers" if n else "a non-empty list of numbers", v)
    for k, x in enumerate(v):
        _num(f"{key}[{k}]", x, lo, lo_open=lo_open)


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Raises ConfigError naming the first field that cannot be used (``solver.base_lr: must be a
    finite number > 0, got -0.1``); returns ``cfg``. Every value the training and inference code
    relies on is checked here, so that a bad ``--set`` or config file fails before any work."""
    m, sv, d, inf = cfg.model, cfg.solver, cfg.data, cfg.inference
    if not isinstance(cfg.name, str):
        _fail("name", "a string", cfg.name)
    _int("seed", cfg.seed, 0)
    _choice("mode", cfg.mode, ("two_stage", "positives", "single_scale", "pyramid"))
    _numbers("single_scale_resolution", cfg.single_scale_resolution, 2, 0, lo_open=True)
    if cfg.backbone_weights is not None and not isinstance(cfg.backbone_weights, str):
        _fail("backbone_weights", "a path or null", cfg.backbone_weights)
    # model
    _choice("model.depth", m.depth, (18, 34, 50, 101, 152))
    _num("model.width", m.width, 0, lo_open=True)
    _choice("model.norm", m.norm, ("train", "frozen"))
    _int("model.freeze_at", m.freeze_at, 0)
    if m.freeze_at > 5:
        _fail("model.freeze_at", "an integer in [0, 5]", m.freeze_at)
    if not isinstance(m.deformable_res5, bool):
        _fail("model.deformable_res5", "true or false", m.deformable_res5)
    for key in ("offset_groups", "num_classes", "rpn_channels", "rpn_batch_per_chip", "proposal_post_nms_top_n"):
        _int(f"model.{key}", getattr(m, key), 1)
    _int("model.proposal_pre_nms_top_n", m.proposal_pre_nms_top_n, 1, none_ok=True)
    for key in ("rcnn_reduce_channels", "roi_output_size", "fc_channels"):
        _int(f"model.{key}", getattr(m, key), 1)
    _int("model.roi_sampling_ratio", m.roi_sampling_ratio)
    if m.anchor_stride != 16:
        _fail("model.anchor_stride", "16 (the stride of the concat(res4, res5) features)", m.anchor_stride)
    _num("model.anchor_base", m.anchor_base, 0, lo_open=True)
    _numbers("model.anchor_ratios", m.anchor_ratios, None, 0, lo_open=True)
    _numbers("model.anchor_scales", m.anchor_scales, None, 0, lo_open=True)
    for key in ("rpn_pos_iou", "rpn_neg_iou", "rpn_invalid_iou", "proposal_nms_iou", "rcnn_fg_iou"):
        _num(f"model.{key}", getattr(m, key), 0, 1)
    if m.rpn_neg_iou > m.rpn_pos_iou:
        _fail("model.rpn_neg_iou", f"<= model.rpn_pos_iou ({m.rpn_pos_iou})", m.rpn_neg_iou)
    _num("model.rpn_positive_fraction", m.rpn_positive_fraction, 0, 1)
    _num("model.rpn_allowed_border", m.rpn_allowed_border, 0)
    _num("model.proposal_min_size", m.proposal_min_size, 0)
    _numbers("model.rcnn_bbox_stds", m.rcnn_bbox_stds, 4, 0, lo_open=True)
    _choice("model.roi_pooler", m.roi_pooler, ("deform_roi_pool", "roi_align"))
    if not isinstance(m.focus_head, bool):
        _fail("model.focus_head", "true or false", m.focus_head)
    _int("model.focus_channels", m.focus_channels, 1)
    _numbers("model.focus_range", m.focus_range, 2, 0)
    if not m.focus_range[0] < m.focus_range[1]:
        _fail("model.focus_range", "(lo, hi) with lo < hi", list(m.focus_range))
    _num("model.focus_ignore_below", m.focus_ignore_below, m.focus_range[1])
    _num("model.focus_loss_weight", m.focus_loss_weight, 0)
    # solver
    _int("solver.batch_size", sv.batch_size, 1)
    _num("solver.base_lr", sv.base_lr, 0, lo_open=True)
    _int("solver.reference_batch", sv.reference_batch, 1)
    _num("solver.momentum", sv.momentum, 0, 1, hi_open=True)
    _num("solver.weight_decay", sv.weight_decay, 0)
    _int("solver.warmup_iters", sv.warmup_iters, 0)
    _num("solver.warmup_factor", sv.warmup_factor, 0, 1, lo_open=True)
    _num("solver.epochs", sv.epochs, 0, lo_open=True)
    _num("solver.rpn_epochs", sv.rpn_epochs, 0, lo_open=True)
    if not isinstance(sv.steps, (tuple, list)):
        _fail("solver.steps", "a list of epochs", sv.steps)
    for k, v in enumerate(sv.steps):
        _num(f"solver.steps[{k}]", v, 0)
    _num("solver.gamma", sv.gamma, 0, lo_open=True)
    _choice("solver.precision", sv.precision, ("auto", "bf16", "fp16", "fp32"))
    _num("solver.clip_grad_norm", sv.clip_grad_norm, 0, lo_open=True, none_ok=True)
    _int("solver.checkpoint_every", sv.checkpoint_every, 0)
    _int("solver.log_every", sv.log_every, 1)
    _int("solver.max_iter", sv.max_iter, 1, none_ok=True)
    _int("solver.max_bad_steps", sv.max_bad_steps, 0)
    # data
    _choice("data.bad_data", d.bad_data, ("error", "skip"))
    _int("data.workers", d.workers, 0)
    _int("data.synthetic_images", d.synthetic_images, 1)
    _int("data.synthetic_seed", d.synthetic_seed, 0)
    _numbers("data.pixel_mean", d.pixel_mean, 3, 0)
    if any(v > 1 for v in d.pixel_mean):
        _fail("data.pixel_mean", "three numbers in [0, 1]", d.pixel_mean)
    _numbers("data.pixel_std", d.pixel_std, 3, 0, lo_open=True)
    for key in ("index_cache", "check_images"):
        if not isinstance(getattr(d, key), bool):
            _fail(f"data.{key}", "true or false", getattr(d, key))
    _int("data.max_image_side", d.max_image_side, 1)
    for key in ("annotations", "image_root", "cache_dir"):
        v = getattr(d, key)
        if v is not None and not isinstance(v, str):
            _fail(f"data.{key}", "a path or null", v)
    # inference
    res, ranges = tuple(inf.resolutions), tuple(inf.valid_ranges)
    if not res:
        raise ConfigError("inference.resolutions: needs at least one (min side, max side) pair")
    if len(ranges) != len(res):
        raise ConfigError(
            f"inference: {len(res)} resolutions but {len(ranges)} valid ranges; give one (lo, hi) range per resolution"
        )
    for k, r in enumerate(res):
        if (
            not isinstance(r, (tuple, list))
            or len(r) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in r)
        ):
            raise ConfigError(f"inference.resolutions[{k}]: must be (min side, max side) > 0, got {list(r)}")
    for k, r in enumerate(ranges):
        if not isinstance(r, (tuple, list)) or len(r) != 2 or not (0 <= float(r[0]) < float(r[1])):
            raise ConfigError(f"inference.valid_ranges[{k}]: must be (lo, hi) with 0 <= lo < hi, got {list(r)}")
    for key in ("batch_size", "detections_per_image", "proposals_per_scale", "size_divisibility"):
        v = getattr(inf, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"inference.{key}: must be a positive integer, got {v!r}")
    if inf.nms_method not in ("gaussian", "linear", "hard"):
        raise ConfigError(f"inference.nms_method: must be gaussian, linear or hard, got {inf.nms_method!r}")
    _num("inference.score_threshold", inf.score_threshold, 0, 1)
    _num("inference.soft_nms_sigma", inf.soft_nms_sigma, 0, lo_open=True)
    _num("inference.nms_iou", inf.nms_iou, 0, 1)
    # AutoFocus: the forms here; the counts (one per cascade step / resolution) where the cascade
    # is built (sniper_ext.inference.AutoFocusInference), so that changing the resolutions alone
    # still works for ordinary inference
    for key in ("autofocus_thresholds", "autofocus_dilations", "autofocus_min_chip", "autofocus_valid_ranges"):
        v = getattr(inf, key)
        if not isinstance(v, (tuple, list)):
            _fail(f"inference.{key}", "a list (one entry per cascade step or resolution)", v)
    for k, v in enumerate(inf.autofocus_thresholds):
        _num(f"inference.autofocus_thresholds[{k}]", v, 0, 1)
    for key in ("autofocus_dilations", "autofocus_min_chip"):
        for k, v in enumerate(getattr(inf, key)):
            _int(f"inference.{key}[{k}]", v, 1)
    _num("inference.autofocus_border", inf.autofocus_border, 0)
    for k, r in enumerate(inf.autofocus_valid_ranges):
        if not isinstance(r, (tuple, list)) or len(r) != 2 or not (0 <= float(r[0]) < float(r[1])):
            _fail(f"inference.autofocus_valid_ranges[{k}]", "(lo, hi) with 0 <= lo < hi", r)
    return cfg


# ---------------------------------------------------------------------------------------------
# dict / JSON round trip


def _encode(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _encode(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (tuple, list)):
        return [_encode(x) for x in v]
    if isinstance(v, float) and v == INF:
        return "inf"
    return v


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain JSON-able dict (tuples become lists, infinity becomes "inf")."""
    return _encode(cfg)


def _decode(value: Any, default: Any, where: str) -> Any:
    """``value`` (from JSON or the command line) in the shape of ``default``."""
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return _from_dict(type(default), value, where, base=default)
    if value == "inf" or value == "Infinity":
        return INF
    if isinstance(value, list):
        if isinstance(default, (tuple, list)) and default and all(isinstance(d, (tuple, list)) for d in default):
            return tuple(_decode(v, default[0], f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_decode(v, None, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    if default is not None and value is not None and not isinstance(value, type(default)):
        if not (isinstance(default, (tuple, list)) and isinstance(value, (tuple, list))):
            raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def _from_dict(cls, d: dict, where: str, base=None):
    base = base if base is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        default = getattr(base, f.name)
        kwargs[f.name] = (
            _decode(d[f.name], default, f"{where}.{f.name}" if where else f.name) if f.name in d else default
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def config_from_dict(d: dict, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from :func:`config_to_dict`'s output; missing keys keep ``base``'s values
    (default: the preset named by ``d["name"]`` if it is one, else the defaults)."""
    if not isinstance(d, dict):
        raise ConfigError(f"a configuration must be a JSON object, got {type(d).__name__}")
    if base is None:
        base = preset(d["name"]) if d.get("name") in PRESETS else TrainConfig()
    return validate_config(_from_dict(TrainConfig, d, "", base=base))


def save_config(cfg: TrainConfig, path: str) -> str:
    text = json.dumps(config_to_dict(cfg), indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()), prefix=".config-", suffix=".json.tmp")


def load_config(path: str) -> TrainConfig:
    """Reads a file written by :func:`save_config` (or any subset of its keys)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """``key.sub=value`` overrides; values are JSON (``[1,2]``, ``true``, ``0.02``, ``null``) or,
    failing that, plain strings."""
    d = config_to_dict(cfg)
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. solver.base_lr=0.02")
        key, text = item.split("=", 1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        node = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section of the configuration")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; known: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    return config_from_dict(d, base=cfg)
