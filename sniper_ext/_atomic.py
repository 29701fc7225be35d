"""Writing a file atomically: a temporary file in the same folder, then a rename, so that a
reader never sees half a file and an existing file is never left half-written."""

from __future__ import annotations

import os
import tempfile

__all__ = ["atomic_write", "current_umask"]


def current_umask() -> int:
    """The process umask (from /proc where it can be read without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write, *, prefix: str = ".tmp-", suffix: str = ".tmp") -> str:
    """Creates the folders of ``path``, calls ``write(binary file)`` on a temporary file beside
    it, syncs and renames it to ``path``. The file gets the mode a plain ``open(path, "w")``
    would give it (0o666 less the umask), not mkstemp's 0o600. On any error the temporary file
    is removed and ``path`` is untouched."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
