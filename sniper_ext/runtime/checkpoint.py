"""Checkpoints written atomically (a temporary file, fsync, rename): a run killed at any moment
leaves either the previous checkpoint or the new one, never half of one; and the detector of a
checkpoint of ``sniper train``, loaded for inference."""

from __future__ import annotations

import errno
import io
import os
import pickle
import struct
import zipfile

import torch

from .._atomic import atomic_write
from ..config import TrainConfig, config_from_dict
from ..errors import ConfigError, DataError, PathError
from ..modeling import SniperRCNN, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_config",
    "load_checkpoint",
    "load_detector",
    "load_weights",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str, state: dict) -> str:
    """``torch.save`` of ``state`` (plus the format number) through a temporary file beside ``path``,
    renamed into place. The state is serialised in memory first, so a full disk is one clear
    PathError naming ``path`` and the bytes needed, and the previous file stays intact."""
    state = dict(state, format=CHECKPOINT_FORMAT)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    try:
        return atomic_write(path, lambda f: f.write(data), prefix=".ckpt-", suffix=".pt.tmp")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = _free_bytes(os.path.dirname(os.path.abspath(path)))
            raise PathError(
                path,
                f"no space left on the device: the checkpoint needs {len(data) / 2**20:.1f} MiB"
                + (f", {free / 2**20:.1f} MiB are free" if free is not None else "")
                + ("; the previous checkpoint is intact" if os.path.exists(path) else ""),
            ) from None
        raise


def _free_bytes(folder: str) -> int | None:
    try:
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize
    except OSError:
        return None


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
        struct.error,
    ) as e:  # IndexError, KeyError, struct.error: the weights-only unpickler on some non-torch bytes
        if isinstance(e, pickle.UnpicklingError):  # its text is a page about weights_only
            why = "a pickle that is not a torch checkpoint, or a damaged file"
        else:
            first = (str(e).strip().splitlines() or [""])[0]
            why = f"{type(e).__name__}: {first[:160]}"
        raise DataError(path, None, f"not a readable sniper_ext checkpoint ({why})") from None
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


def checkpoint_config(path: str, state: dict) -> TrainConfig:
    """The configuration saved in checkpoint ``state`` (read from ``path``), validated; a missing
    or unusable one is a DataError naming the file."""
    d = state.get("config")
    if not isinstance(d, dict):
        raise DataError(path, None, "holds no configuration (not a checkpoint of sniper train)")
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise DataError(path, None, f"its saved configuration is not valid ({e})") from None


def load_weights(model: torch.nn.Module, weights: dict, path: str, what: str = "model") -> None:
    """``model.load_state_dict(weights)``, strictly, with a mismatch or a non-finite tensor as one
    DataError naming ``path`` and the first tensors at fault (not PyTorch's size-mismatch dump)."""
    if not isinstance(weights, dict):
        raise DataError(path, None, f"its {what} weights are not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k}: {list(weights[k].shape)} in the file, {list(own[k].shape)} in the model"
        for k in own
        if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != own[k].shape
    ]
    problems = shapes + [f"{k} missing" for k in missing] + [f"{k} not in the model" for k in unexpected]
    if problems:
        more = f"; {len(problems) - 2} more" if len(problems) > 2 else ""
        raise DataError(
            path,
            None,
            f"its {what} weights do not match the model its configuration describes ({'; '.join(problems[:2])}{more})",
        )
    bad = [
        k
        for k, v in weights.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise DataError(
            path, None, f"{len(bad)} of its {what} weight tensors hold NaN or infinite values ({', '.join(bad[:3])})"
        )
    model.load_state_dict(weights)


def load_detector(path, device="cpu") -> tuple[SniperRCNN, TrainConfig, list]:
    """(model in eval mode on ``device``, TrainConfig, categories [{"id", "name"}]) of a checkpoint
    of ``sniper train`` (a run folder means its ``last.pt``). A missing file raises PathError; a
    file that is not a checkpoint, with an invalid configuration or with weights that do not fit
    it (or are not finite) raises DataError naming it."""
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    cfg = checkpoint_config(path, state)
    model = build_model(cfg.model, cfg.data)
    load_weights(model, state["model"], path)
    return model.to(device).eval(), cfg, state.get("categories") or []
