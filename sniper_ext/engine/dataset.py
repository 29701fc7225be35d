"""The dataset of a run: a COCO-format file (checked: annotations, then image files) or the
embedded synthetic one, with its categories (contiguous label = position in the sorted ids + 1)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import DataError, DataIssues

__all__ = ["DatasetInfo", "open_dataset"]


@dataclass
class DatasetInfo:
    annotations: str
    image_root: str
    records: list
    categories: list  # [{"id", "name"}] sorted by id
    issues: DataIssues = field(default_factory=DataIssues)
    synthetic: bool = False

    @property
    def category_ids(self) -> list:
        return [c["id"] for c in self.categories]

    @property
    def class_names(self) -> list:
        return [c["name"] for c in self.categories]


def _categories(data, records) -> list:
    cats = data.get("categories") if isinstance(data, dict) else None
    if cats:
        return sorted(({"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in cats), key=lambda c: c["id"])
    ids = sorted({int(v) for r in records for v in r.labels})
    return [{"id": i, "name": str(i)} for i in ids]


def open_dataset(data_cfg, cache_dir: str, *, split: str = "train", progress: bool = False) -> DatasetInfo:
    """``data_cfg.annotations`` (with ``image_root``, default: the annotation file's folder), or the
    synthetic dataset rendered (once) under ``cache_dir``. ``data_cfg.bad_data == "skip"`` skips
    bad annotations and images, counted in ``issues``; otherwise the first raises DataError."""
    from ..chips import load_coco
    from ..chips.coco import read_json
    from ..data import check_images, make_synthetic_dataset

    issues = DataIssues(skip=data_cfg.bad_data == "skip")
    synthetic = data_cfg.annotations is None
    if synthetic:
        seed = data_cfg.synthetic_seed + (0 if split == "train" else 1000)
        n = data_cfg.synthetic_images if split == "train" else max(8, data_cfg.synthetic_images // 4)
        path = make_synthetic_dataset(cache_dir, num_images=n, seed=seed, split=split, progress=progress)
        root = os.path.join(cache_dir, "images")
    else:
        path = os.fspath(data_cfg.annotations)
        if not os.path.isfile(path):
            raise DataError(path, None, "annotations file not found")
        root = data_cfg.image_root if data_cfg.image_root is not None else os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(root):
            raise DataError(root, None, "image folder not found (set data.image_root / --image-root)")
    data = read_json(path)  # once: loaded as records and read for the categories
    records = load_coco(data, issues=issues, name=path)
    records = check_images(records, root, issues)
    if not records:
        raise DataError(path, None, "no usable image (every image was skipped or the file lists none)")
    return DatasetInfo(path, root, records, _categories(data, records), issues, synthetic)
