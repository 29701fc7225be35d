"""Configuration of the detector, its training and its inference: dataclasses with the numbers of
``docs/method.md`` as defaults, named presets, JSON files and ``key=value`` overrides.

    cfg = preset("tiny")                       # or "sniper_r101_coco", "r50"
    cfg = apply_overrides(cfg, ["solver.lr=0.02", "chips.chip_size=256"])
    save_config(cfg, "run/config.json"); cfg2 = load_config("run/config.json")
"""

from __future__ import annotations

import dataclasses
import json
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
    #: "single_scale" (full images at one resolution, the baseline of method §10)
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
}


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named configuration: ``sniper_r101_coco`` (the paper's; alias ``r101``),
    ``r50`` (alias ``sniper_r50_coco``), ``tiny`` (CPU tests and the demo)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


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
    return _from_dict(TrainConfig, d, "", base=base)


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
