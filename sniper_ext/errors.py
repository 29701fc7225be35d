"""The library's errors, which the command line turns into one line and an exit status; and the
policy for data errors that may be skipped or repaired.

* :class:`DataError`: a problem in user data (a file and an entry in it); exit 1.
* :class:`PathError`: a path that cannot be used (missing, a folder where a file is needed);
  exit 1. The command line names the option that gave the path.
* :class:`DeviceError`: a device that was asked for and is not there; exit 1.
* :class:`TrainingDiverged`: training stopped on a non-finite loss, gradient or weight; exit 1.
* :class:`ConfigError`: a configuration that cannot be used (unknown key, wrong type, bad
  value); exit 2 when it came from the command line.

Loaders (:func:`sniper_ext.data.load_coco`, :func:`sniper_ext.data.load_proposals`) raise
:class:`DataError` naming the file, the place in it and the problem, so that a command line can
print one line such as ``ann.json: image 17, annotation 4: box has negative width (w=-3.0)``.
Problems that real datasets have (a box slightly outside its image, a zero-size box, an
annotation of an unknown image) carry a ``kind``; a :class:`DataIssues` with ``skip=True`` skips
or repairs those and counts them by kind instead of raising. Problems without a kind (a file
that is not JSON, not COCO, an image without a size) always raise.
"""

from __future__ import annotations

import os
from collections import Counter

__all__ = ["ConfigError", "DataError", "DataIssues", "DeviceError", "PathError", "TrainingDiverged", "RunLocked"]


class ConfigError(ValueError):
    """A configuration that cannot be used (unknown key, wrong type, bad value)."""


class PathError(Exception):
    """``path`` cannot be used: ``what`` says why (``"no such file"``, ``"is a directory without
    last.pt"``)."""

    def __init__(self, path, what: str):
        self.path = os.fspath(path)
        self.what = what
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"

    def __reduce__(self):
        return (type(self), (self.path, self.what))


class DeviceError(RuntimeError):
    """A device that was asked for is not available (``cuda`` without a GPU)."""


class TrainingDiverged(Exception):
    """Training met a non-finite loss, gradient norm or weight (more often than
    ``solver.max_bad_steps`` allows); the message names the stage, the iteration and the last
    good checkpoint."""


class RunLocked(Exception):
    """Another process is writing into the same run folder."""


class DataError(ValueError):
    """A problem in user data: ``file`` (a path, or a name such as ``<dict>``), ``where`` in it
    (``"image 17, annotation 4"``, ``"line 3, column 9"``, or None for the whole file), ``what``
    is wrong, and ``kind``: None when it cannot be skipped, else what skipping it means (for
    instance ``"box partly outside its image: clipped"``)."""

    def __init__(self, file, where: str | None, what: str, kind: str | None = None):
        self.file = os.fspath(file) if isinstance(file, os.PathLike) else str(file)
        self.where = where
        self.what = what
        self.kind = kind
        super().__init__(str(self))

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.where, self.what) if p)

    def __reduce__(self):
        return (type(self), (self.file, self.where, self.what, self.kind))


class DataIssues:
    """Decides what a loader does with a skippable :class:`DataError`: raise it (``skip=False``,
    the default) or skip/repair and count it by kind (``skip=True``). Errors without a kind
    always raise. One object can be passed to several loaders; ``counts`` then adds up."""

    def __init__(self, skip: bool = False):
        self.skip = skip
        self.counts: Counter = Counter()
        #: the first error of each kind, for a pointer into the data
        self.first: dict = {}

    def report(self, error: DataError) -> None:
        """Raises ``error`` unless it is skippable and skipping is on; then counts it."""
        if not self.skip or error.kind is None:
            raise error
        self.counts[error.kind] += 1
        self.first.setdefault(error.kind, error)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> list:
        """One line per kind, most frequent first: ``count × kind (first: file: where)``."""
        return [
            f"{n} x {kind} (first: {self.first[kind].file}: {self.first[kind].where})"
            for kind, n in self.counts.most_common()
        ]
