"""Checkpoints written atomically (a temporary file, fsync, rename): a run killed at any moment
leaves either the previous checkpoint or the new one, never half of one; and the detector of a
checkpoint of ``sniper train``, loaded for inference."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from .._atomic import atomic_write
from ..config import TrainConfig, config_from_dict
from ..errors import DataError, PathError
from ..modeling import SniperRCNN, build_model

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint", "load_detector", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str, state: dict) -> str:
    """``torch.save`` of ``state`` (plus the format number) through a temporary file beside ``path``."""
    state = dict(state, format=CHECKPOINT_FORMAT)
    return atomic_write(path, lambda f: torch.save(state, f), prefix=".ckpt-", suffix=".pt.tmp")


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Reads a checkpoint of :func:`save_checkpoint`. A missing file raises FileNotFoundError;
    a file that is not such a checkpoint (truncated, another format, not a torch file) raises
    :class:`~sniper_ext.errors.DataError` naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:  # IndexError, KeyError: the weights-only unpickler on some non-torch bytes
        raise DataError(path, None, f"not a readable sniper_ext checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise DataError(path, None, f"not a sniper_ext checkpoint (format {CHECKPOINT_FORMAT} with a model)")
    return state


def resolve_checkpoint(path) -> str:
    """``path`` itself, or ``path/last.pt`` for a run folder. PathError when neither exists."""
    path = os.fspath(path)
    if os.path.isdir(path):
        last = os.path.join(path, "last.pt")
        if os.path.isfile(last):
            return last
        raise PathError(path, "is a directory without last.pt (give the checkpoint file)")
    if not os.path.exists(path):
        raise PathError(path, "no such file")
    return path


def load_detector(path, device="cpu") -> tuple[SniperRCNN, TrainConfig, list]:
    """(model in eval mode on ``device``, TrainConfig, categories [{"id", "name"}]) of a checkpoint
    of ``sniper train`` (a run folder means its ``last.pt``). A missing file raises PathError; a
    file that is not a checkpoint raises DataError naming it."""
    state = load_checkpoint(resolve_checkpoint(path))
    cfg = config_from_dict(state["config"])
    model = build_model(cfg.model, cfg.data)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state.get("categories") or []
