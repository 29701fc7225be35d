"""Training: the SNIPER schedule as one resumable run (:func:`train`, its stages in
:mod:`.pipeline`), one stage's loop (:mod:`.trainer`), the lr schedule, metrics, and the
single-scale baseline's data. Checkpoints, precision and processes live in
:mod:`sniper_ext.runtime`, shared with inference."""

from ..runtime import load_checkpoint, load_detector, save_checkpoint
from .lr_schedule import lr_at, scaled_lr
from .pipeline import SCHEDULES, RunContext, TrainSummary, resolve_config, stages_of, train

__all__ = [
    "SCHEDULES",
    "RunContext",
    "TrainSummary",
    "load_checkpoint",
    "load_detector",
    "lr_at",
    "resolve_config",
    "save_checkpoint",
    "scaled_lr",
    "stages_of",
    "train",
]
