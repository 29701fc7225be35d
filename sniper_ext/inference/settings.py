"""The inference settings of a run: a checkpoint's :class:`~sniper_ext.config.InferenceConfig`
with ``inference.key=value`` overrides, checked, optionally reduced to single-scale; and the
check that a checkpoint's classes match a dataset's categories."""

from __future__ import annotations

import dataclasses
import math

from ..config import InferenceConfig, TrainConfig, apply_overrides
from ..errors import ConfigError, DataError

__all__ = ["check_class_count", "check_overrides", "inference_config"]


def check_overrides(overrides) -> None:
    """ConfigError unless every override is ``inference.key=value`` with a known key and a value
    of the right type (checked against the defaults, before any checkpoint is read)."""
    for item in overrides:
        if not item.strip().startswith("inference."):
            raise ConfigError(f"override {item!r}: only inference.* keys can be set here (e.g. inference.batch_size=8)")
    apply_overrides(TrainConfig(), list(overrides))


def inference_config(icfg: InferenceConfig, *, single_scale: bool = False, overrides=()) -> InferenceConfig:
    """``icfg`` with ``inference.key=value`` ``overrides`` applied; ``single_scale`` keeps only the
    middle resolution, valid for every box size ([0, inf)). Raises ConfigError for an override
    outside ``inference.``, an unknown key, or an inconsistent result (a resolution count that
    differs from the valid-range count, a range with lo >= hi)."""
    check_overrides(overrides)
    # the whole configuration is validated on the way (sniper_ext.config.validate_config)
    icfg = apply_overrides(TrainConfig(inference=icfg), list(overrides)).inference
    res = tuple(icfg.resolutions)
    if single_scale:
        mid = len(res) // 2
        icfg = dataclasses.replace(icfg, resolutions=(tuple(res[mid]),), valid_ranges=((0.0, math.inf),))
    return icfg


def check_class_count(num_classes: int, categories, name: str) -> None:
    """DataError unless the model's ``num_classes`` equals the number of ``categories`` of ``name``."""
    if int(num_classes) != len(categories):
        raise DataError(
            name, None, f"checkpoint has {int(num_classes)} classes, {name} has {len(categories)} categories"
        )
