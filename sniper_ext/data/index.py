"""The dataset index: a COCO annotations file, checked once, kept as arrays on disk and reused.

Parsing and checking COCO's training file takes tens of seconds and gigabytes; every rank of
every run used to do it at every start. The index does it once per file content and options:

* ``<cache>/<key>/`` holds the :class:`~sniper_ext.chips.ImageTable` of the file as ``.npy``
  arrays (image ids, sizes, file names, GT boxes, labels, crowd flags, per-image offsets), the
  categories and what was skipped (``meta.json``). ``key`` hashes the file's content (cached by
  path, size, mtime and inode, so an unchanged file is not read again), the bad-data policy and
  the index format. The folder is written under a temporary name and renamed into place, so a
  reader sees a whole index or none; readers memory-map the arrays, so every rank and loader
  worker shares one copy through the page cache.
* ``images-<root hash>.npz`` beside it records the image-file check for one image folder: each
  file's size and mtime when it passed. At the next start only files whose size or mtime
  changed (or that never passed) are read again; ``check=False`` skips the check.

The cache folder is ``cache_dir``, else ``$SNIPER_CACHE_DIR``, else ``$XDG_CACHE_HOME/sniper_ext``
(``~/.cache/sniper_ext``). Deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from .._atomic import atomic_write
from ..chips.records import ImageTable
from ..errors import DataError, DataIssues
from .coco import MAX_IMAGE_SIDE, categories_of, load_coco, read_annotations_json
from .images import MISSING, WRONG_SIZE, image_header, image_path

__all__ = [
    "INDEX_FORMAT",
    "cache_root",
    "check_image_files",
    "file_digest",
    "image_record_path",
    "open_index",
]

INDEX_FORMAT = 2
_COLUMNS = ImageTable.COLUMNS


def cache_root(cache_dir=None) -> str:
    """The cache folder (see the module docstring)."""
    if cache_dir:
        return os.fspath(cache_dir)
    if os.environ.get("SNIPER_CACHE_DIR"):
        return os.environ["SNIPER_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sniper_ext")


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def file_digest(path, cache: str | None = None) -> str:
    """SHA-1 of the file's content, remembered under ``cache`` by (real path, size, mtime, inode)
    so that an unchanged file is hashed once."""
    path = os.fspath(path)
    st = os.stat(path)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    memo = None
    if cache is not None:
        memo = os.path.join(cache, "digests", _sha1(os.path.realpath(path)) + ".json")
        try:
            with open(memo, encoding="utf-8") as mf:
                saved = json.load(mf)
            if {k: saved.get(k) for k in stamp} == stamp:
                return str(saved["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if memo is not None:
        text = json.dumps({**stamp, "digest": digest})
        try:
            os.makedirs(os.path.dirname(memo), exist_ok=True)
            atomic_write(memo, lambda f: f.write(text.encode()), prefix=".digest-", suffix=".tmp")
        except OSError:
            pass  # a read-only cache still works, it just hashes again
    return digest


def _issues_to_json(issues: DataIssues) -> dict:
    return {
        kind: {
            "count": n,
            "file": issues.first[kind].file,
            "where": issues.first[kind].where,
            "what": issues.first[kind].what,
        }
        for kind, n in issues.counts.items()
    }


def _issues_from_json(d: dict, issues: DataIssues) -> None:
    for kind, v in d.items():
        issues.counts[kind] += int(v["count"])
        issues.first.setdefault(kind, DataError(v["file"], v["where"], v["what"], kind))


def _load(folder: str):
    """(table, meta) of an index folder (arrays memory-mapped), or None if it is not a whole one."""
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != INDEX_FORMAT:
            return None
        arrays = {c: np.load(os.path.join(folder, c + ".npy"), mmap_mode="r", allow_pickle=False) for c in _COLUMNS}
        return ImageTable(**arrays), meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(folder: str, table: ImageTable, meta: dict) -> None:
    """Writes the index under a temporary name beside ``folder`` and renames it into place."""
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".index-", dir=parent)
    try:
        for c, a in table.arrays().items():
            np.save(os.path.join(tmp, c + ".npy"), np.ascontiguousarray(a), allow_pickle=False)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, folder)
        except OSError:
            if _load(folder) is None:  # not another process's whole index: ours replaces it
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(tmp, folder)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _has_categories(data) -> bool:
    return isinstance(data, dict) and bool(data.get("categories"))


def open_index(
    path, *, issues: DataIssues, cache_dir=None, use_cache: bool = True, max_image_side: int = MAX_IMAGE_SIDE
):
    """(ImageTable, categories, whether the file lists categories, index folder or None) of a
    COCO annotations file: from its index when there is a whole one, else parsed and checked
    (:func:`~sniper_ext.data.load_coco`) and saved as one. ``issues`` receives what was skipped
    (also when read from the index)."""
    path = os.fspath(path)
    if not use_cache:
        data = read_annotations_json(path)
        table = load_coco(data, issues=issues, name=path, max_image_side=max_image_side)
        return table, categories_of(data, table), _has_categories(data), None
    root = cache_root(cache_dir)
    policy = f"{'skip' if issues.skip else 'error'}:{max_image_side}"
    key = _sha1(f"{INDEX_FORMAT}:{file_digest(path, root)}:{policy}")
    folder = os.path.join(root, "datasets", key)
    got = _load(folder)
    if got is not None:
        table, meta = got
        _issues_from_json(meta.get("issues", {}), issues)
        return table, meta["categories"], bool(meta.get("file_categories")), folder
    mine = DataIssues(skip=issues.skip)
    data = read_annotations_json(path)
    table = load_coco(data, issues=mine, name=path, max_image_side=max_image_side)
    categories = categories_of(data, table)
    has_categories = _has_categories(data)
    del data
    meta = {
        "format": INDEX_FORMAT,
        "source": os.path.abspath(path),
        "categories": categories,
        "file_categories": has_categories,
        "issues": _issues_to_json(mine),
        "images": len(table),
        "boxes": int(table.box_offsets[-1]),
    }
    written: str | None = folder
    try:
        _write(folder, table, meta)
    except OSError:
        written = None  # an unwritable cache: the dataset still opens, from the parse
    _issues_from_json(meta["issues"], issues)
    return table, categories, has_categories, written


def check_image_files(table: ImageTable, image_root, issues: DataIssues, *, record: str | None = None) -> ImageTable:
    """:func:`~sniper_ext.data.check_images` (header, end marker, size) with a memory: ``record``
    (an .npz path) keeps each file's size and mtime when it passed, and only files that changed
    since (or never passed) are read again. Returns the rows that passed (``table`` itself when
    all did); errors as check_images."""
    n = len(table)
    stat_size = np.full(n, -1, np.int64)
    stat_mtime = np.full(n, -1, np.int64)
    names = table.file_names.tolist()
    for i, name in enumerate(names):
        try:
            st = os.stat(image_path(image_root, name))
            stat_size[i], stat_mtime[i] = st.st_size, st.st_mtime_ns
        except OSError:
            pass
    passed_size = passed_mtime = None
    if record is not None:
        try:
            with np.load(record, allow_pickle=False) as z:
                if len(z["size"]) == n and np.array_equal(z["image_ids"], table.image_ids):
                    passed_size, passed_mtime = z["size"], z["mtime_ns"]
        except (OSError, ValueError, KeyError, EOFError):
            pass
    unchanged = np.zeros(n, bool)
    if passed_size is not None:
        unchanged = (stat_size >= 0) & (stat_size == passed_size) & (stat_mtime == passed_mtime)
    ok = unchanged.copy()
    for i in np.flatnonzero(~unchanged).tolist():
        iid, (w, h) = int(table.image_ids[i]), table.sizes[i].tolist()
        where = f"image {iid}"
        try:
            if not names[i]:
                raise DataError("<annotations>", where, "image has no file_name", MISSING)
            file = image_path(image_root, names[i])
            got = image_header(file, iid)
            if tuple(got) != (w, h):
                raise DataError(file, where, f"image is {got[0]}x{got[1]} but the annotations say {w}x{h}", WRONG_SIZE)
        except DataError as e:
            issues.report(e)  # raises unless skipping
            continue
        ok[i] = True
    if record is not None and not unchanged.all():
        arrays = {
            "image_ids": np.asarray(table.image_ids),
            "size": np.where(ok, stat_size, -1),
            "mtime_ns": np.where(ok, stat_mtime, -1),
        }
        try:
            atomic_write(record, lambda f: np.savez(f, **arrays), prefix=".images-", suffix=".npz.tmp")  # type: ignore[arg-type]
        except OSError:
            pass
    return table if ok.all() else table.take(np.flatnonzero(ok))


def image_record_path(folder: str | None, image_root) -> str | None:
    """Where the image check of ``image_root`` is remembered for the index ``folder``."""
    if folder is None:
        return None
    return os.path.join(folder, f"images-{_sha1(os.path.realpath(os.fspath(image_root)))[:16]}.npz")
