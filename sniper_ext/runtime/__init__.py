"""What training and inference both run on: processes (``torchrun``), precision (autocast) and
checkpoints (atomic writes, loading a trained detector)."""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_config,
    load_checkpoint,
    load_detector,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from .distributed import DistInfo, all_gather_objects, barrier, broadcast_object, cleanup, init_distributed
from .precision import PRECISIONS, autocast_for, resolve_precision

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_config",
    "load_weights",
    "DistInfo",
    "PRECISIONS",
    "all_gather_objects",
    "autocast_for",
    "barrier",
    "broadcast_object",
    "cleanup",
    "init_distributed",
    "load_checkpoint",
    "load_detector",
    "resolve_checkpoint",
    "resolve_precision",
    "save_checkpoint",
]
