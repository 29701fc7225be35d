"""The chip database of a dataset: columns of chips and their GT, saved and loaded atomically."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .._atomic import atomic_write
from ..errors import DataError
from .config import ChipConfig
from .sampling import sample_epoch
from .stats import chip_stats

__all__ = ["ChipDB"]


@dataclass
class ChipDB:
    """All chips of a dataset. Chip ``c`` lies on image ``chip_image[c]`` at scale
    ``chip_scale[c]``; ``chip_canvas[c]`` is its box on the scaled canvas (width/height <= K; the
    chip is padded to K×K), ``chip_box(c)`` the same in original pixels. Its GT are rows
    ``gt_offsets[c]:gt_offsets[c+1]`` of ``gt_boxes`` (chip pixels), ``gt_labels``, ``gt_valid``,
    ``gt_index`` (the GT's index in its image). ``chip_kind``: 0 positive, 1 negative (the pool)."""

    config: ChipConfig
    stride: int
    image_ids: np.ndarray
    image_sizes: np.ndarray  # [I, 2] (W, H)
    file_names: np.ndarray
    chip_image: np.ndarray
    chip_scale_index: np.ndarray
    chip_scale: np.ndarray
    chip_canvas: np.ndarray
    chip_kind: np.ndarray
    chip_valid_range: np.ndarray
    gt_offsets: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_valid: np.ndarray
    gt_index: np.ndarray
    uncoverable: int = 0
    extra: dict = field(default_factory=dict)

    FORMAT = 1
    _ARRAYS = (
        "image_ids",
        "image_sizes",
        "file_names",
        "chip_image",
        "chip_scale_index",
        "chip_scale",
        "chip_canvas",
        "chip_kind",
        "chip_valid_range",
        "gt_offsets",
        "gt_boxes",
        "gt_labels",
        "gt_valid",
        "gt_index",
    )

    def __len__(self):
        return len(self.chip_image)

    def chip_box(self, c: int) -> np.ndarray:
        """Chip ``c`` in original-image pixels."""
        return self.chip_canvas[c] / self.chip_scale[c]

    def chip_gt(self, c: int) -> dict:
        s, e = self.gt_offsets[c], self.gt_offsets[c + 1]
        return {
            "boxes": self.gt_boxes[s:e],
            "labels": self.gt_labels[s:e],
            "valid": self.gt_valid[s:e],
            "index": self.gt_index[s:e],
        }

    def epoch(self, epoch: int, seed: int = 0) -> np.ndarray:
        """The chips of one epoch as rows (chip index, flip): every positive chip, plus
        ``negatives_per_image`` negatives per image drawn uniformly from its pool (all of a smaller
        pool); flips per ``config.flip``. Seeded by (seed, epoch); the order is shuffled."""
        return sample_epoch(self.chip_kind, self.chip_image, self.config, epoch, seed)

    def stats(self) -> dict:
        """See :func:`sniper_ext.chips.stats.chip_stats`."""
        return chip_stats(self)

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str) -> str:
        """Writes an .npz through a temporary file and a rename: an existing database is never
        left half-written, and a reader never sees a partial file. The file's mode follows the
        umask, like any file the user creates."""
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        meta = {
            "format": self.FORMAT,
            "config": self.config.to_json(),
            "stride": self.stride,
            "uncoverable": self.uncoverable,
            "extra": self.extra,
        }
        return atomic_write(
            path,
            lambda f: np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays),
            prefix=".chipdb-",
            suffix=".npz.tmp",
        )

    @classmethod
    def load(cls, path: str) -> ChipDB:
        """Reads a database written by :meth:`save`. A file that is not one raises
        :class:`~sniper_ext.errors.DataError`; a missing or unreadable file, OSError."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != cls.FORMAT:
                    raise DataError(path, None, f"chip database format {meta.get('format')} is not {cls.FORMAT}")
                arrays = {k: z[k] for k in cls._ARRAYS}
            config = ChipConfig.from_json(meta["config"])
            return cls(
                config=config,
                stride=meta["stride"],
                uncoverable=meta["uncoverable"],
                extra=meta.get("extra", {}),
                **arrays,
            )
        except DataError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, EOFError) as e:
            # np.load raises ValueError/EOFError/BadZipFile for a file that is not an .npz, KeyError
            # for a missing array or meta field.
            raise DataError(path, None, f"not a chip database written by ChipDB.save ({type(e).__name__}: {e})") from e
