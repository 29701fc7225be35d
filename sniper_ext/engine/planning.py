"""Chip planning inside a training run, shared by the ranks of ``torchrun`` through the run folder:
each rank plans its own batches of images (batch ``b`` goes to rank ``b % world``) and writes its
part; the first rank merges the parts, in batch order, into the run's chip database; the others
read it. Batches are independent, so the database is the one a single process would plan, byte
for byte. The positive plan is kept (``chips_positive.npz``, keyed by the configuration and the
dataset) and reused by ``--resume`` and stage-by-stage runs."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np

from ..chips import ChipConfig, ChipDB, ImageTable
from ..chips.planner import batch_bounds, merge_plans, plan_batches
from ..errors import DataError
from ..runtime import DistInfo, barrier

__all__ = ["BATCH", "batch_size", "load_plan", "plan_key", "plan_shared", "rank_batches"]

#: images per planning batch (one op call); also the unit of work shared out to ranks.
#: ``SNIPER_PLAN_BATCH`` overrides it (read on every call; meant for tests and tuning).
BATCH = 1000


def batch_size() -> int:
    return int(os.environ.get("SNIPER_PLAN_BATCH", BATCH))


def plan_key(table: ImageTable, config: ChipConfig, seed, extra: str = "") -> str:
    """A hash of what a plan depends on: the images and their GT, the chip configuration, the
    seed (and ``extra``)."""
    h = hashlib.sha1()
    for name, a in table.arrays().items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(config.to_json().encode())
    h.update(f"seed={seed};{extra}".encode())
    return h.hexdigest()


def rank_batches(n: int, dist: DistInfo) -> list:
    """This rank's (start, end) batches of ``n`` images."""
    return batch_bounds(n, batch_size())[dist.rank :: dist.world_size]


def _save_parts(path: str, parts: list, batches: list) -> None:
    arrays: dict = {"batch_starts": np.array([s for s, _ in batches], dtype=np.int64)}
    for k, part in enumerate(parts):
        for key, value in part.items():
            arrays[f"{k}/{key}"] = np.asarray(value)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_parts(path: str) -> list:
    """[(batch start, plan dict)] of a parts file."""
    with np.load(path, allow_pickle=False) as z:
        starts = z["batch_starts"].tolist()
        out = []
        for k, start in enumerate(starts):
            prefix = f"{k}/"
            part = {name[len(prefix) :]: z[name] for name in z.files if name.startswith(prefix)}
            part["uncoverable"] = int(part["uncoverable"])
            out.append((start, part))
    return out


def plan_shared(
    table: ImageTable,
    config: ChipConfig,
    *,
    seed,
    dist: DistInfo,
    out_path: str,
    proposals=None,
    key: str | None = None,
    workers: int = 0,
    progress: bool = False,
) -> ChipDB:
    """The chip database of ``table`` planned by all ranks together and saved at ``out_path``
    (``extra["plan_key"] = key``). ``proposals``: None, or one array (or None) per image of
    ``table`` *for this rank's batches* (other images may hold None). ``workers``: processes
    per rank."""
    d = config.stride
    mine = rank_batches(len(table), dist)
    parts = plan_batches(table, proposals, config, mine, stride=d, seed=seed, workers=workers, progress=progress)
    if not dist.distributed:
        db = merge_plans(table, parts, config, d)
        db.extra["plan_key"] = key
        db.save(out_path)
        return db
    shard_dir = out_path + ".parts"
    os.makedirs(shard_dir, exist_ok=True)
    _save_parts(os.path.join(shard_dir, f"rank{dist.rank}.npz"), parts, mine)
    barrier(dist)
    if dist.is_main:
        got: list = []
        for r in range(dist.world_size):
            got += _load_parts(os.path.join(shard_dir, f"rank{r}.npz"))
        got.sort(key=lambda sp: sp[0])
        db = merge_plans(table, [p for _, p in got], config, d)
        db.extra["plan_key"] = key
        db.save(out_path)
    barrier(dist)
    if dist.is_main:
        shutil.rmtree(shard_dir, ignore_errors=True)
        return db
    return ChipDB.load(out_path)


def load_plan(path: str, key: str) -> ChipDB | None:
    """The chip database at ``path`` if it was planned for ``key``, else None."""
    if not os.path.exists(path):
        return None
    try:
        db = ChipDB.load(path)
    except (OSError, DataError):
        return None
    return db if db.extra.get("plan_key") == key else None
