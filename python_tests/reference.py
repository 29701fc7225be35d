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
            for j in order[pos + 1 :]:
                if j not in removed and iou(boxes[i], boxes[j]) > iou_threshold:
                    removed.add(j)
    return [i for i, _ in _output_order(kept)]


def soft_nms(boxes, scores, groups=None, method="gaussian", sigma=0.5, iou_threshold=0.3, score_threshold=1e-3):
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


def fixed_rows(boxes, scores, groups, num_groups, capacity, run):
    """The fixed-capacity ops' rows: for each g in [0, num_groups), `run` (nms or soft_nms above) on
    the boxes of group g alone -> its first `capacity` (index, score) results, padded with (-1, 0.0);
    boxes whose group lies outside [0, num_groups) take no part. Returns (indices, scores, counts):
    num_groups lists of `capacity` entries, and the counts."""
    keep, kept, counts = [], [], []
    for g in range(num_groups):
        members = [i for i in range(len(boxes)) if (0 if groups is None else groups[i]) == g]
        idx, sc = run([boxes[i] for i in members], [scores[i] for i in members])
        idx, sc = [members[k] for k in idx][:capacity], list(sc)[:capacity]
        counts.append(len(idx))
        keep.append(idx + [-1] * (capacity - len(idx)))
        kept.append(sc + [0.0] * (capacity - len(sc)))
    return keep, kept, counts


def nms_fixed(boxes, scores, iou_threshold, capacity, groups=None, num_groups=1):
    """nms_fixed (groups None) and batched_nms_fixed: (rows of kept indices, counts)."""

    def run(b, s):
        idx = nms(b, s, iou_threshold)
        return idx, [0.0] * len(idx)

    keep, _, counts = fixed_rows(boxes, scores, groups, num_groups, capacity, run)
    return keep, counts


def soft_nms_fixed(boxes, scores, groups, num_groups, capacity, **kwargs):
    """soft_nms_fixed: (rows of kept indices, rows of decayed scores, counts)."""
    return fixed_rows(boxes, scores, groups, num_groups, capacity, lambda b, s: soft_nms(b, s, None, **kwargs))


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


_U64 = (1 << 64) - 1


def splitmix64(x):
    """The SplitMix64 finaliser (Steele, Lea and Flood, 2014) on unsigned 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def chip_order(seed, group, count):
    """The seeded candidate order of one group (method §2): candidates by the key
    splitmix64(splitmix64(seed ^ splitmix64(group)) + candidate), ties to the lower candidate."""
    base = splitmix64((seed ^ splitmix64(group)) & _U64)
    return sorted(range(count), key=lambda c: (splitmix64((base + c) & _U64), c))


def greedy_chip_cover(boxes, W, H, K=512, d=32, order=None):
    """One group. Returns (chips in selection order, chip index per box or -1)."""
    cands = chip_candidates(W, H, K, d)
    order = list(range(len(cands))) if order is None else order
    clipped = [
        (min(max(x1, 0), W), min(max(y1, 0), H), min(max(x2, 0), W), min(max(y2, 0), H)) for x1, y1, x2, y2 in boxes
    ]

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


def label_anchors(anchors, gts, states, W, H, pos_iou=0.5, neg_iou=0.4, invalid_iou=0.3, border=32):
    """One chip, method §5. Returns (labels, matched)."""
    considered = [a[0] >= -border and a[1] >= -border and a[2] <= W + border and a[3] <= H + border for a in anchors]
    valid = [j for j, s in enumerate(states) if s == 1]
    invalid = [j for j, s in enumerate(states) if s == 0]
    table = [[iou(a, g) for g in gts] for a in anchors]
    gt_best = {j: max([table[k][j] for k in range(len(anchors)) if considered[k]], default=0.0) for j in valid}
    labels, matched = [], []
    for k in range(len(anchors)):
        if not considered[k]:
            labels.append(-1)
            matched.append(-1)
            continue
        label, arg = 0, -1
        if valid:
            m = max(table[k][j] for j in valid)
            arg = next(j for j in valid if table[k][j] == m) if m > 0 else -1
            label = 1 if m >= pos_iou else (0 if m < neg_iou else -1)
            if any(gt_best[j] > 0 and table[k][j] == gt_best[j] for j in valid):
                label = 1
        if any(table[k][j] > invalid_iou for j in invalid):
            label = -1
        labels.append(label)
        matched.append(arg if label == 1 else -1)
    return labels, matched


CLIP_MAX = math.log(1000 / 16)  # largest log(dw), log(dh) decoded (detectron2's default clamp)


def decode(anchor, delta, weights=(1, 1, 1, 1), clip_max=CLIP_MAX):
    w, h = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cx, cy = anchor[0] + 0.5 * w, anchor[1] + 0.5 * h
    dx, dy = delta[0] / weights[0], delta[1] / weights[1]
    dw, dh = min(delta[2] / weights[2], clip_max), min(delta[3] / weights[3], clip_max)
    px, py, pw, ph = cx + dx * w, cy + dy * h, w * math.exp(dw), h * math.exp(dh)
    return [px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph]


def filter_proposals(anchors, objectness, deltas, canvas, valid_range, min_size=3, nms_iou=0.7, top_n=300):
    """All chips; returns [(box, score, chip)] by chip, then score descending."""
    out = []
    for c in range(len(objectness)):
        W, H = canvas[c]
        lo, hi = valid_range[c]
        boxes, scores = [], []
        for k, a in enumerate(anchors):
            x1, y1, x2, y2 = decode(a, deltas[c][k])
            b = [min(max(x1, 0), W), min(max(y1, 0), H), min(max(x2, 0), W), min(max(y2, 0), H)]
            w, h = b[2] - b[0], b[3] - b[1]
            if w >= min_size and h >= min_size and lo * lo <= w * h < hi * hi:
                boxes.append(b)
                scores.append(objectness[c][k])
        keep = nms(boxes, scores, nms_iou)[:top_n]
        out += [(boxes[i], scores[i], c) for i in keep]
    return out


def proposal_targets(
    proposals, proposal_chip, gt_boxes, gt_labels, gt_state, valid_range, fg_iou=0.5, weights=(10, 10, 5, 5)
):
    """Returns [(roi, chip, label, target)] by chip: its proposals, then its added GT."""
    out = []
    for c in range(len(gt_boxes)):
        lo, hi = valid_range[c]
        present = [j for j, s in enumerate(gt_state[c]) if s >= 0]
        rois = [p for p, pc in zip(proposals, proposal_chip) if pc == c]
        for j in present:
            g = gt_boxes[c][j]
            if lo * lo <= (g[2] - g[0]) * (g[3] - g[1]) < hi * hi:
                rois.append(g)
        for r in rois:
            best, arg = -1.0, -1
            for j in present:
                o = iou(r, gt_boxes[c][j])
                if o > best:
                    best, arg = o, j
            if arg >= 0 and best > fg_iou:
                g = gt_boxes[c][arg]
                rw, rh = r[2] - r[0], r[3] - r[1]
                gw, gh = g[2] - g[0], g[3] - g[1]
                t = [
                    weights[0] * ((g[0] + gw / 2) - (r[0] + rw / 2)) / rw,
                    weights[1] * ((g[1] + gh / 2) - (r[1] + rh / 2)) / rh,
                    weights[2] * math.log(gw / rw),
                    weights[3] * math.log(gh / rh),
                ]
                out.append((r, c, gt_labels[c][arg], t))
            else:
                out.append((r, c, 0, [0.0, 0.0, 0.0, 0.0]))
    return out


def _bilinear_deform(plane, y, x):
    """Deformable-conv sampling: zero outside the image, nothing at or beyond -1 / H."""
    H = len(plane)
    W = len(plane[0]) if H else 0
    if y <= -1 or y >= H or x <= -1 or x >= W:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    v = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                v += wy * wx * plane[yy][xx]
    return v


def _tent(t):
    return max(0, 1 - abs(t))


def deform_sample_weights(H, W, y, x):
    """{(row, col): weight} of the deformable-conv sample at (y, x), written as the tent kernel of
    bilinear interpolation, sum over pixels of max(0, 1 - |y - row|) * max(0, 1 - |x - col|): the
    continuous interpolant with zeros outside the image (0 at and beyond -1 / H, W)."""
    return {(r, c): _tent(y - r) * _tent(x - c) for r in range(H) for c in range(W) if _tent(y - r) * _tent(x - c) != 0}


def deform_sample_grad(plane, y, x):
    """(value, d/dy, d/dx) of deformable-conv sampling at (y, x). The interpolant is piecewise
    bilinear with kinks at integer coordinates (-1, H and W included); the derivatives are the
    one-sided ones from the right (torchvision's convention), here as exact difference quotients
    (v(y + h) - v(y)) / h in rational arithmetic with h = 2^-1100, smaller than the distance of any
    float to the next integer, so that y + h stays on the same piece."""
    from fractions import Fraction

    H, W = len(plane), len(plane[0])
    P = [[Fraction(v) for v in row] for row in plane]

    def value(yy, xx):
        return sum((wt * P[r][c] for (r, c), wt in deform_sample_weights(H, W, yy, xx).items()), Fraction(0))

    Y, X, h = Fraction(y), Fraction(x), Fraction(1, 2**1100)
    v = value(Y, X)
    return float(v), float((value(Y + h, X) - v) / h), float((value(Y, X + h) - v) / h)


def deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask=None):
    """The nested loops of the definition (lists in, nested lists out; [] for an empty batch). The
    output positions are those of the offsets; a plane without pixels samples 0 everywhere."""
    N = len(x)
    if N == 0:
        return []
    C = len(x[0])
    OC, Cg, kh, kw = len(weight), len(weight[0]), len(weight[0][0]), len(weight[0][0][0])
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    OH, OW = len(offset[0][0]), len(offset[0][0][0])
    groups, og = C // Cg, len(offset[0]) // (2 * kh * kw)
    out = [[[[0.0] * OW for _ in range(OH)] for _ in range(OC)] for _ in range(N)]
    for n in range(N):
        for o in range(OC):
            g = o // (OC // groups)
            for oy in range(OH):
                for ox in range(OW):
                    s = bias[o] if bias is not None else 0.0
                    for ci in range(Cg):
                        c = g * Cg + ci
                        grp = c // (C // og)
                        for ki in range(kh):
                            for kj in range(kw):
                                k = ki * kw + kj
                                y = oy * sh - ph + ki * dh + offset[n][2 * (grp * kh * kw + k)][oy][ox]
                                xx = ox * sw - pw + kj * dw + offset[n][2 * (grp * kh * kw + k) + 1][oy][ox]
                                m = mask[n][grp * kh * kw + k][oy][ox] if mask is not None else 1.0
                                s += weight[o][ci][ki][kj] * m * _bilinear_deform(x[n][c], y, xx)
                    out[n][o][oy][ox] = s
    return out


def _bilinear_roi(plane, y, x):
    """RoIAlign sampling (torchvision): nothing beyond -1 / H, else clamp into the image; nothing
    from a plane without pixels."""
    H = len(plane)
    W = len(plane[0]) if H else 0
    if H == 0 or W == 0:
        return 0.0
    if y < -1 or y > H or x < -1 or x > W:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= H - 1:
        y0 = y1 = H - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= W - 1:
        x0 = x1 = W - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * plane[y0][x0]
        + (1 - ly) * lx * plane[y0][x1]
        + ly * (1 - lx) * plane[y1][x0]
        + ly * lx * plane[y1][x1]
    )


def roi_pool(x, rois, ph, pw, scale, sampling, aligned, offset=None, gamma=0.1):
    """RoIAlign (offset None) / deformable RoI pooling, from the definition."""
    out = []
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        off = 0.5 if aligned else 0.0
        sx, sy = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sx, y2 * scale - off - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / pw, rh / ph
        gh = sampling if sampling > 0 else math.ceil(rh / ph)
        gw = sampling if sampling > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        chans = []
        for plane in x[int(b)]:
            rows = []
            for i in range(ph):
                row = []
                for j in range(pw):
                    dx = gamma * rw * offset[k][0][i][j] if offset is not None else 0.0
                    dy = gamma * rh * offset[k][1][i][j] if offset is not None else 0.0
                    acc = 0.0
                    for iy in range(gh):
                        for ix in range(gw):
                            yy = sy + dy + i * bh + (iy + 0.5) * bh / gh
                            xx = sx + dx + j * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear_roi(plane, yy, xx)
                    row.append(acc / count)
                rows.append(row)
            chans.append(rows)
        out.append(chans)
    return out


def _focus_components(cells):
    """Bounding boxes (x1, y1, x2, y2), half-open, of the 8-connected components of a set of (y, x)
    cells: a breadth-first flood fill from every cell not reached yet."""
    seen, boxes = set(), []
    for start in sorted(cells):
        if start in seen:
            continue
        seen.add(start)
        queue = [start]
        x1 = x2 = start[1]
        y1 = y2 = start[0]
        while queue:
            y, x = queue.pop()
            x1, x2, y1, y2 = min(x1, x), max(x2, x), min(y1, y), max(y2, y)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    n = (y + dy, x + dx)
                    if n in cells and n not in seen:
                        seen.add(n)
                        queue.append(n)
        boxes.append((x1, y1, x2 + 1, y2 + 1))
    return boxes


def _focus_grow_side(lo, hi, size):
    """[lo, hi) grown about its centre to `size` if shorter, then shifted inside [0, extent)."""
    length, extent = hi - lo, size[1]
    want = min(size[0], extent)
    if length >= want:
        return lo, hi
    lo = lo - (want - length) // 2
    hi = lo + want
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > extent:
        lo, hi = lo - (hi - extent), extent
    return lo, hi


def _focus_grow(box, min_size, h, w):
    x1, y1, x2, y2 = box
    x1, x2 = _focus_grow_side(x1, x2, (min_size, w))
    y1, y2 = _focus_grow_side(y1, y2, (min_size, h))
    return (x1, y1, x2, y2)


def focus_chips_from_cells(on, h, w, dilation, min_size):
    """FocusChips of one map from its on cells (a set of (y, x) inside the valid h x w region): dilate,
    components, grow, then paint, label and grow again until the set of boxes stays the same.
    Returns the chips (x1, y1, x2, y2) sorted by (y1, x1, y2, x2)."""
    lo, hi = -((dilation - 1) // 2), dilation // 2
    mask = set()
    for y, x in on:
        for dy in range(max(lo, -y), min(hi, h - 1 - y) + 1):
            for dx in range(max(lo, -x), min(hi, w - 1 - x) + 1):
                mask.add((y + dy, x + dx))
    boxes = {_focus_grow(b, min_size, h, w) for b in _focus_components(mask)}
    while True:
        painted = {(y, x) for x1, y1, x2, y2 in boxes for y in range(y1, y2) for x in range(x1, x2)}
        again = {_focus_grow(b, min_size, h, w) for b in _focus_components(painted)}
        if again == boxes:
            break
        boxes = again
    return sorted(boxes, key=lambda b: (b[1], b[0], b[3], b[2]))


def focus_chips(prob, sizes, threshold, dilation, min_size):
    """AutoFocus's FocusChips over a batch: prob[b][y][x] floats, sizes[b] = (h, w) valid. A cell of the
    valid region is on when prob >= threshold (NaN compares false). Returns rows [b, x1, y1, x2, y2]."""
    rows = []
    for b, (h, w) in enumerate(sizes):
        on = {(y, x) for y in range(h) for x in range(w) if prob[b][y][x] >= threshold}
        rows += [[b, *chip] for chip in focus_chips_from_cells(on, h, w, dilation, min_size)]
    return rows
