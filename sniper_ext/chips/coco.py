"""Datasets: COCO-format annotations and proposals files into :class:`ImageRecord` s."""
from __future__ import annotations

import json
import os

import numpy as np

from .records import ImageRecord

__all__ = ["load_coco", "load_proposals"]


def load_coco(annotations) -> list:
    """ImageRecords from a COCO-format annotation file (path) or dict, through pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        if isinstance(annotations, (str, os.PathLike)):
            coco = COCO(os.fspath(annotations))
        else:
            coco = COCO()
            coco.dataset = annotations
            coco.createIndex()
    records = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        anns = coco.imgToAnns.get(img_id, [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=np.float64).reshape(-1, 4)
        records.append(ImageRecord(
            image_id=int(img_id), width=int(info["width"]), height=int(info["height"]), boxes=boxes,
            labels=np.array([a["category_id"] for a in anns], dtype=np.int64),
            crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            file_name=info.get("file_name", "")))
    return records


def load_proposals(path_or_obj) -> dict:
    """Proposals per image id, xyxy original pixels. Accepts a JSON file or object that is either
    COCO detection results (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]``) or a mapping
    ``{image_id: [[x1, y1, x2, y2(, score)], ...]}``."""
    obj = path_or_obj
    if isinstance(obj, (str, os.PathLike)):
        with open(obj) as f:
            obj = json.load(f)
    out = {}
    if isinstance(obj, list):
        for r in obj:
            x, y, w, h = r["bbox"]
            out.setdefault(int(r["image_id"]), []).append([x, y, x + w, y + h])
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out[int(k)] = [row[:4] for row in v]
    else:
        raise ValueError("proposals must be COCO detection results (a list) or {image_id: boxes}")
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in out.items()}
