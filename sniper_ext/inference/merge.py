"""Merging the detections of all inference scales (method §9).

Per scale, keep the detections scoring above 1e-3 whose size (sqrt(w*h) in original-image pixels)
lies in that scale's inference range (:func:`in_valid_range`); then merge all scales of an image
per class with Gaussian Soft-NMS (weight exp(-IoU^2/sigma), sigma 0.55, drop below 1e-3) and keep
the top 200 per image (:func:`merge_detections`): one call of the batched
:func:`sniper_ext.ops.soft_nms` over all images x classes of a batch.
"""

from __future__ import annotations

import math

import torch

from ..ops import batched_nms, soft_nms

__all__ = ["in_valid_range", "merge_detections", "merge_proposals", "split_by_image"]


def in_valid_range(boxes: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Bool mask [N] of the ``boxes`` ([N, 4] xyxy, original-image pixels) whose size
    sqrt(w*h) lies in ``[lo, hi)``; ``hi`` may be ``math.inf``. A box with a negative side
    has size 0."""
    op = "in_valid_range"
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{op}: `boxes` must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: `boxes` must have shape [N, 4] (xyxy), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{op}: `boxes` must be a floating tensor, got {boxes.dtype}")
    lo, hi = float(lo), float(hi)
    if not (0 <= lo < math.inf):
        raise ValueError(f"{op}: `lo` must be a finite number >= 0, got {lo}")
    if not hi > lo:  # also NaN
        raise ValueError(f"{op}: `hi` must be greater than `lo` ({lo}), got {hi}")
    b = boxes.double()  # sqrt of w*h in double: a box of size exactly `lo` is in, exactly `hi` out
    wh = (b[:, 2:] - b[:, :2]).clamp(min=0)
    size = (wh[:, 0] * wh[:, 1]).sqrt()
    return (size >= lo) & (size < hi)


def _check_image(op, i, dets, num_classes, device, dtype):
    if not (isinstance(dets, (tuple, list)) and len(dets) == 3):
        raise ValueError(f"{op}: `per_image`[{i}] must be a (boxes, scores, labels) tuple")
    boxes, scores, labels = dets
    for name, t in (("boxes", boxes), ("scores", scores), ("labels", labels)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: `{name}` of image {i} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"{op}: `{name}` of image {i} is on {t.device}, image 0 on {device}; they must match")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: `boxes` of image {i} must have shape [N, 4] (xyxy), got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if scores.shape != (n,) or labels.shape != (n,):
        raise ValueError(
            f"{op}: image {i}: `scores` {tuple(scores.shape)} and `labels` {tuple(labels.shape)} must have shape [{n}]"
        )
    if boxes.dtype != dtype or scores.dtype != dtype:
        raise TypeError(
            f"{op}: image {i}: `boxes` ({boxes.dtype}) and `scores` ({scores.dtype}) must have the dtype of image 0 "
            f"({dtype})"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{op}: `labels` of image {i} must be an integer tensor, got {labels.dtype}")
    if n and not torch.compiler.is_compiling():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 1 or hi > num_classes:
            raise ValueError(f"{op}: `labels` of image {i} must lie in 1..{num_classes}, got {lo if lo < 1 else hi}")


def merge_detections(
    per_image,
    *,
    num_classes: int,
    method: str = "gaussian",
    sigma: float = 0.55,
    iou_threshold: float = 0.3,
    score_threshold: float = 1e-3,
    top_k: int | None = 200,
) -> list:
    """Merges the detections of each image (all scales already concatenated) per class with
    Soft-NMS, then keeps the ``top_k`` highest-scoring per image (None: all).

    ``per_image`` is a list with one ``(boxes [N, 4] xyxy, scores [N], labels [N] int 1..C)``
    per image (same dtype and device throughout; N may be 0). All images x classes go through
    ONE call of :func:`sniper_ext.ops.soft_nms` with group ids ``image * (C + 1) + label``.
    ``method``, ``sigma``, ``iou_threshold`` (linear/hard only) and ``score_threshold`` (boxes
    whose decayed score falls below it are dropped) are passed to it.

    Returns one ``(boxes, scores, labels)`` per image: the survivors, scores decayed, sorted
    by score descending (ties: the earlier input row first), at most ``top_k``."""
    op = "merge_detections"
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{op}: `num_classes` must be a positive int, got {num_classes!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{op}: `top_k` must be a positive int or None, got {top_k!r}")
    per_image = list(per_image)
    if not per_image:
        return []
    first = per_image[0]
    if not (isinstance(first, (tuple, list)) and len(first) == 3 and isinstance(first[0], torch.Tensor)):
        raise ValueError(f"{op}: `per_image`[0] must be a (boxes, scores, labels) tuple of tensors")
    device, dtype = first[0].device, first[0].dtype
    for i, dets in enumerate(per_image):
        _check_image(op, i, dets, num_classes, device, dtype)

    counts = [int(d[0].shape[0]) for d in per_image]
    boxes = torch.cat([d[0] for d in per_image])
    scores = torch.cat([d[1] for d in per_image])
    labels = torch.cat([d[2].to(torch.int64) for d in per_image])
    image = torch.repeat_interleave(torch.arange(len(per_image), device=device), torch.tensor(counts, device=device))
    idxs = image * (num_classes + 1) + labels
    keep, new_scores = soft_nms(
        boxes,
        scores,
        idxs,
        method=method,
        sigma=sigma,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
    )
    # keep is sorted by decayed score (ties: lower index); a stable sort by image keeps that
    # order inside each image, and the rank inside the image is the position less its start.
    kept_image = image[keep]
    order = torch.sort(kept_image, stable=True).indices
    keep, new_scores, kept_image = keep[order], new_scores[order], kept_image[order]
    per = torch.bincount(kept_image, minlength=len(per_image))
    if top_k is not None:
        start = torch.cumsum(per, 0) - per
        rank = torch.arange(len(keep), device=device) - start[kept_image]
        sel = rank < top_k
        keep, new_scores = keep[sel], new_scores[sel]
        per = per.clamp(max=top_k)
    sizes = per.tolist()
    return [
        (boxes[k], s, labels[k]) for k, s in zip(torch.split(keep, sizes), torch.split(new_scores, sizes), strict=True)
    ]


def split_by_image(rows: torch.Tensor, image: torch.Tensor, num_images: int) -> list:
    """``rows`` (indices, in their order) split by ``image[rows]``: one index tensor per image
    0..num_images-1, each keeping the order of ``rows``. Linear in the rows (one stable sort and
    a split by counts), not a scan of every row per image."""
    img = image[rows]
    ordered = rows[torch.sort(img, stable=True).indices]
    counts = torch.bincount(img, minlength=num_images).tolist()
    return list(torch.split(ordered, counts))


def merge_proposals(boxes: list, scores: list, *, nms_iou: float = 0.7) -> list:
    """§4 step 2's merge: per image, the proposals of all scales (``boxes[i]`` [P_i, 4],
    ``scores[i]`` [P_i]) through NMS at ``nms_iou``, in one batched call over the images.
    Returns per image the kept boxes as float64 numpy arrays, by descending score."""
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.int64)
    image = torch.repeat_interleave(torch.arange(len(boxes)), counts)
    allb, alls = torch.cat(boxes), torch.cat(scores)
    keep = batched_nms(allb, alls, image, nms_iou)
    return [allb[k].double().numpy() for k in split_by_image(keep, image, len(boxes))]
