"""The datasets a run reads, opened and checked in one place for training and inference: a
COCO-format file with its image folder (:func:`open_coco`, through the dataset index of
:mod:`.index`), the dataset of a training configuration (that file, or the embedded synthetic
one rendered on first use: :func:`open_dataset`), or a folder of images without annotations
(:func:`open_images`).

Each gives a :class:`Dataset`: its records as an :class:`~sniper_ext.chips.ImageTable` (checked:
annotations, then the image files' headers), the image folder and the categories (contiguous
label = position in the sorted ids + 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..chips.records import ImageTable
from ..errors import DataError, DataIssues, PathError
from .coco import MAX_IMAGE_SIDE, categories_of, load_coco
from .images import image_header
from .index import check_image_files, image_record_path, open_index
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
    records: ImageTable
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
    cache_dir=None,
    use_cache: bool = True,
    check_files: bool = True,
    max_image_side: int = MAX_IMAGE_SIDE,
) -> Dataset:
    """The dataset of a COCO annotations file: its images as an ImageTable (checked by
    :func:`~sniper_ext.data.load_coco`), their image files checked (header, end marker, size;
    ``check_files=False`` skips it), the image folder ``image_root`` (default: the annotations'
    folder) and the categories (the file's, else the labels used).

    The checked annotations are kept in the dataset index (:mod:`sniper_ext.data.index`, under
    ``cache_dir``) and reused by later calls on the same file content, memory-mapped;
    ``use_cache=False`` parses every time. ``data``: the file's parsed JSON when the caller has
    it (then nothing is cached). ``require_categories``: a file without "categories" is an error
    (inference needs them to check a checkpoint's class count).

    Raises PathError for a missing file or folder, DataError naming the file and the entry for
    bad content or a dataset without any usable image; ``issues=DataIssues(skip=True)`` skips
    bad entries and images instead."""
    path = os.fspath(annotations)
    if data is None and not os.path.isfile(path):
        raise PathError(path, "no such file" if not os.path.isdir(path) else "is a directory, not a JSON file")
    issues = issues if issues is not None else DataIssues()
    root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(root):
        raise PathError(root, "image folder not found")
    folder = None
    if data is None:
        records, categories, has_categories, folder = open_index(
            path, issues=issues, cache_dir=cache_dir, use_cache=use_cache, max_image_side=max_image_side
        )
    else:
        records = load_coco(data, issues=issues, name=path, max_image_side=max_image_side)
        categories, has_categories = (
            categories_of(data, records),
            isinstance(data, dict) and bool(data.get("categories")),
        )
    if require_categories and not has_categories:
        raise DataError(path, None, 'no "categories": the class count of the checkpoint cannot be checked')
    if check_files:
        records = check_image_files(records, root, issues, record=image_record_path(folder, root))
    if not len(records):
        raise DataError(path, None, "no usable image (every image was skipped or the file lists none)")
    return Dataset(path, root, records, categories, issues)


def open_dataset(data_cfg, cache_dir: str, *, split: str = "train", progress: bool = False) -> Dataset:
    """The dataset of a :class:`~sniper_ext.config.DataConfig`: ``data_cfg.annotations`` (with
    ``image_root``), or the synthetic dataset rendered (once) under ``cache_dir``.
    ``data_cfg.bad_data == "skip"`` skips bad annotations and images, counted in ``issues``;
    otherwise the first raises DataError. The index cache and the image check follow
    ``data_cfg.index_cache`` and ``data_cfg.check_images``."""
    issues = DataIssues(skip=data_cfg.bad_data == "skip")
    options = dict(
        issues=issues,
        cache_dir=data_cfg.cache_dir,
        use_cache=data_cfg.index_cache,
        check_files=data_cfg.check_images,
        max_image_side=data_cfg.max_image_side,
    )
    if data_cfg.annotations is not None:
        return open_coco(data_cfg.annotations, data_cfg.image_root, **options)
    seed = data_cfg.synthetic_seed + (0 if split == "train" else 1000)
    n = data_cfg.synthetic_images if split == "train" else max(8, data_cfg.synthetic_images // 4)
    path = make_synthetic_dataset(cache_dir, num_images=n, seed=seed, split=split, progress=progress)
    ds = open_coco(path, os.path.join(cache_dir, "images"), **options)
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
    sizes = [image_header(os.path.join(root, name), k) for k, name in enumerate(names, 1)]
    table = ImageTable(
        image_ids=np.arange(1, len(names) + 1),
        sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
        file_names=np.array(names, dtype=str),
        box_offsets=np.zeros(len(names) + 1, np.int64),
        boxes=np.zeros((0, 4)),
        labels=np.zeros(0, np.int64),
        crowd=np.zeros(0, bool),
    )
    return Dataset("", root, table, [])
