"""The planner's input: the images of a dataset, as a table of arrays (:class:`ImageTable`) whose
rows read as :class:`ImageRecord` s.

A table holds no Python object per image: image ids, sizes and file names are arrays, and the
GT boxes, labels and crowd flags of all images are three arrays cut by per-image offsets. So a
dataset of a million images is a handful of arrays that can be memory-mapped from a file
(:mod:`sniper_ext.data.index`) and shared by processes without copy-on-write growth, and a row
is built only when it is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ImageRecord", "ImageTable"]


@dataclass
class ImageRecord:
    """One image: size, GT boxes (xyxy, original pixels), labels, crowd flags, optional proposals."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # [G, 4] float64
    labels: np.ndarray  # [G] int64
    crowd: np.ndarray | None = None  # [G] bool
    proposals: np.ndarray | None = None  # [P, 4] float64 or None
    file_name: str = ""

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.crowd = np.zeros(len(self.boxes), bool) if self.crowd is None else np.asarray(self.crowd, bool)
        if self.proposals is not None:
            self.proposals = np.asarray(self.proposals, dtype=np.float64).reshape(-1, 4)
        if len(self.labels) != len(self.boxes) or len(self.crowd) != len(self.boxes):
            raise ValueError(f"image {self.image_id}: boxes, labels and crowd flags differ in length")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image {self.image_id}: width and height must be positive")


class ImageTable(Sequence):
    """Images as columns. Row ``i``: ``image_ids[i]``, ``sizes[i]`` = (W, H), ``file_names[i]``,
    and its GT rows ``box_offsets[i]:box_offsets[i + 1]`` of ``boxes`` ([G, 4] float64 xyxy,
    original pixels), ``labels`` ([G] int64 category ids) and ``crowd`` ([G] bool).

    ``table[i]`` is an :class:`ImageRecord` (its arrays are views, nothing is copied);
    ``table[a:b]`` and ``table.take(indices)`` are tables; iteration yields records. The arrays
    may be read-only (memory-mapped)."""

    COLUMNS = ("image_ids", "sizes", "file_names", "box_offsets", "boxes", "labels", "crowd")

    def __init__(self, image_ids, sizes, file_names, box_offsets, boxes, labels, crowd):
        self.image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        n = len(self.image_ids)
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(n, 2)
        self.file_names = np.asarray(file_names).reshape(n) if n else np.zeros(0, dtype="<U1")
        if self.file_names.dtype.kind not in "US":
            self.file_names = self.file_names.astype(str)
        self.box_offsets = np.asarray(box_offsets, dtype=np.int64).reshape(n + 1)
        g = int(self.box_offsets[-1])
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(g, 4)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(g)
        self.crowd = np.asarray(crowd, dtype=bool).reshape(g)
        if self.box_offsets[0] != 0 or (n and np.any(np.diff(self.box_offsets) < 0)):
            raise ValueError("ImageTable: `box_offsets` must start at 0 and never decrease")
        if n and np.any(self.sizes <= 0):
            raise ValueError("ImageTable: image widths and heights must be positive")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_records(cls, records) -> ImageTable:
        """The table of a sequence of :class:`ImageRecord` s (a table is returned as it is)."""
        if isinstance(records, ImageTable):
            return records
        records = list(records)
        counts = [len(r.boxes) for r in records]
        return cls(
            image_ids=[r.image_id for r in records],
            sizes=[[r.width, r.height] for r in records],
            file_names=np.array([r.file_name for r in records], dtype=str),
            box_offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
            boxes=np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4)),
            labels=np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64),
            crowd=np.concatenate([r.crowd for r in records]) if records else np.zeros(0, bool),
        )

    @classmethod
    def concat(cls, tables) -> ImageTable:
        tables = [cls.from_records(t) for t in tables]
        offsets, base = [np.zeros(1, np.int64)], 0
        for t in tables:
            offsets.append(t.box_offsets[1:] + base)
            base += int(t.box_offsets[-1])
        return cls(
            image_ids=np.concatenate([t.image_ids for t in tables]) if tables else np.zeros(0, np.int64),
            sizes=np.concatenate([t.sizes for t in tables]) if tables else np.zeros((0, 2), np.int64),
            file_names=np.concatenate([t.file_names for t in tables]) if tables else np.zeros(0, "<U1"),
            box_offsets=np.concatenate(offsets),
            boxes=np.concatenate([t.boxes for t in tables]) if tables else np.zeros((0, 4)),
            labels=np.concatenate([t.labels for t in tables]) if tables else np.zeros(0, np.int64),
            crowd=np.concatenate([t.crowd for t in tables]) if tables else np.zeros(0, bool),
        )

    def take(self, indices) -> ImageTable:
        """The rows ``indices`` (in that order) as a new table."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        starts, ends = self.box_offsets[idx], self.box_offsets[idx + 1]
        counts = ends - starts
        rows = (
            np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(int(counts.sum()))
            if len(idx)
            else np.zeros(0, np.int64)
        )
        return ImageTable(
            self.image_ids[idx],
            self.sizes[idx],
            self.file_names[idx],
            np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
            self.boxes[rows],
            self.labels[rows],
            self.crowd[rows],
        )

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if isinstance(i, (list, np.ndarray)):
            return self.take(i)
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        i %= n
        s, e = int(self.box_offsets[i]), int(self.box_offsets[i + 1])
        return ImageRecord(
            image_id=int(self.image_ids[i]),
            width=int(self.sizes[i, 0]),
            height=int(self.sizes[i, 1]),
            boxes=self.boxes[s:e],
            labels=self.labels[s:e],
            crowd=self.crowd[s:e],
            file_name=str(self.file_names[i]),
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other) -> bool:
        if not isinstance(other, ImageTable):
            return NotImplemented
        return all(np.array_equal(getattr(self, c), getattr(other, c)) for c in self.COLUMNS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ImageTable({len(self)} images, {int(self.box_offsets[-1])} boxes)"

    @property
    def widths(self) -> np.ndarray:
        return self.sizes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.sizes[:, 1]

    def box_counts(self) -> np.ndarray:
        return np.diff(self.box_offsets)

    def arrays(self) -> dict:
        """The columns by name (for saving)."""
        return {c: getattr(self, c) for c in self.COLUMNS}
