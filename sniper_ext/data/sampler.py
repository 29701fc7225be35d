"""A deterministic, resumable, distributed stream of chips, and the DataLoader over it.

The *global stream* is epoch 0's rows of :meth:`ChipDB.epoch` (``(chip, flip)``, shuffled, with
the epoch's negatives), then epoch 1's, and so on. Global batch ``i`` is stream rows
``[i*GB, (i+1)*GB)`` with ``GB = batch_per_rank * world_size`` (a batch may straddle two epochs);
rank ``r`` takes rows ``[r*B, (r+1)*B)`` of it. So the chips a run sees depend only on
``(db, seed, global batch)``: two ranks together see exactly what one rank with the doubled
batch sees, and a run restarted at iteration ``k`` continues exactly where it stopped. Every row
also carries a 63-bit key, a hash of ``(seed, stream position)``, for the model's random choices
(anchor sampling). For a database of whole images each epoch's rows are grouped so that a global
batch holds images of one orientation and scale (:func:`group_by_shape`).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from ..chips.database import ChipDB
from ..errors import DataError
from .chip_dataset import collate_chips

__all__ = ["ChipStream", "group_by_shape", "make_chip_loader", "stream_keys"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_keys(seed: int, positions) -> np.ndarray:
    """int64 keys in [0, 2**63) of global stream positions: a hash of (seed, position)."""
    s = _splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))[0]
    p = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    return (_splitmix64(p ^ s) >> np.uint64(1)).astype(np.int64)


def group_by_shape(rows: np.ndarray, bucket: np.ndarray, batch: int) -> np.ndarray:
    """An epoch's shuffled ``rows`` (chip, flip) reordered into batches of ``batch`` rows of one
    bucket (``bucket[chip]``: for whole images their orientation and scale), so that a batch
    pads little: walking the rows in order, each goes to its bucket and a full bucket is the next
    batch (as detectron2 groups by aspect ratio); the buckets' leftovers (fewer than a batch
    each) end the epoch. A pure function of its inputs, so the stream stays deterministic."""
    key = bucket[rows[:, 0]]
    batches, rest = [], []
    for b in np.unique(key).tolist():
        idx = np.flatnonzero(key == b)
        full = len(idx) // batch * batch
        batches += [(int(idx[k + batch - 1]), idx[k : k + batch]) for k in range(0, full, batch)]
        rest.append(idx[full:])
    batches.sort(key=lambda t: t[0])
    order = np.concatenate([x for _, x in batches] + rest) if len(rows) else np.zeros(0, np.int64)
    return rows[order]


class ChipStream:
    """The global chip stream cut into per-rank batches (see the module docstring). Usable as a
    DataLoader ``batch_sampler``: iterating yields lists of ``(chip, flip, key)`` for global
    iterations ``start_iter, start_iter + 1, ...`` (``num_iters`` of them; None: without end)."""

    def __init__(
        self,
        db: ChipDB,
        batch_per_rank: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        num_iters: int | None = None,
    ):
        if not isinstance(batch_per_rank, int) or batch_per_rank < 1:
            raise ValueError(f"ChipStream: `batch_per_rank` must be a positive integer, got {batch_per_rank!r}")
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"ChipStream: `world_size` must be a positive integer, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"ChipStream: `rank` must be in [0, {world_size}), got {rank!r}")
        if start_iter < 0 or (num_iters is not None and num_iters < 0):
            raise ValueError("ChipStream: `start_iter` and `num_iters` must be >= 0")
        if len(db) == 0:
            raise ValueError(
                "ChipStream: the chip database has no chips (no image has a ground-truth box valid at any "
                "scale, and there are no negative chips): nothing to train on"
            )
        self.db = db
        self.batch_per_rank = batch_per_rank
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.start_iter = int(start_iter)
        self.num_iters = None if num_iters is None else int(num_iters)
        self._epochs: dict = {}
        # Whole images of different sizes: batches of one orientation and scale (group_by_shape).
        self._bucket = None
        if db.extra.get("whole_images"):
            canvas = np.asarray(db.chip_canvas, dtype=np.float64)
            landscape = (canvas[:, 2] - canvas[:, 0]) >= (canvas[:, 3] - canvas[:, 1])
            self._bucket = np.asarray(db.chip_scale_index, dtype=np.int64) * 2 + landscape
        self.epoch_length = len(self._epoch(0))
        if self.epoch_length == 0:
            raise ValueError(
                "ChipStream: an epoch has no chips (the database holds only negative chips and "
                "`negatives_per_image` is 0): nothing to train on"
            )

    @property
    def global_batch(self) -> int:
        return self.batch_per_rank * self.world_size

    @property
    def iters_per_epoch(self) -> float:
        """Global iterations per epoch (fractional: batches may straddle epochs)."""
        return self.epoch_length / self.global_batch

    def epoch_of(self, iteration: float) -> float:
        """The fractional epoch reached at the start of global iteration ``iteration``."""
        return iteration * self.global_batch / self.epoch_length

    def iters_for(self, epochs: float) -> int:
        """Global iterations that cover ``epochs`` epochs (rounded up)."""
        return math.ceil(epochs * self.epoch_length / self.global_batch - 1e-9)

    def _epoch(self, e: int) -> np.ndarray:
        rows = self._epochs.get(e)
        if rows is None:
            rows = np.asarray(self.db.epoch(e, self.seed), dtype=np.int64).reshape(-1, 2)
            if self._bucket is not None:
                rows = group_by_shape(rows, self._bucket, self.global_batch)
            if e and len(rows) != self.epoch_length:  # every epoch has the same count by construction
                raise DataError(
                    "<chip database>", None, f"epoch {e} has {len(rows)} chips, epoch 0 {self.epoch_length}"
                )
            # Keep the few most recent epochs (a batch touches at most two).
            for old in [k for k in self._epochs if k < e - 1]:
                del self._epochs[old]
            self._epochs[e] = rows
        return rows

    def rows(self, start: int, stop: int) -> np.ndarray:
        """int64 [stop - start, 3]: (chip, flip, key) of global stream positions [start, stop)."""
        out = []
        p = start
        while p < stop:
            e, off = divmod(p, self.epoch_length)
            take = min(stop - p, self.epoch_length - off)
            out.append(self._epoch(e)[off : off + take])
            p += take
        rc = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
        return np.concatenate([rc, stream_keys(self.seed, np.arange(start, stop))[:, None]], axis=1)

    def batch(self, iteration: int) -> list:
        """This rank's rows of global iteration ``iteration``: [(chip, flip, key)] python ints."""
        start = iteration * self.global_batch + self.rank * self.batch_per_rank
        r = self.rows(start, start + self.batch_per_rank)
        return [(int(c), bool(f), int(k)) for c, f, k in r]

    def __iter__(self):
        i = self.start_iter
        end = None if self.num_iters is None else self.start_iter + self.num_iters
        while end is None or i < end:
            yield self.batch(i)
            i += 1

    def __len__(self) -> int:
        if self.num_iters is None:
            raise TypeError("ChipStream: an endless stream (num_iters=None) has no length")
        return self.num_iters


# ---------------------------------------------------------------------------------------------
# the loader


class _Failed:
    """A data error caught in a worker, carried to the main process in place of a batch (the
    DataLoader would otherwise re-raise it as a RuntimeError holding the traceback text)."""

    def __init__(self, error: DataError):
        self.error = error


class _Guarded:
    """The dataset, with a DataError returned as a :class:`_Failed` instead of raised."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except DataError as e:
            return _Failed(e)


class _Collate:
    def __init__(self, collate):
        self.collate = collate

    def __call__(self, samples):
        for s in samples:
            if isinstance(s, _Failed):
                return s
        return self.collate(samples)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id, base_seed from the loader's generator.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class ChipLoader(torch.utils.data.DataLoader):
    """A DataLoader that re-raises a worker's DataError as itself (naming the file and image)."""

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, _Failed):
                raise batch.error
            yield batch


def make_chip_loader(dataset, stream: ChipStream, workers: int = 0, pin_memory: bool | None = None) -> ChipLoader:
    """A DataLoader yielding :func:`~sniper_ext.data.collate_chips` batches of ``stream``'s chips
    in order: ``workers`` processes (persistent; 0 loads in the calling process), pinned memory
    when CUDA is available (or as ``pin_memory`` says). Each batch is a pure function of the
    stream's rows, so the output does not depend on the number of workers."""

    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"make_chip_loader: `workers` must be an integer >= 0, got {workers!r}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    g = torch.Generator()
    g.manual_seed(stream.seed)
    return ChipLoader(
        _Guarded(dataset),  # type: ignore[arg-type]  # map-style: __len__ and __getitem__
        batch_sampler=stream,
        num_workers=workers,
        collate_fn=_Collate(collate_chips),
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=g,
        prefetch_factor=2 if workers > 0 else None,
    )
