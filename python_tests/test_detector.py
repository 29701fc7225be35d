"""sniper_ext.modeling's detector pieces against plain-Python references: the RPN head's row order,
keyed anchor sampling, the RPN and R-CNN losses (loops over chips and anchors), the batched R-CNN
targets, the per-chip loss normalisation that DDP equivalence rests on, SniperRCNN end to end
(gradients, rpn_only, detect, RoIAlign, torchvision weights), the R101 preset on CPU, and an
overfit run of the tiny preset."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import reference as ref
import torch

from sniper_ext.config import preset
from sniper_ext.modeling import (
    RPNHead,
    SniperRCNN,
    build_model,
    keyed_uniform,
    load_torchvision_weights,
    make_anchors,
    proposal_targets,
    rcnn_losses,
    rpn_losses,
)
from sniper_ext.nn import DeformRoIPool, RoIAlign

INF = math.inf


def tiny_cfg(**changes):
    return dataclasses.replace(preset("tiny").model, **changes)


def make_batch(gts, K=64, *, images=None, canvas=None, valid_range=None, seeds=None, seed=0):
    """A batch in the CONTRACT.md format. ``gts[c]`` lists (box, label, state) of chip c."""
    b = len(gts)
    g = max(1, max((len(x) for x in gts), default=0))
    gt_boxes = torch.zeros(b, g, 4)
    gt_labels = torch.zeros(b, g, dtype=torch.int64)
    gt_state = torch.full((b, g), -1, dtype=torch.int8)
    for c, chip in enumerate(gts):
        for j, (box, label, state) in enumerate(chip):
            gt_boxes[c, j] = torch.tensor(box, dtype=torch.float32)
            gt_labels[c, j] = label
            gt_state[c, j] = state
    if images is None:
        images = torch.randint(0, 256, (b, 3, K, K), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return {
        "images": images,
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels,
        "gt_state": gt_state,
        "canvas_wh": torch.tensor(canvas if canvas is not None else [[float(K), float(K)]] * b),
        "valid_range": torch.tensor(valid_range if valid_range is not None else [[0.0, INF]] * b),
        "chip": torch.arange(b),
        "flip": torch.zeros(b, dtype=torch.bool),
        "image": torch.arange(b),
        "seed": torch.tensor(seeds if seeds is not None else [1000 + 7919 * c for c in range(b)], dtype=torch.int64),
    }


def sub_batch(batch, idx):
    idx = torch.as_tensor(idx)
    return {k: v[idx] for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# RPN head row order


def test_rpn_head_rows_follow_make_anchors_order():
    """One lit cell and one picked channel light up exactly the anchor row of that cell and
    anchor, and that row's anchor is centred on the cell (H != W to catch a transpose)."""
    torch.manual_seed(0)
    A, H, W, stride = 6, 3, 5, 16
    head = RPNHead(in_channels=2, channels=2, num_anchors=A)
    anchors = make_anchors((H, W), stride, 8, (0.5, 1, 2), (2, 4))
    assert anchors.shape == (H * W * A, 4)
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.bias.zero_()
        head.conv.weight[0, 0, 1, 1] = 1  # channel 0 passes through
        for a in range(A):
            for y in range(H):
                for x in range(W):
                    inp = torch.zeros(1, 2, H, W)
                    inp[0, 0, y, x] = 1
                    head.objectness.weight.zero_()
                    head.objectness.bias.zero_()
                    head.objectness.weight[a, 0] = 1
                    obj, deltas = head(inp)
                    assert obj.shape == (1, H * W * A) and deltas.shape == (1, H * W * A, 4)
                    lit = obj[0].nonzero().flatten().tolist()
                    k = (y * W + x) * A + a
                    assert lit == [k]
                    cx = (anchors[k, 0] + anchors[k, 2]) / 2
                    cy = (anchors[k, 1] + anchors[k, 3]) / 2
                    assert (float(cx), float(cy)) == ((x + 0.5) * stride, (y + 0.5) * stride)
        # deltas: output channel a*4 + j is coordinate j of anchor a
        inp = torch.zeros(1, 2, H, W)
        inp[0, 0] = torch.arange(H * W, dtype=torch.float32).view(H, W) + 1
        head.deltas.weight.zero_()
        head.deltas.bias.copy_(torch.arange(4 * A, dtype=torch.float32) * 1000)
        head.deltas.weight[:, 0] = 1
        _, deltas = head(inp)
    for k in range(H * W * A):
        cell, a = divmod(k, A)
        want = [(cell + 1) + 1000 * (a * 4 + j) for j in range(4)]
        assert deltas[0, k].tolist() == want


# ---------------------------------------------------------------------------------------------
# keyed_uniform


def splitmix_ref(key: int, col: int) -> float:
    m = (1 << 64) - 1
    x = ((key << 32) + col + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    x ^= x >> 31
    return (x >> 40) / float(1 << 24)


def test_keyed_uniform_matches_splitmix64_reference():
    keys = [0, 1, 2, 12345, -1, -(2**40) + 3, 2**62 + 11, -(2**63), 2**63 - 1]
    u = keyed_uniform(torch.tensor(keys, dtype=torch.int64), 37)
    assert u.shape == (len(keys), 37) and u.dtype == torch.float32
    for i, key in enumerate(keys):
        for c in range(37):
            assert float(u[i, c]) == splitmix_ref(key, c), (key, c)


def test_keyed_uniform_properties():
    keys = torch.arange(-50, 150, dtype=torch.int64) * 1_000_003
    u = keyed_uniform(keys, 500)
    assert bool(((u >= 0) & (u < 1)).all())
    assert torch.equal(u, keyed_uniform(keys, 500))  # deterministic
    # batch-split and width invariance: a chip's numbers depend on its key and the column alone
    assert torch.equal(torch.cat([keyed_uniform(keys[:7], 500), keyed_uniform(keys[7:], 500)]), u)
    assert torch.equal(keyed_uniform(keys.flip(0), 500), u.flip(0))
    assert torch.equal(keyed_uniform(keys, 123), u[:, :123])
    # different keys and different columns differ
    assert len(set(map(tuple, u.tolist()))) == len(keys)
    assert all(len(set(row)) > 490 for row in u.tolist())
    assert not torch.equal(keyed_uniform(torch.tensor([5]), 10), keyed_uniform(torch.tensor([6]), 10))
    # roughly uniform: mean 1/2, variance 1/12, deciles ~10% (100,000 numbers)
    n = u.numel()
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 2e-3
    hist = torch.histc(u, bins=10, min=0, max=1) / n
    assert float((hist - 0.1).abs().max()) < 0.006
    # no visible correlation between neighbouring columns or consecutive keys
    assert abs(float(torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1])) < 0.02
    assert keyed_uniform(torch.zeros(0, dtype=torch.int64), 4).shape == (0, 4)
    assert keyed_uniform(keys, 0).shape == (len(keys), 0)
    with pytest.raises(TypeError, match="keyed_uniform: `keys` must be an int64"):
        keyed_uniform(torch.tensor([1, 2], dtype=torch.int32), 3)


# ---------------------------------------------------------------------------------------------
# RPN loss against a loop reference


def sample_ref(labels, key, num, fraction):
    """Per chip: the positives with the smallest keyed numbers, then negatives to fill ``num``."""
    r = [float(v) for v in keyed_uniform(torch.tensor([key]), len(labels))[0]]
    pos = sorted((k for k, lab in enumerate(labels) if lab == 1), key=lambda k: r[k])
    neg = sorted((k for k, lab in enumerate(labels) if lab == 0), key=lambda k: r[k])
    num = min(num, len(labels))
    keep_pos = pos[: int(num * fraction)]
    keep_neg = neg[: num - len(keep_pos)]
    out = [-1] * len(labels)
    for k in keep_pos:
        out[k] = 1
    for k in keep_neg:
        out[k] = 0
    return out


def smooth_l1(x, beta):
    x = abs(x)
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


def encode_ref(r, g):
    rw, rh = r[2] - r[0], r[3] - r[1]
    gw, gh = g[2] - g[0], g[3] - g[1]
    return [
        ((g[0] + gw / 2) - (r[0] + rw / 2)) / rw,
        ((g[1] + gh / 2) - (r[1] + rh / 2)) / rh,
        math.log(gw / rw),
        math.log(gh / rh),
    ]


def rpn_losses_ref(anchors, objectness, deltas, batch, cfg):
    """Plain loops: the reference labelling (python_tests/reference.py), keyed sampling, BCE and
    smooth-L1 (beta 1/9) sums over chips and anchors, divided by B * rpn_batch_per_chip."""
    b = objectness.shape[0]
    anc = anchors.double().tolist()
    cls = box = 0.0
    sampled_all = []
    for c in range(b):
        states = batch["gt_state"][c].tolist()
        gts = batch["gt_boxes"][c].double().tolist()
        W, H = batch["canvas_wh"][c].tolist()
        labels, matched = ref.label_anchors(
            anc,
            gts,
            states,
            W,
            H,
            cfg.rpn_pos_iou,
            cfg.rpn_neg_iou,
            cfg.rpn_invalid_iou,
            cfg.rpn_allowed_border,
        )
        sampled = sample_ref(labels, int(batch["seed"][c]), cfg.rpn_batch_per_chip, cfg.rpn_positive_fraction)
        sampled_all.append(sampled)
        for k, lab in enumerate(sampled):
            if lab < 0:
                continue
            z = float(objectness[c, k])
            p = 1 / (1 + math.exp(-z))
            cls -= math.log(p) if lab == 1 else math.log(1 - p)
            if lab == 1:
                t = encode_ref(anc[k], gts[matched[k]])
                box += sum(smooth_l1(float(deltas[c, k, j]) - t[j], 1 / 9) for j in range(4))
    norm = b * cfg.rpn_batch_per_chip
    return cls / norm, box / norm, sampled_all


def rpn_case(seed=0, K=64):
    """Three chips: two valid GT; a valid and an invalid GT on a smaller canvas; no GT at all."""
    gts = [
        [((6.0, 8.0, 40.0, 30.0), 1, 1), ((30.0, 26.0, 60.0, 62.0), 2, 1)],
        [((4.0, 4.0, 28.0, 36.0), 3, 1), ((34.0, 10.0, 58.0, 30.0), 1, 0)],
        [],
    ]
    batch = make_batch(gts, K, canvas=[[K, K], [52.0, 44.0], [K, 40.0]], seeds=[17, -5, 2**40 + 3], seed=seed)
    cfg = tiny_cfg(rpn_batch_per_chip=48)  # fewer than the labelled anchors: the sample matters
    anchors = make_anchors((K // 16, K // 16), cfg.anchor_stride, cfg.anchor_base, cfg.anchor_ratios, cfg.anchor_scales)
    g = torch.Generator().manual_seed(seed)
    obj = torch.randn(3, anchors.shape[0], generator=g).requires_grad_()
    deltas = (0.3 * torch.randn(3, anchors.shape[0], 4, generator=g)).requires_grad_()
    return anchors, obj, deltas, batch, cfg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rpn_losses_match_loop_reference(seed):
    anchors, obj, deltas, batch, cfg = rpn_case(seed)
    got = rpn_losses(anchors, obj, deltas, batch, cfg)
    got_cls, got_box = float(got["rpn_cls"].detach()), float(got["rpn_box"].detach())
    cls, box, sampled = rpn_losses_ref(anchors, obj.detach(), deltas.detach(), batch, cfg)
    assert set(got) == {"rpn_cls", "rpn_box"}
    assert sum(lab == 1 for lab in sampled[0]) > 0 and sum(lab == 0 for lab in sampled[0]) > 0
    assert abs(got_cls - cls) < 1e-5 * max(1, cls)
    assert abs(got_box - box) < 1e-5 * max(1, box)
    (got["rpn_cls"] + got["rpn_box"]).backward()
    # the objectness gradient is nonzero exactly on the sampled anchors, deltas only on positives
    mask = torch.tensor(sampled) >= 0
    assert torch.equal(obj.grad != 0, mask)
    assert torch.equal((deltas.grad != 0).any(dim=2), torch.tensor(sampled) == 1)
    assert int(mask.sum(dim=1).max()) <= cfg.rpn_batch_per_chip


def test_rpn_invalid_gt_anchors_ignored():
    anchors, obj, deltas, batch, cfg = rpn_case()
    invalid = batch["gt_boxes"][1, 1:2].double().tolist()
    near = torch.tensor([ref.iou(a, invalid[0]) > cfg.rpn_invalid_iou for a in anchors.double().tolist()])
    assert int(near.sum()) > 3
    base = rpn_losses(anchors, obj, deltas, batch, cfg)
    with torch.no_grad():
        obj2, deltas2 = obj.clone(), deltas.clone()
        obj2[1, near] = 50.0  # a confident "object" where only ignored anchors are
        deltas2[1, near] = 3.0
    moved = rpn_losses(anchors, obj2, deltas2, batch, cfg)
    assert torch.equal(moved["rpn_cls"], base["rpn_cls"]) and torch.equal(moved["rpn_box"], base["rpn_box"])
    # the same box as a valid GT is learnt from: the loss now depends on those anchors
    valid = {k: v.clone() for k, v in batch.items()}
    valid["gt_state"][1, 1] = 1
    a = rpn_losses(anchors, obj, deltas, valid, cfg)
    b = rpn_losses(anchors, obj2, deltas2, valid, cfg)
    assert float(b["rpn_cls"]) != float(a["rpn_cls"])


def test_rpn_sample_depends_only_on_chip_key():
    anchors, obj, deltas, batch, cfg = rpn_case()

    def grad_mask(bt, o, d):
        o = o.detach().clone().requires_grad_()
        loss = rpn_losses(anchors, o, d.detach(), bt, cfg)
        loss["rpn_cls"].backward()
        return o.grad != 0, loss

    mask, loss = grad_mask(batch, obj, deltas)
    perm = [2, 0, 1]
    pmask, ploss = grad_mask(sub_batch(batch, perm), obj[perm], deltas[perm])
    assert torch.equal(pmask, mask[perm])
    torch.testing.assert_close(ploss["rpn_cls"], loss["rpn_cls"], rtol=1e-6, atol=0)
    torch.testing.assert_close(ploss["rpn_box"], loss["rpn_box"], rtol=1e-6, atol=0)
    # a chip alone in a batch samples the same anchors
    for c in range(3):
        alone, _ = grad_mask(sub_batch(batch, [c]), obj[c : c + 1], deltas[c : c + 1])
        assert torch.equal(alone[0], mask[c])
    # a new key for chip 0 changes chip 0's sample only
    rekeyed = {k: v.clone() for k, v in batch.items()}
    rekeyed["seed"][0] += 1
    rmask, _ = grad_mask(rekeyed, obj, deltas)
    assert not torch.equal(rmask[0], mask[0]) and torch.equal(rmask[1:], mask[1:])


# ---------------------------------------------------------------------------------------------
# R-CNN loss against a loop reference


def rcnn_losses_ref(logits, deltas, roi_chip, labels, targets, b):
    cls = box = 0.0
    for c in range(b):
        rows = [i for i in range(len(labels)) if int(roi_chip[i]) == c]
        if not rows:
            continue
        ce = bl = 0.0
        for i in rows:
            z = [float(v) for v in logits[i]]
            m = max(z)
            ce += m + math.log(sum(math.exp(v - m) for v in z)) - z[int(labels[i])]
            if labels[i] > 0:
                bl += sum(smooth_l1(float(deltas[i, j]) - float(targets[i, j]), 1.0) for j in range(4))
        cls += ce / len(rows)
        box += bl / len(rows)
    return cls / b, box / b


@pytest.mark.parametrize("seed", [0, 1])
def test_rcnn_losses_match_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    b, c = 4, 3
    roi_chip = torch.tensor([0] * 5 + [1] * 1 + [3] * 9)  # chip 2 has no RoIs
    n = len(roi_chip)
    labels = torch.randint(0, c + 1, (n,), generator=g)
    labels[5] = 2
    logits = (2 * torch.randn(n, c + 1, generator=g)).requires_grad_()
    deltas = (2 * torch.randn(n, 4, generator=g)).requires_grad_()
    targets = torch.randn(n, 4, generator=g) * (labels > 0)[:, None]
    got = rcnn_losses(logits, deltas, roi_chip, labels, targets, b)
    cls, box = rcnn_losses_ref(logits.detach(), deltas.detach(), roi_chip, labels, targets, b)
    assert abs(float(got["rcnn_cls"].detach()) - cls) < 1e-5 * max(1, cls)
    assert abs(float(got["rcnn_box"].detach()) - box) < 1e-5 * max(1, box)
    got["rcnn_box"].backward()
    assert torch.equal((deltas.grad != 0).any(dim=1), labels > 0)  # background RoIs have no box loss


def test_rcnn_losses_empty_rois():
    head = torch.nn.Linear(8, 4 + 4)
    out = head(torch.zeros(0, 8))
    logits, deltas = out[:, :4], out[:, 4:]
    got = rcnn_losses(logits, deltas, torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), deltas, 3)
    for v in got.values():
        assert v.shape == () and float(v) == 0.0 and v.requires_grad
    (got["rcnn_cls"] + got["rcnn_box"]).backward()
    assert head.weight.grad is not None and not head.weight.grad.any()


# ---------------------------------------------------------------------------------------------
# batched proposal_targets against the per-chip loop reference


def random_box(rng, lo=0.0, hi=100.0, min_side=2.0):
    x1, y1 = rng.uniform(lo, hi - 20), rng.uniform(lo, hi - 20)
    return [x1, y1, x1 + rng.uniform(min_side, 40), y1 + rng.uniform(min_side, 40)]


def jitter(rng, box, s=6.0):
    x1, y1, x2, y2 = (v + rng.uniform(-s, s) for v in box)
    return [x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)]


@pytest.mark.parametrize("seed", range(6))
def test_proposal_targets_batched_matches_reference(seed):
    rng = random.Random(seed)
    b = rng.randint(1, 5)
    g = rng.randint(1, 6)
    gt_boxes = torch.zeros(b, g, 4)
    gt_labels = torch.zeros(b, g, dtype=torch.int64)
    gt_state = torch.full((b, g), -1, dtype=torch.int8)
    valid_range = []
    for c in range(b):
        n = 0 if (c == 0 and seed % 2 == 0) or rng.random() < 0.2 else rng.randint(1, g)  # chips without GT
        for j in range(g):
            if j < n:
                gt_boxes[c, j] = torch.tensor(random_box(rng))
                gt_labels[c, j] = rng.randint(1, 5)
                gt_state[c, j] = 1 if rng.random() < 0.75 else 0
            else:  # padding may hold anything
                gt_boxes[c, j] = torch.tensor([rng.uniform(-1e3, 1e3) for _ in range(4)])
                gt_labels[c, j] = rng.choice([0, 7])
        valid_range.append(rng.choice([[0.0, INF], [10.0, 30.0], [0.0, 20.0], [25.0, INF]]))
    props, chips = [], []
    for c in range(b):
        present = [gt_boxes[c, j].tolist() for j in range(g) if gt_state[c, j] >= 0]
        for _ in range(rng.randint(0, 12)):
            props.append(jitter(rng, rng.choice(present)) if present and rng.random() < 0.6 else random_box(rng))
            chips.append(c)
    order = list(range(len(props)))
    rng.shuffle(order)  # proposals need not come sorted by chip
    props = [props[i] for i in order]
    chips = [chips[i] for i in order]
    proposals = torch.tensor(props, dtype=torch.float32).reshape(-1, 4)
    proposal_chip = torch.tensor(chips, dtype=torch.int64)
    vr = torch.tensor(valid_range)
    rois, roi_chip, labels, targets = proposal_targets(
        proposals, proposal_chip, gt_boxes, gt_labels, gt_state, vr, fg_iou=0.5, weights=(10.0, 10.0, 5.0, 5.0)
    )
    want = ref.proposal_targets(
        proposals.double().tolist(),
        chips,
        gt_boxes.double().tolist(),
        gt_labels.tolist(),
        gt_state.tolist(),
        valid_range,
        fg_iou=0.5,
        weights=(10, 10, 5, 5),
    )
    assert len(rois) == len(want) == len(roi_chip) == len(labels) == len(targets)
    assert rois.dtype == torch.float32 and labels.dtype == torch.int64 and not rois.requires_grad
    for i, (r, c, lab, t) in enumerate(want):
        assert rois[i].tolist() == pytest.approx(r, abs=1e-4), i
        assert int(roi_chip[i]) == c and int(labels[i]) == lab, i
        assert targets[i].tolist() == pytest.approx(t, rel=1e-4, abs=1e-4), i


def test_proposal_targets_no_proposals_no_gt():
    gt = torch.zeros(2, 1, 4)
    out = proposal_targets(
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.int64),
        gt,
        torch.zeros(2, 1, dtype=torch.int64),
        torch.full((2, 1), -1, dtype=torch.int8),
        torch.tensor([[0.0, INF]] * 2),
    )
    assert [tuple(t.shape) for t in out] == [(0, 4), (0,), (0,), (0, 4)]


# ---------------------------------------------------------------------------------------------
# SniperRCNN


def detector_batch(K=96, seed=0):
    gts = [
        [((10.0, 12.0, 50.0, 44.0), 1, 1), ((52.0, 40.0, 90.0, 92.0), 2, 1), ((0.0, 70.0, 20.0, 90.0), 3, 0)],
        [((20.0, 20.0, 70.0, 60.0), 3, 1)],
        [],
        [((5.0, 5.0, 40.0, 70.0), 2, 1), ((44.0, 30.0, 80.0, 60.0), 1, 1)],
    ]
    canvas = [[K, K], [80.0, K], [K, 64.0], [K, K]]
    valid_range = [[0.0, INF], [0.0, 60.0], [0.0, INF], [16.0, INF]]
    return make_batch(gts, K, canvas=canvas, valid_range=valid_range, seed=seed)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SniperRCNN(tiny_cfg(freeze_at=2))  # the method's frozen stem + layer1 (the tiny preset trains all)


def test_forward_losses_and_gradients(tiny_model):
    model = tiny_model.train()
    model.zero_grad(set_to_none=True)
    losses = model(detector_batch())
    assert set(losses) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "num_rois", "num_fg", "loss"}
    for k in ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "loss"):
        assert losses[k].shape == () and bool(torch.isfinite(losses[k])), k
    assert float(losses["rpn_cls"]) > 0 and float(losses["rcnn_cls"]) > 0
    assert float(losses["num_rois"]) > 0 and float(losses["num_fg"]) > 0  # the GT boxes are RoIs too
    torch.testing.assert_close(
        losses["loss"], losses["rpn_cls"] + losses["rpn_box"] + losses["rcnn_cls"] + losses["rcnn_box"]
    )
    losses["loss"].backward()
    reached = [
        model.rpn.conv.weight,
        model.rpn.objectness.weight,
        model.rpn.deltas.weight,
        model.rcnn.reduce.weight,
        model.rcnn.fc1.weight,
        model.rcnn.cls.weight,
        model.rcnn.box.weight,
        model.backbone.layer4[0].conv2.weight,
        model.backbone.layer4[1].conv1.weight,
        model.backbone.layer3[0].conv1.weight,
        model.backbone.layer2[0].conv1.weight,
    ]
    for p in reached:
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and bool(p.grad.any())
    frozen = [model.backbone.conv1, model.backbone.bn1, model.backbone.layer1]
    assert all(not p.requires_grad and p.grad is None for m in frozen for p in m.parameters())
    assert isinstance(model.rcnn.pooler, DeformRoIPool)


def test_rpn_only(tiny_model):
    model = tiny_model.train()
    model.zero_grad(set_to_none=True)
    losses = model(detector_batch(), rpn_only=True)
    assert set(losses) == {"rpn_cls", "rpn_box", "loss"}
    torch.testing.assert_close(losses["loss"], losses["rpn_cls"] + losses["rpn_box"])
    losses["loss"].backward()
    assert model.rpn.objectness.weight.grad is not None and model.backbone.layer4[0].conv2.weight.grad is not None
    assert all(p.grad is None for p in model.rcnn.parameters())


def test_forward_missing_key(tiny_model):
    batch = detector_batch()
    del batch["seed"]
    with pytest.raises(KeyError, match="SniperRCNN: the batch lacks seed"):
        tiny_model(batch)


def test_detect(tiny_model):
    model = tiny_model.eval()
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (2, 3, 96, 128), dtype=torch.uint8, generator=g)
    image_wh = torch.tensor([[128.0, 96.0], [70.0, 50.0]])  # the second is padded
    dets = model.detect(images, image_wh, proposals_per_image=40)
    assert len(dets) == 2
    C = model.num_classes
    for d, (w, h) in zip(dets, image_wh.tolist()):
        boxes, scores = d["boxes"], d["scores"]
        assert 0 < len(boxes) <= 40 and boxes.shape[1] == 4 and scores.shape == (len(boxes), C + 1)
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
        assert bool((boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all())
        assert bool((boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())
        assert bool((scores >= 0).all())
        torch.testing.assert_close(scores.sum(dim=1), torch.ones(len(boxes)))
    rpn = model.detect(images, image_wh, proposals_per_image=40, rpn_only=True)
    for d, (w, h) in zip(rpn, image_wh.tolist()):
        assert set(d) == {"proposals", "objectness"} and len(d["proposals"]) == len(d["objectness"]) <= 40
        assert bool((d["proposals"][:, 2] <= w).all() and (d["proposals"][:, 3] <= h).all())
        assert bool((d["objectness"][:-1] >= d["objectness"][1:]).all())  # best first


def test_roi_align_pooler():
    torch.manual_seed(1)
    model = SniperRCNN(tiny_cfg(roi_pooler="roi_align")).train()
    assert isinstance(model.rcnn.pooler, RoIAlign)
    losses = model(detector_batch())
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    losses["loss"].backward()
    assert bool(model.rcnn.fc1.weight.grad.any()) and bool(model.backbone.layer4[0].conv2.weight.grad.any())
    dets = model.eval().detect(detector_batch()["images"][:1], torch.tensor([[96.0, 96.0]]))
    torch.testing.assert_close(dets[0]["scores"].sum(dim=1), torch.ones(len(dets[0]["scores"])))
    with pytest.raises(ValueError, match="RCNNHead: `pooler` must be"):
        SniperRCNN(tiny_cfg(roi_pooler="roi_pool"))


def test_torchvision_weights_load_into_detector_backbone():
    from test_resnet import torchvision_state_dict

    cfg = tiny_cfg()
    model = build_model(cfg)
    sd = torchvision_state_dict(cfg.depth, width=cfg.width, seed=5)
    res = load_torchvision_weights(model.backbone, sd)
    assert res.ignored == ["fc.weight", "fc.bias"]
    # everything but the zero-initialised deformable offsets of res5 comes from the file
    assert res.not_in_file and all(".conv_offset." in k for k in res.not_in_file)
    own = model.state_dict()
    for k in res.loaded:
        assert torch.equal(own["backbone." + k], sd[k]), k
    assert set(own) - {"backbone." + k for k in res.loaded} - {"backbone." + k for k in res.not_in_file} == {
        k for k in own if not k.startswith("backbone.")
    }
    losses = model.train()(detector_batch())
    assert bool(torch.isfinite(losses["loss"]))


# ---------------------------------------------------------------------------------------------
# per-chip normalisation: a batch's loss and gradient are the means over its halves


def test_batch_loss_is_mean_of_half_batch_losses():
    torch.manual_seed(2)
    model = SniperRCNN(tiny_cfg(norm="frozen")).train()
    batch = detector_batch(seed=4)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(bt):
        model.zero_grad(set_to_none=True)
        losses = model(bt)
        losses["loss"].backward()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        return {k: float(v) for k, v in losses.items() if k.startswith(("rpn_", "rcnn_")) or k == "loss"}, grads

    full, g_full = run(batch)
    a, g_a = run(sub_batch(batch, [0, 1]))
    b, g_b = run(sub_batch(batch, [2, 3]))
    for k in full:
        assert full[k] == pytest.approx((a[k] + b[k]) / 2, rel=1e-5, abs=1e-7), k
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for name, gf, ga, gb in zip(names, g_full, g_a, g_b):
        torch.testing.assert_close(gf, (ga + gb) / 2, rtol=1e-4, atol=1e-7, msg=name)


# ---------------------------------------------------------------------------------------------
# the paper's R101 preset on CPU


def test_r101_preset_one_training_step():
    torch.manual_seed(0)
    cfg = preset("sniper_r101_coco").model
    model = build_model(cfg).train()
    assert model.backbone.out_channels["res4"] + model.backbone.out_channels["res5"] == 1024 + 2048
    assert model.num_anchors == 21 and isinstance(model.rcnn.pooler, DeformRoIPool)
    batch = make_batch([[((40.0, 30.0, 200.0, 180.0), 5, 1), ((150.0, 160.0, 250.0, 250.0), 80, 1)]], K=256)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    before = model.rcnn.cls.weight.detach().clone()
    losses = model(batch)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    opt.zero_grad()
    losses["loss"].backward()
    opt.step()
    assert not torch.equal(before, model.rcnn.cls.weight)
    assert bool(model.backbone.layer4[0].conv2.weight.grad.any())


# ---------------------------------------------------------------------------------------------
# overfit: the tiny detector learns a handful of objects


COLOURS = {1: (235, 40, 40), 2: (40, 220, 60), 3: (50, 70, 240)}


def overfit_batch(K=128):
    """Two plain grey chips with bright rectangles, one colour per class."""
    gts = [
        [((16.0, 20.0, 60.0, 56.0), 1, 1), ((70.0, 64.0, 110.0, 120.0), 2, 1)],
        [((30.0, 30.0, 90.0, 70.0), 3, 1), ((10.0, 80.0, 50.0, 118.0), 1, 1)],
    ]
    images = torch.full((len(gts), 3, K, K), 118, dtype=torch.uint8)
    for c, chip in enumerate(gts):
        for (x1, y1, x2, y2), label, _ in chip:
            images[c, :, int(y1) : int(y2), int(x1) : int(x2)] = torch.tensor(COLOURS[label])[:, None, None]
    return make_batch(gts, K, images=images)


def test_overfit_tiny_detector():
    torch.manual_seed(0)  # from scratch, no pretrained backbone: fixed initialisation
    model = SniperRCNN(tiny_cfg()).train()
    batch = overfit_batch()
    lr, steps, warmup = preset("tiny").solver.base_lr, 150, 20
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9, weight_decay=1e-4)
    history = []
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (it + 1) / warmup)
        losses = model(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        history.append(float(losses["loss"]))
    start, end = history[0], sum(history[-5:]) / 5
    assert end < 0.3 * start, (start, end)
    model.eval()
    b = batch["images"].shape[0]
    dets = model.detect(batch["images"], batch["canvas_wh"])
    for c in range(b):
        boxes, scores = dets[c]["boxes"].double().tolist(), dets[c]["scores"]
        for j in range(int((batch["gt_state"][c] >= 0).sum())):
            gt = batch["gt_boxes"][c, j].double().tolist()
            label = int(batch["gt_labels"][c, j])
            found = [i for i, box in enumerate(boxes) if ref.iou(box, gt) > 0.5 and float(scores[i, label]) > 0.5]
            assert found, (c, j, gt, label)
