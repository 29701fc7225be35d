"""Training: the SNIPER schedule as one resumable run (:func:`train`), one stage's loop, atomic
checkpoints, the lr schedule, metrics and multi-process setup for ``torchrun``."""

from .checkpoint import load_checkpoint, save_checkpoint
from .lr_schedule import lr_at, scaled_lr
from .pipeline import TrainSummary, load_detector, stages_of, train

__all__ = [
    "train",
    "TrainSummary",
    "load_detector",
    "stages_of",
    "load_checkpoint",
    "save_checkpoint",
    "lr_at",
    "scaled_lr",
]
