"""Multi-scale merge (method §9): valid-range filtering per scale, and per-class Soft-NMS over all
images x classes in one batched call plus top-k per image, against a plain-Python reference."""

import math

import pytest
import torch

import sniper_ext.inference.merge as merge_mod
from sniper_ext.inference import in_valid_range, merge_detections


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(per_image, num_classes, sigma=0.55, score_threshold=1e-3, top_k=200):
    """Plain loops: per image, per class, greedy Gaussian Soft-NMS (highest current score first,
    ties to the lower index; every other box decays by exp(-IoU^2/sigma); below the threshold
    it is dropped), then the image's survivors sorted by score (ties: lower index), top_k."""
    out = []
    for boxes, scores, labels in per_image:
        boxes, scores, labels = boxes.tolist(), scores.tolist(), labels.tolist()
        kept = []  # (score, index)
        for c in range(1, num_classes + 1):
            live = {i: scores[i] for i in range(len(boxes)) if labels[i] == c and scores[i] >= score_threshold}
            while live:
                i = min(live, key=lambda j: (-live[j], j))
                s = live.pop(i)
                kept.append((s, i))
                for j in list(live):
                    live[j] *= math.exp(-(_iou(boxes[i], boxes[j]) ** 2) / sigma)
                    if live[j] < score_threshold:
                        del live[j]
        kept.sort(key=lambda t: (-t[0], t[1]))
        out.append(kept[:top_k] if top_k is not None else kept)
    return out


def _check(result, per_image, ref):
    assert len(result) == len(ref)
    for (b, s, lab), (boxes, _, labels), want in zip(result, per_image, ref):
        idx = [i for _, i in want]
        assert len(b) == len(idx)
        assert torch.equal(b, boxes[idx]) and torch.equal(lab, labels[idx].long())
        assert s.tolist() == pytest.approx([v for v, _ in want], rel=1e-5, abs=1e-7)
        assert lab.dtype == torch.int64


def _random_image(n, num_classes, seed, canvas=200.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 6), 2, generator=g) * canvas
    pick = torch.randint(0, len(centres), (n,), generator=g)
    c = centres[pick] + torch.randn(n, 2, generator=g) * 6
    wh = 10 + torch.rand(n, 2, generator=g) * 40
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    scores = 0.01 + 0.99 * torch.rand(n, generator=g)
    labels = torch.randint(1, num_classes + 1, (n,), generator=g)
    return boxes, scores, labels


def test_hand_case_two_classes():
    boxes = torch.tensor(
        [[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 1, 10, 11]],
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([1, 1, 2, 1, 1])
    ((b, s, lab),) = merge_detections([(boxes, scores, labels)], num_classes=2)
    # class 1: box 0 (0.9) decays box 1 (IoU 9/11) and box 4 (IoU 9/11); box 3 does not overlap
    w = math.exp(-((9 / 11) ** 2) / 0.55)
    # box 1 (0.8 w) then decays box 4 by exp(-IoU(1,4)^2/0.55), IoU = 81/119
    w14 = math.exp(-((81 / 119) ** 2) / 0.55)
    want = sorted([(0.9, 0), (0.7, 2), (0.6, 3), (0.8 * w, 1), (0.5 * w * w14, 4)], key=lambda t: (-t[0], t[1]))
    assert s.tolist() == pytest.approx([v for v, _ in want], rel=1e-6)
    assert torch.equal(b, boxes[[i for _, i in want]])
    assert lab.tolist() == labels[[i for _, i in want]].tolist()  # class 2 untouched by class 1


def test_images_do_not_interact():
    box = torch.tensor([[0.0, 0, 10, 10]])
    one = (box, torch.tensor([0.9]), torch.tensor([1]))
    out = merge_detections([one, one, one], num_classes=1)
    assert [o[1].tolist() for o in out] == [pytest.approx([0.9])] * 3


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("top_k", [None, 200, 7])
def test_random_against_reference(seed, top_k):
    C = 4
    per_image = [_random_image(n, C, seed * 10 + k) for k, n in enumerate([60, 0, 1, 35])]
    ref = _reference(per_image, C, top_k=top_k)
    _check(merge_detections(per_image, num_classes=C, top_k=top_k), per_image, ref)


def test_score_threshold_and_below_threshold_inputs():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 110, 110]])
    scores = torch.tensor([0.9, 0.9, 0.0005])  # identical twin decays by exp(-1/0.55) ~ 0.16
    per = [(boxes, scores, torch.tensor([1, 1, 1]))]
    out = merge_detections(per, num_classes=1, score_threshold=0.2)
    assert out[0][1].tolist() == pytest.approx([0.9])
    out = merge_detections(per, num_classes=1)
    assert out[0][1].tolist() == pytest.approx([0.9, 0.9 * math.exp(-1 / 0.55)])
    _check(out, per, _reference(per, 1))


def test_empty_inputs():
    assert merge_detections([], num_classes=3) == []
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    out = merge_detections([empty, empty], num_classes=3)
    assert len(out) == 2 and all(o[0].shape == (0, 4) and o[1].shape == (0,) and o[2].shape == (0,) for o in out)
    one = _random_image(20, 3, 5)
    out = merge_detections([empty, one, empty], num_classes=3)
    assert len(out[0][0]) == 0 and len(out[2][0]) == 0 and len(out[1][0]) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_int32_labels(dtype):
    boxes, scores, labels = _random_image(30, 3, 7)
    per = [(boxes.to(dtype), scores.to(dtype), labels.int())]
    ((b, s, lab),) = merge_detections(per, num_classes=3)
    assert b.dtype == dtype and s.dtype == dtype and lab.dtype == torch.int64
    _check([(b.float(), s.float(), lab)], [(boxes, scores, labels)], _reference([(boxes, scores, labels)], 3))


def test_one_batched_soft_nms_call(monkeypatch):
    calls = []
    real = merge_mod.soft_nms

    def spy(boxes, scores, idxs, **kw):
        calls.append((idxs.clone(), kw))
        return real(boxes, scores, idxs, **kw)

    monkeypatch.setattr(merge_mod, "soft_nms", spy)
    per = [_random_image(10, 5, s) for s in range(3)]
    merge_detections(per, num_classes=5, sigma=0.4, method="linear", iou_threshold=0.5, score_threshold=0.01)
    assert len(calls) == 1
    idxs, kw = calls[0]
    want = torch.cat([i * 6 + p[2] for i, p in enumerate(per)])
    assert torch.equal(idxs, want)
    assert kw == {"method": "linear", "sigma": 0.4, "iou_threshold": 0.5, "score_threshold": 0.01}


@pytest.mark.parametrize(
    "per,kw,exc,message",
    [
        (
            [(torch.zeros(1, 4), torch.ones(1), torch.tensor([4]))],
            {},
            ValueError,
            r"labels` of image 0 must lie in 1..3",
        ),
        ([(torch.zeros(1, 4), torch.ones(1), torch.tensor([0]))], {}, ValueError, r"1..3, got 0"),
        ([(torch.zeros(1, 4), torch.ones(1), torch.tensor([1.0]))], {}, TypeError, "integer tensor"),
        ([(torch.zeros(1, 4), torch.ones(2), torch.tensor([1]))], {}, ValueError, "must have shape"),
        ([(torch.zeros(1, 3), torch.ones(1), torch.tensor([1]))], {}, ValueError, r"shape \[N, 4\]"),
        ([(torch.zeros(1, 4), torch.ones(1, dtype=torch.float64), torch.tensor([1]))], {}, TypeError, "dtype"),
        ([(torch.zeros(1, 4), torch.ones(1))], {}, ValueError, "tuple"),
        ([(torch.zeros(1, 4), torch.ones(1), torch.tensor([1]))], {"top_k": 0}, ValueError, "top_k"),
        ([(torch.zeros(1, 4), torch.ones(1), torch.tensor([1]))], {"method": "x"}, ValueError, "soft_nms: `method`"),
        ([(torch.zeros(1, 4), torch.ones(1), torch.tensor([1]))], {"sigma": 0}, ValueError, "soft_nms: `sigma`"),
    ],
)
def test_errors(per, kw, exc, message):
    with pytest.raises(exc, match=message):
        merge_detections(per, **{"num_classes": 3, **kw})


def test_num_classes_checked():
    with pytest.raises(ValueError, match="num_classes"):
        merge_detections([], num_classes=0)


# ---------------------------------------------------------------------------------------------
# Valid ranges


def test_in_valid_range_hand_cases():
    # sizes sqrt(w*h): 0, 10, 32, 31.999.., 90, 180, 400 (and a negative side: size 0)
    boxes = torch.tensor(
        [
            [5.0, 5, 5, 9],
            [0, 0, 10, 10],
            [0, 0, 32, 32],
            [0, 0, 31.999, 32],
            [0, 0, 90, 90],
            [0, 0, 180, 180],
            [0, 0, 400, 400],
            [10, 10, 5, 20],
        ]
    )
    assert in_valid_range(boxes, 0, 90).tolist() == [True, True, True, True, False, False, False, True]
    assert in_valid_range(boxes, 32, 180).tolist() == [False, False, True, False, True, False, False, False]
    assert in_valid_range(boxes, 75, math.inf).tolist() == [False, False, False, False, True, True, True, False]
    # size from area, not the longest side: 8 x 200 is size 40
    assert in_valid_range(torch.tensor([[0.0, 0, 8, 200]]), 32, 180).tolist() == [True]
    assert in_valid_range(torch.zeros(0, 4), 0, 90).shape == (0,)
    assert in_valid_range(boxes.double(), 32, 180).tolist() == in_valid_range(boxes, 32, 180).tolist()


@pytest.mark.parametrize(
    "boxes,lo,hi,message",
    [
        (torch.zeros(2, 3), 0, 1, r"shape \[N, 4\]"),
        (torch.zeros(2, 4, dtype=torch.int64), 0, 1, "floating"),
        (torch.zeros(2, 4), -1, 1, "`lo`"),
        (torch.zeros(2, 4), 5, 5, "`hi`"),
        (torch.zeros(2, 4), 0, float("nan"), "`hi`"),
    ],
)
def test_in_valid_range_errors(boxes, lo, hi, message):
    with pytest.raises((ValueError, TypeError), match=message):
        in_valid_range(boxes, lo, hi)
