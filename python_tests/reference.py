"""Plain-Python references, written from the definitions with loops over
Python floats (float64), independent of the kernels' code."""
from __future__ import annotations

import math


def iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    w = min(ax2, bx2) - max(ax1, bx1)
    h = min(ay2, by2) - max(ay1, by1)
    inter = w * h if (w > 0 and h > 0) else 0.0
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def box_iou(boxes1, boxes2):
    return [[iou(a, b) for b in boxes2] for a in boxes1]


def _groups(n, groups):
    out = {}
    for i in range(n):
        out.setdefault(0 if groups is None else groups[i], []).append(i)
    return out


def _output_order(pairs):
    """(index, score) pairs -> sorted by score descending, ties to the lower index."""
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def nms(boxes, scores, iou_threshold, groups=None):
    """Greedy NMS; drop when IoU > threshold. Returns kept indices in output order."""
    kept = []
    for members in _groups(len(boxes), groups).values():
        order = sorted(members, key=lambda i: (-scores[i], i))
        removed = set()
        for pos, i in enumerate(order):
            if i in removed:
                continue
            kept.append((i, scores[i]))
            for j in order[pos + 1:]:
                if j not in removed and iou(boxes[i], boxes[j]) > iou_threshold:
                    removed.add(j)
    return [i for i, _ in _output_order(kept)]


def soft_nms(boxes, scores, groups=None, method="gaussian", sigma=0.5, iou_threshold=0.3,
             score_threshold=1e-3):
    """Classic sequential Soft-NMS. Returns (indices, decayed scores) in output order."""
    kept = []
    for members in _groups(len(boxes), groups).values():
        current = {i: scores[i] for i in members if scores[i] >= score_threshold}
        while current:
            best = min(current, key=lambda i: (-current[i], i))
            kept.append((best, current.pop(best)))
            for j in list(current):
                o = iou(boxes[best], boxes[j])
                if o <= 0:
                    continue  # boxes that do not overlap are never decayed
                if method == "gaussian":
                    w = math.exp(-(o * o) / sigma)
                elif o >= iou_threshold:
                    w = 1.0 - o if method == "linear" else 0.0
                else:
                    w = 1.0
                current[j] *= w
                if not current[j] >= score_threshold:
                    del current[j]
    ordered = _output_order(kept)
    return [i for i, _ in ordered], [s for _, s in ordered]


def chip_starts(length, K, d):
    """Window starts along one axis (method §2)."""
    if length <= K:
        return [0.0]
    starts, x = [], 0.0
    while x + K < length:
        starts.append(x)
        x += d
    starts.append(length - K)
    return starts


def chip_candidates(W, H, K, d):
    """All candidate chips, row-major (y, then x), clipped to the canvas."""
    return [(x, y, min(x + K, W), min(y + K, H)) for y in chip_starts(H, K, d) for x in chip_starts(W, K, d)]


def greedy_chip_cover(boxes, W, H, K=512, d=32, order=None):
    """One group. Returns (chips in selection order, chip index per box or -1)."""
    cands = chip_candidates(W, H, K, d)
    order = list(range(len(cands))) if order is None else order
    clipped = [(min(max(x1, 0), W), min(max(y1, 0), H), min(max(x2, 0), W), min(max(y2, 0), H))
               for x1, y1, x2, y2 in boxes]

    def inside(c, b):
        return c[0] <= b[0] and c[1] <= b[1] and b[2] <= c[2] and b[3] <= c[3]

    uncovered = {i for i, b in enumerate(clipped) if any(inside(c, b) for c in cands)}
    chips, box_chip = [], [-1] * len(boxes)
    while uncovered:
        best, best_n = None, 0
        for ci in order:
            n = sum(1 for i in uncovered if inside(cands[ci], clipped[i]))
            if n > best_n:
                best, best_n = ci, n
        for i in [i for i in uncovered if inside(cands[best], clipped[i])]:
            box_chip[i] = len(chips)
            uncovered.discard(i)
        chips.append(cands[best])
    return chips, box_chip
