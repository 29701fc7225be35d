"""Training step of the tiny preset on CPU: chips/s of forward + backward + SGD step for a batch of
8 chips of 192 px. ``sniper`` is SniperRCNN.forward (anchor labels, sampling, proposals and R-CNN
targets batched over the chips: one call each); the in-run baseline ``loop`` is the same step with
the targets computed per chip in a Python loop (label_anchors / sample_anchors / filter_proposals /
proposal_targets called once per chip, the per-chip loss terms concatenated and normalised the
same way). Both give the same losses (checked). A second group times the target part alone (RPN
loss, proposals, R-CNN targets for fixed head outputs). The summary line's "groups/s" are chips/s."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from bench_utils import QUICK

from sniper_ext.config import preset
from sniper_ext.modeling import SniperRCNN, filter_proposals, proposal_targets, rcnn_losses, sample_anchors
from sniper_ext.modeling.box_coder import _encode
from sniper_ext.ops import label_anchors

B, K = 8, 192
ROUNDS = 3 if QUICK else 10
GROUP = f"train step tiny preset: {B} chips of {K}px, fwd+bwd+SGD, CPU"
TARGETS_GROUP = f"train targets tiny preset: {B} chips of {K}px (RPN loss, proposals, R-CNN targets), CPU"


def synthetic_batch(seed=0):
    """Grey chips with 1-6 coloured boxes each (some invalid), varied canvases and valid ranges."""
    g = torch.Generator().manual_seed(seed)
    G = 6
    images = torch.full((B, 3, K, K), 118, dtype=torch.uint8)
    gt_boxes = torch.zeros(B, G, 4)
    gt_labels = torch.zeros(B, G, dtype=torch.int64)
    gt_state = torch.full((B, G), -1, dtype=torch.int8)
    for c in range(B):
        for j in range(int(torch.randint(1, G + 1, (1,), generator=g))):
            wh = 12 + torch.rand(2, generator=g) * 90
            xy = torch.rand(2, generator=g) * (K - wh)
            box = torch.cat([xy, xy + wh]).round()
            gt_boxes[c, j] = box
            gt_labels[c, j] = int(torch.randint(1, 4, (1,), generator=g))
            gt_state[c, j] = 0 if j == 3 else 1
            x1, y1, x2, y2 = (int(v) for v in box)
            images[c, :, y1:y2, x1:x2] = torch.randint(0, 256, (3, 1, 1), generator=g, dtype=torch.uint8)
    canvas = torch.tensor([[K, K]] * (B - 2) + [[K, 150.0], [120.0, K]], dtype=torch.float32)
    valid = torch.tensor([[0.0, math.inf], [0.0, 48.0], [13.0, 72.0], [30.0, math.inf]] * (B // 4))
    return {
        "images": images,
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels,
        "gt_state": gt_state,
        "canvas_wh": canvas,
        "valid_range": valid,
        "chip": torch.arange(B),
        "flip": torch.zeros(B, dtype=torch.bool),
        "image": torch.arange(B),
        "seed": torch.arange(B, dtype=torch.int64) * 7919 + 13,
    }


def loop_targets(model: SniperRCNN, anchors, obj, deltas, batch: dict):
    """The RPN losses and the R-CNN RoIs and targets, chip by chip."""
    c = model.cfg
    b = obj.shape[0]
    norm = float(b * c.rpn_batch_per_chip)
    cls_terms, box_terms, rois_all, chips_all, labels_all, targets_all = [], [], [], [], [], []
    for i in range(b):
        s = slice(i, i + 1)
        gt = batch["gt_boxes"][s].float()
        labels, matched = label_anchors(
            anchors,
            gt,
            batch["gt_state"][s],
            batch["canvas_wh"][s].float(),
            pos_iou=c.rpn_pos_iou,
            neg_iou=c.rpn_neg_iou,
            invalid_iou=c.rpn_invalid_iou,
            allowed_border=c.rpn_allowed_border,
        )
        labels = sample_anchors(labels, c.rpn_batch_per_chip, c.rpn_positive_fraction, keys=batch["seed"][s])[0]
        sampled = labels >= 0
        cls_terms.append(F.binary_cross_entropy_with_logits(obj[i][sampled], labels[sampled].float(), reduction="none"))
        pos = (labels == 1).nonzero().flatten()
        target = _encode(anchors[pos], gt[0, matched[0, pos]], (1.0, 1.0, 1.0, 1.0))
        box_terms.append(F.smooth_l1_loss(deltas[i, pos], target, beta=1.0 / 9, reduction="none").flatten())
        props, _, _ = filter_proposals(
            anchors,
            obj[s].detach(),
            deltas[s].detach(),
            batch["canvas_wh"][s].float(),
            batch["valid_range"][s].float(),
            min_size=c.proposal_min_size,
            nms_iou=c.proposal_nms_iou,
            post_nms_top_n=c.proposal_post_nms_top_n,
            pre_nms_top_n=c.proposal_pre_nms_top_n,
        )
        rois, _, labels_r, targets = proposal_targets(
            props,
            torch.zeros(len(props), dtype=torch.int64),
            gt,
            batch["gt_labels"][s],
            batch["gt_state"][s],
            batch["valid_range"][s].float(),
            fg_iou=c.rcnn_fg_iou,
            weights=model.box_weights,
        )
        rois_all.append(rois)
        chips_all.append(torch.full((len(rois),), i, dtype=torch.int64))
        labels_all.append(labels_r)
        targets_all.append(targets)
    losses = {"rpn_cls": torch.cat(cls_terms).sum() / norm, "rpn_box": torch.cat(box_terms).sum() / norm}
    return losses, torch.cat(rois_all), torch.cat(chips_all), torch.cat(labels_all), torch.cat(targets_all)


def batched_targets(model: SniperRCNN, anchors, obj, deltas, batch: dict):
    """What SniperRCNN.forward does between the heads (its public target step)."""
    return model.targets(anchors, obj, deltas, batch)


def loop_losses(model: SniperRCNN, batch: dict) -> dict:
    """SniperRCNN.forward with its targets computed chip by chip."""
    feats = model.features(batch["images"])
    obj, deltas = model.rpn(feats)
    anchors = model.anchors(feats.shape[2], feats.shape[3], feats.device)
    losses, rois, roi_chip, labels, targets = loop_targets(model, anchors, obj, deltas, batch)
    logits, box = model.rcnn(feats, torch.cat([roi_chip[:, None].to(rois.dtype), rois], dim=1))
    losses.update(rcnn_losses(logits, box, roi_chip, labels, targets, feats.shape[0]))
    losses["loss"] = losses["rpn_cls"] + losses["rpn_box"] + losses["rcnn_cls"] + losses["rcnn_box"]
    return losses


def make_model():
    torch.manual_seed(0)
    return SniperRCNN(preset("tiny").model).train()


def test_loop_baseline_gives_the_same_losses():
    model, batch = make_model(), synthetic_batch()
    want = model(batch)
    got = loop_losses(model, batch)
    for k in ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box", "loss"):
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("impl", ["sniper", "loop"])
def test_train_step(benchmark, impl):
    benchmark.group = GROUP
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = B
    model, batch = make_model(), synthetic_batch()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    forward = model if impl == "sniper" else (lambda bt: loop_losses(model, bt))

    def step():
        losses = forward(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        return losses

    losses = benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    assert bool(torch.isfinite(losses["loss"]))
    benchmark.extra_info["chips_per_s"] = B / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["sniper", "loop"])
def test_targets(benchmark, impl):
    """The target part of the step alone (the heads' outputs fixed), where the loop's cost shows."""
    benchmark.group = TARGETS_GROUP
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["groups"] = B
    model, batch = make_model(), synthetic_batch()
    with torch.no_grad():
        feats = model.features(batch["images"])
        obj, deltas = model.rpn(feats)
    anchors = model.anchors(feats.shape[2], feats.shape[3], feats.device)
    fn = batched_targets if impl == "sniper" else loop_targets
    want = batched_targets(model, anchors, obj, deltas, batch)
    got = benchmark.pedantic(
        lambda: fn(model, anchors, obj, deltas, batch), rounds=3 * ROUNDS, iterations=1, warmup_rounds=1
    )
    for k in want[0]:
        torch.testing.assert_close(got[0][k], want[0][k], rtol=1e-5, atol=1e-7)
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a, b)
    benchmark.extra_info["chips_per_s"] = B / benchmark.stats.stats.median
