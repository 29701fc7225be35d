"""A small COCO-format dataset generated on the fly, annotations only (no image files; the
`sniper chips` default), with objects from a few pixels to most of the image, at varied image
sizes, plus synthetic RPN-like proposals. The rendered dataset with images is
:mod:`sniper_ext.data.synthetic`."""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_coco"]


def synthetic_coco(num_images: int = 200, seed: int = 0, num_classes: int = 5):
    """Returns (coco_dict, proposals {image_id: [P, 4] xyxy})."""
    rng = np.random.default_rng(seed)
    images, anns, proposals = [], [], {}
    sides = [(640, 480), (480, 640), (640, 427), (500, 375), (1024, 768), (320, 240), (800, 600)]
    ann_id = 1
    for i in range(num_images):
        w, h = sides[rng.integers(len(sides))]
        img_id = i + 1
        images.append({"id": img_id, "width": int(w), "height": int(h), "file_name": f"synthetic_{img_id:06d}.jpg"})
        n = int(rng.integers(1, 16))
        # Sizes log-uniform from 4 px to 90% of the short side, aspect ratios 1:3..3:1.
        size = np.exp(rng.uniform(np.log(4), np.log(0.9 * min(w, h)), n))
        aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), n))
        bw = np.minimum(size * np.sqrt(aspect), w - 1)
        bh = np.minimum(size / np.sqrt(aspect), h - 1)
        x = rng.uniform(0, w - bw)
        y = rng.uniform(0, h - bh)
        for k in range(n):
            anns.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": int(rng.integers(1, num_classes + 1)),
                    "bbox": [float(x[k]), float(y[k]), float(bw[k]), float(bh[k])],
                    "area": float(bw[k] * bh[k]),
                    "iscrowd": 0,
                }
            )
            ann_id += 1
        # Proposals: jittered objects plus clutter regions where a weak RPN "fires".
        centres = rng.uniform([0, 0], [w, h], (int(rng.integers(1, 4)), 2))
        p = []
        for k in range(n):
            j = rng.normal(0, 0.1, (6, 4)) * [bw[k], bh[k], bw[k], bh[k]]
            p.append(np.array([x[k], y[k], x[k] + bw[k], y[k] + bh[k]]) + j)
        for cx, cy in centres:
            m = int(rng.integers(20, 80))
            s = np.exp(rng.uniform(np.log(6), np.log(60), (m, 2)))
            c = np.stack([cx, cy]) + rng.normal(0, 25, (m, 2))
            p.append(np.concatenate([c - s / 2, c + s / 2], axis=1))
        props = np.concatenate(p)
        props[:, 0::2] = np.clip(props[:, 0::2], 0, w)
        props[:, 1::2] = np.clip(props[:, 1::2], 0, h)
        # Clipping flattens proposals that fell off the image: drop them (they are never valid at
        # any scale, so the chip plan is the same), so the set passes load_proposals' checks.
        proposals[img_id] = props[(props[:, 2] > props[:, 0]) & (props[:, 3] > props[:, 1])]
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, proposals
