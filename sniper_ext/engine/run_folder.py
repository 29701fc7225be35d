"""The run folder's housekeeping: one writer at a time (a lock that dies with its process),
leftovers of killed runs removed, and what a resumed run may change.

* :class:`RunLock`: ``OUT/.lock`` held with ``flock`` for the whole run by the process that
  writes (the first rank); a second ``sniper train`` into the same folder stops with one line
  naming the holder. A killed run's lock is released by the kernel with the process, so a
  leftover file never blocks the next start.
* :func:`remove_stale_temporaries`: the temporary files of atomic writes that a kill left behind
  (``.ckpt-*.pt.tmp`` and the like), and planning parts.
* :func:`resume_changes`: the configuration asked for against the one the run was started with:
  keys that change the model, the data or the chip stream are refused (an exact resume is no
  longer possible), the others (learning rate and schedule, precision, logging, checkpoints,
  workers, inference) are applied and reported.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket

from ..config import TrainConfig, config_to_dict
from ..errors import ConfigError, RunLocked

__all__ = ["RunLock", "REFUSED_ON_RESUME", "remove_stale_temporaries", "resume_changes"]

#: configuration keys (or prefixes ending in ".") that a resumed run cannot change
REFUSED_ON_RESUME = (
    "model.",
    "chips.",
    "mode",
    "seed",
    "single_scale_resolution",
    "backbone_weights",
    "data.annotations",
    "data.image_root",
    "data.synthetic_images",
    "data.synthetic_seed",
    "data.pixel_mean",
    "data.pixel_std",
    "data.bad_data",
    "data.max_image_side",
    "solver.batch_size",
    "solver.reference_batch",
)

#: prefixes of the temporary files that the run's atomic writes create
_TEMP_PREFIXES = (".ckpt-", ".chipdb-", ".metrics-", ".config-", ".proposals-", ".demo-", ".sniper-probe-")


class RunLock:
    """``with RunLock(out_dir): ...`` (or acquire/release): an exclusive ``flock`` on
    ``out_dir/.lock``; RunLocked when another process holds it."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, ".lock")
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise RunLocked(
                f"{os.path.dirname(self.path)}: another sniper train ({holder}) is writing into this run "
                "folder; wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def remove_stale_temporaries(out_dir: str) -> list:
    """Removes what killed writers left in ``out_dir`` (call it holding the lock); returns the
    names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(out_dir)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(out_dir, name)
        if name.startswith(_TEMP_PREFIXES) and name.endswith(".tmp") and os.path.isfile(path):
            os.unlink(path)
            removed.append(name)
        elif name.endswith(".parts") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _refused(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in REFUSED_ON_RESUME)


def resume_changes(saved: TrainConfig, asked: TrainConfig, out_dir: str) -> list:
    """The keys whose value differs between the run's configuration and the one asked for:
    ConfigError naming them if any is refused, else ``[(key, saved value, asked value)]`` to
    apply."""
    a, b = _flat(config_to_dict(saved)), _flat(config_to_dict(asked))
    changed = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    refused = [c for c in changed if _refused(c[0])]
    if refused:
        shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in refused[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise ConfigError(
            f"--resume: {out_dir} was trained with other settings that a resumed run cannot change "
            f"({shown}{more}); resume with the run's settings, or train into a new --out"
        )
    return changed
