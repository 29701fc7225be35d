"""The datasets a run reads, opened and checked in one place for training and inference: a
COCO-format file with its image folder (:func:`open_coco`), the dataset of a training
configuration (that file, or the embedded synthetic one rendered on first use:
:func:`open_dataset`), or a folder of images without annotations (:func:`open_images`).

Each gives a :class:`Dataset`: its records (checked: annotations, then the image files' headers),
the image folder and the categories (contiguous label = position in the sorted ids + 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..chips.records import ImageRecord
from ..errors import DataError, DataIssues, PathError
from .coco import categories_of, load_coco, read_json
from .images import check_images, image_header
from .synthetic import make_synthetic_dataset

__all__ = ["Dataset", "DatasetInfo", "IMAGE_EXTENSIONS", "open_coco", "open_dataset", "open_images"]

#: file name endings (lower case) that :func:`open_images` picks up in a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass
class Dataset:
    """An opened dataset. ``annotations``: its COCO file ("" for a folder of images);
    ``categories``: [{"id", "name"}] sorted by id (empty for a folder of images);
    ``issues``: what was skipped or repaired."""

    annotations: str
    image_root: str
    records: list
    categories: list
    issues: DataIssues = field(default_factory=DataIssues)
    synthetic: bool = False

    @property
    def category_ids(self) -> list:
        return [c["id"] for c in self.categories]

    @property
    def class_names(self) -> list:
        return [c["name"] for c in self.categories]


#: the name of earlier versions
DatasetInfo = Dataset


def open_coco(
    annotations,
    image_root=None,
    *,
    issues: DataIssues | None = None,
    require_categories: bool = False,
    data=None,
) -> Dataset:
    """The dataset of a COCO annotations file: its records (checked by
    :func:`~sniper_ext.data.load_coco`), their image files checked (header and end marker), the
    image folder ``image_root`` (default: the annotations' folder) and the categories (the
    file's, else the labels used). ``require_categories``: a file without "categories" is an
    error (inference needs them to check a checkpoint's class count). ``data``: the file's parsed
    JSON when the caller has it (a big file is parsed once). Raises PathError for a missing file
    or folder, DataError naming the file and the entry for bad content or a dataset without any
    usable image; ``issues=DataIssues(skip=True)`` skips bad entries and images instead."""
    path = os.fspath(annotations)
    if data is None:
        if not os.path.isfile(path):
            raise PathError(path, "no such file" if not os.path.isdir(path) else "is a directory, not a JSON file")
        data = read_json(path)
    issues = issues if issues is not None else DataIssues()
    root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(root):
        raise PathError(root, "image folder not found")
    records = load_coco(data, issues=issues, name=path)
    categories = categories_of(data, records)
    if require_categories and not (isinstance(data, dict) and data.get("categories")):
        raise DataError(path, None, 'no "categories": the class count of the checkpoint cannot be checked')
    records = check_images(records, root, issues)
    if not records:
        raise DataError(path, None, "no usable image (every image was skipped or the file lists none)")
    return Dataset(path, root, records, categories, issues)


def open_dataset(data_cfg, cache_dir: str, *, split: str = "train", progress: bool = False) -> Dataset:
    """The dataset of a :class:`~sniper_ext.config.DataConfig`: ``data_cfg.annotations`` (with
    ``image_root``), or the synthetic dataset rendered (once) under ``cache_dir``.
    ``data_cfg.bad_data == "skip"`` skips bad annotations and images, counted in ``issues``;
    otherwise the first raises DataError."""
    issues = DataIssues(skip=data_cfg.bad_data == "skip")
    if data_cfg.annotations is not None:
        return open_coco(data_cfg.annotations, data_cfg.image_root, issues=issues)
    seed = data_cfg.synthetic_seed + (0 if split == "train" else 1000)
    n = data_cfg.synthetic_images if split == "train" else max(8, data_cfg.synthetic_images // 4)
    path = make_synthetic_dataset(cache_dir, num_images=n, seed=seed, split=split, progress=progress)
    ds = open_coco(path, os.path.join(cache_dir, "images"), issues=issues)
    ds.synthetic = True
    return ds


def open_images(path) -> Dataset:
    """A dataset of an image file or a folder of them (``.jpg``, ``.jpeg``, ``.png``, any case;
    not recursive; hidden files skipped): image ids 1..N in sorted file order, sizes from the
    file headers, no boxes, no categories. DataError for an unreadable image file or a folder
    without images; PathError for a path that does not exist."""
    path = os.fspath(path)
    if os.path.isdir(path):
        root = path
        names = sorted(
            n
            for n in os.listdir(path)
            if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, n))
        )
        if not names:
            raise DataError(path, None, f"no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    elif os.path.exists(path):
        root, names = os.path.dirname(path) or ".", [os.path.basename(path)]
    else:
        raise PathError(path, "no such file or directory")
    records = []
    for k, name in enumerate(names, 1):
        w, h = image_header(os.path.join(root, name), k)
        records.append(
            ImageRecord(
                image_id=k,
                width=w,
                height=h,
                boxes=np.zeros((0, 4)),
                labels=np.zeros(0, np.int64),
                file_name=name,
            )
        )
    return Dataset("", root, records, [])
