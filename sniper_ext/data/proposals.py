"""Proposals in a binary file: what ``sniper train``'s RPN stage writes (one shard per rank) and
what ``sniper chips --proposals`` reads, at about 20 bytes per proposal instead of the ~350-640
of the JSON formats.

The format (``.npz``, uncompressed, every array little-endian):

=============  =============  ==================================================================
key            dtype, shape   meaning
=============  =============  ==================================================================
``format``     int64 []       1
``image_ids``  int64 [N]      the images, in any order, each once
``offsets``    int64 [N + 1]  image ``image_ids[i]`` owns rows ``offsets[i]:offsets[i + 1]``
``boxes``      float32 [P, 4] x1, y1, x2, y2 in the image's original pixels
``scores``     float32 [P]    optional: the proposals' scores
=============  =============  ==================================================================

:class:`ProposalSet` holds a file's arrays (memory-mapped when asked) and answers
``proposals.get(image_id)`` with a float64 copy of that image's rows only, so a planner reading
a COCO-size set never holds more than the file's arrays plus one batch in float64.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .._atomic import atomic_write
from ..errors import DataError, DataIssues
from .coco import check_proposal_rows, load_proposals

__all__ = ["PROPOSALS_FORMAT", "ProposalSet", "read_proposals", "read_proposals_npz", "write_proposals_npz"]

PROPOSALS_FORMAT = 1


class ProposalSet:
    """The proposals of many images as three arrays (see the module docstring); a read-only
    mapping from image id to a ``[P, 4]`` float64 array of that image's boxes."""

    def __init__(self, image_ids, offsets, boxes, scores=None):
        self.image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        self.offsets = np.asarray(offsets, dtype=np.int64).reshape(len(self.image_ids) + 1)
        self.boxes = np.asarray(boxes).reshape(-1, 4)
        self.scores = None if scores is None else np.asarray(scores).reshape(-1)
        self._row = {int(i): k for k, i in enumerate(self.image_ids.tolist())}

    @classmethod
    def from_dict(cls, proposals: dict, scores: dict | None = None) -> ProposalSet:
        """From {image_id: [P, 4]} (and optionally {image_id: [P]} scores)."""
        ids = sorted(int(i) for i in proposals)
        arrays = [np.asarray(proposals[i], dtype=np.float32).reshape(-1, 4) for i in ids]
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
        boxes = np.concatenate(arrays) if arrays else np.zeros((0, 4), np.float32)
        sc = None
        if scores is not None:
            sc = np.concatenate([np.asarray(scores[i], np.float32).reshape(-1) for i in ids]) if ids else None
        return cls(ids, offsets, boxes, sc)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id) -> bool:
        return int(image_id) in self._row

    def __iter__(self):
        return iter(self._row)

    def __getitem__(self, image_id) -> np.ndarray:
        k = self._row[int(image_id)]
        return np.asarray(self.boxes[self.offsets[k] : self.offsets[k + 1]], dtype=np.float64)

    def get(self, image_id, default=None):
        return self[image_id] if int(image_id) in self._row else default

    def items(self):
        return ((i, self[i]) for i in self._row)

    def keys(self):
        return self._row.keys()

    @property
    def num_proposals(self) -> int:
        return int(self.offsets[-1])


def write_proposals_npz(path, proposals, scores: dict | None = None) -> str:
    """Writes a :class:`ProposalSet` (or {image_id: [P, 4]}) atomically in the binary format."""
    ps = proposals if isinstance(proposals, ProposalSet) else ProposalSet.from_dict(proposals, scores)
    arrays = {
        "format": np.array(PROPOSALS_FORMAT, dtype=np.int64),
        "image_ids": ps.image_ids.astype("<i8"),
        "offsets": ps.offsets.astype("<i8"),
        "boxes": np.asarray(ps.boxes, dtype="<f4"),
    }
    if ps.scores is not None:
        arrays["scores"] = np.asarray(ps.scores, dtype="<f4")
    return atomic_write(path, lambda f: np.savez(f, **arrays), prefix=".proposals-", suffix=".npz.tmp")  # type: ignore[arg-type]


def read_proposals_npz(path, images=None, *, issues: DataIssues | None = None) -> ProposalSet:
    """Reads the binary format, checked as :func:`~sniper_ext.data.load_proposals` checks JSON
    proposals (with ``images``, an ImageTable: known image ids, boxes inside their image;
    without, only the boxes themselves), vectorised. Errors name the file and the image and
    proposal; ``issues=DataIssues(skip=True)`` drops the bad rows instead."""
    path = os.fspath(path)
    issues = issues if issues is not None else DataIssues()
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"format", "image_ids", "offsets", "boxes"} - keys
            if missing:
                raise DataError(path, None, f"not a proposals file: no {', '.join(sorted(missing))} array")
            fmt = int(z["format"])
            if fmt != PROPOSALS_FORMAT:
                raise DataError(path, None, f"proposals format {fmt} is not {PROPOSALS_FORMAT}")
            ids, offsets, boxes = z["image_ids"], z["offsets"], z["boxes"]
            scores = z["scores"] if "scores" in keys else None
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, TypeError) as e:
        raise DataError(
            path, None, f"not a proposals file (.npz of the binary format; {type(e).__name__}: {e})"
        ) from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DataError(path, None, f"image_ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if offsets.shape != (len(ids) + 1,) or offsets.dtype.kind not in "iu":
        raise DataError(path, None, f"offsets must be an integer array of shape [{len(ids) + 1}], got {offsets.shape}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind != "f":
        raise DataError(path, None, f"boxes must be a float array [P, 4], got {boxes.dtype} {boxes.shape}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(boxes):
        raise DataError(path, None, f"offsets must rise from 0 to the number of boxes ({len(boxes)})")
    if len(np.unique(ids)) != len(ids):
        raise DataError(path, None, "an image id appears twice in image_ids")
    if scores is not None and scores.shape != (len(boxes),):
        raise DataError(path, None, f"scores must have shape [{len(boxes)}], got {scores.shape}")
    ids = ids.astype(np.int64)
    keep = check_proposal_rows(path, ids, offsets, boxes, images, issues)
    if keep is not None:  # some rows or images dropped (skip mode)
        rows = np.flatnonzero(keep)
        owner = np.repeat(np.arange(len(ids)), np.diff(offsets))
        counts = np.bincount(owner[keep], minlength=len(ids))
        boxes = boxes[rows]
        scores = None if scores is None else scores[rows]
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    return ProposalSet(ids, offsets, boxes, scores)


def read_proposals(path_or_obj, images=None, *, issues: DataIssues | None = None, name: str = "<proposals>"):
    """Proposals of any accepted format, checked: a ``.npz`` file of the binary format (a
    :class:`ProposalSet`), or JSON / a parsed object as :func:`~sniper_ext.data.load_proposals`
    reads them ({image_id: [P, 4]}). Both answer ``.get(image_id)``."""
    if isinstance(path_or_obj, (str, os.PathLike)) and os.fspath(path_or_obj).lower().endswith(".npz"):
        return read_proposals_npz(path_or_obj, images, issues=issues)
    return load_proposals(path_or_obj, images, issues=issues, name=name)
