"""AutoFocus's FocusPixels (method §11): the labels against a plain loop reference, the head's
shapes and gradients, the loss and its accuracies, the detector's focus loss in both stages, the
presets and config checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_detector import make_batch, tiny_cfg

from sniper_ext.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    preset,
)
from sniper_ext.modeling import FocusHead, SniperRCNN, focus_labels, focus_losses


def ref_focus_labels(boxes, states, canvas, grid, stride=16, rng=(5.0, 64.0), ignore_below=90.0):
    """Plain loops: per chip, per cell, per box."""
    fh, fw = grid
    out = []
    for c in range(len(boxes)):
        lab = [[0] * fw for _ in range(fh)]
        for y in range(fh):
            for x in range(fw):
                if x * stride >= canvas[c][0] or y * stride >= canvas[c][1]:
                    lab[y][x] = -1
                    continue
                pos = ign = False
                for (x1, y1, x2, y2), st in zip(boxes[c], states[c]):
                    if st < 0 or x2 <= x1 or y2 <= y1:
                        continue
                    # the cell [x*s, (x+1)*s) overlaps the box with positive area
                    if not (x1 < (x + 1) * stride and x2 > x * stride and y1 < (y + 1) * stride and y2 > y * stride):
                        continue
                    size = math.sqrt((x2 - x1) * (y2 - y1))
                    if rng[0] < size < rng[1]:
                        pos = True
                    elif size <= rng[0] or size < ignore_below:
                        ign = True
                lab[y][x] = 1 if pos else (-1 if ign else 0)
        out.append(lab)
    return torch.tensor(out, dtype=torch.int8)


def test_labels_hand_case():
    # one 32x32 box at (16, 16): sqrt(area) 32 in (5, 64) -> cells x, y in {1, 2}
    # one 70x70 box (ignored band [64, 90)), one 4x4 box (<= 5: ignored), one 100x100 (negative)
    boxes = torch.tensor([[[16.0, 16, 48, 48], [100, 0, 170, 70], [0, 120, 4, 124], [60, 60, 160, 160]]])
    state = torch.tensor([[1, 0, 1, 1]], dtype=torch.int8)
    lab = focus_labels(boxes, state, torch.tensor([[176.0, 160]]), (12, 12))
    assert lab.shape == (1, 12, 12) and lab.dtype == torch.int8
    assert lab[0, 1:3, 1:3].eq(1).all()
    assert lab[0, 0, 6:11].eq(-1).all() and lab[0, 7, 0] == -1  # the 70 px box and the 4 px one
    assert lab[0, 9, 9] == 0  # inside the 100 px box: a plain negative
    assert lab[0, :, 11].eq(-1).all() and lab[0, 10:, :].eq(-1).all()  # outside the 176x160 canvas
    assert torch.equal(lab, ref_focus_labels(boxes.tolist(), state.tolist(), [[176, 160]], (12, 12)))


@pytest.mark.parametrize("seed", range(4))
def test_labels_match_the_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    b, n, grid = 5, 9, (13, 11)
    xy = torch.rand(b, n, 2, generator=g) * 190
    wh = torch.rand(b, n, 2, generator=g) ** 2 * 120
    boxes = torch.cat([xy, xy + wh], dim=2)
    boxes[0, 0] = torch.tensor([32.0, 32, 32, 50])  # degenerate: zero width
    state = torch.randint(-1, 2, (b, n), generator=g, dtype=torch.int8)
    canvas = torch.tensor([[192.0, 192], [100, 192], [192, 37], [16, 16], [170, 130]])
    got = focus_labels(boxes, state, canvas, grid)
    want = ref_focus_labels(boxes.tolist(), state.tolist(), canvas.tolist(), grid)
    assert torch.equal(got, want)
    # positive wins where a positive and an ignored box overlap
    assert got.eq(1).any() and got.eq(-1).any()


def test_labels_empty_and_non_contiguous():
    lab = focus_labels(torch.zeros(0, 1, 4), torch.zeros(0, 1, dtype=torch.int8), torch.zeros(0, 2), (4, 4))
    assert lab.shape == (0, 4, 4)
    boxes = torch.tensor([[[0.0, 0, 20, 20]] * 3]).transpose(0, 1)  # [3, 1, 4], not contiguous
    state = torch.ones(1, 3, dtype=torch.int8).t()
    got = focus_labels(boxes, state, torch.full((3, 2), 64.0), (4, 4))
    assert torch.equal(got, ref_focus_labels(boxes.tolist(), state.tolist(), [[64, 64]] * 3, (4, 4)))


def test_head_shapes_gradients_and_loss():
    torch.manual_seed(0)
    head = FocusHead(24, 16)
    x = torch.randn(2, 24, 6, 7, requires_grad=True)
    logits = head(x)
    assert logits.shape == (2, 2, 6, 7)
    p = FocusHead.probability(logits)
    assert p.shape == (2, 6, 7) and bool(((p >= 0) & (p <= 1)).all())
    labels = torch.randint(-1, 2, (2, 6, 7), dtype=torch.int8)
    out = focus_losses(logits, labels)
    keep = labels.flatten() >= 0
    want = torch.nn.functional.cross_entropy(
        logits.permute(0, 2, 3, 1).reshape(-1, 2)[keep], labels.flatten()[keep].long()
    )
    assert torch.allclose(out["focus_cls"], want)
    out["focus_cls"].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(q.grad is not None for q in head.parameters())
    # all ignored: a zero loss that still backpropagates; the accuracies are NaN (no such cell)
    out = focus_losses(head(x), torch.full((2, 6, 7), -1, dtype=torch.int8))
    assert float(out["focus_cls"].detach()) == 0.0 and math.isnan(float(out["acc_focus_pos"]))


def test_accuracies_count_the_kinds():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, :2] = 5.0  # cells 0, 1 predicted positive
    labels = torch.tensor([[[1, 0, 1, 0]]], dtype=torch.int8)
    out = focus_losses(logits, labels)
    assert float(out["acc_focus_pos"]) == 0.5 and float(out["acc_focus_neg"]) == 0.5


def test_detector_trains_the_focus_head_in_both_stages():
    torch.manual_seed(0)
    model = SniperRCNN(tiny_cfg(focus_head=True, focus_channels=8))
    batch = make_batch([[([8.0, 8, 30, 30], 1, 1)], [([40.0, 40, 60, 62], 2, 0)]], K=64)
    for rpn_only in (True, False):
        model.zero_grad()
        losses = model(batch, rpn_only=rpn_only)
        assert "focus_cls" in losses and "acc_focus_pos" in losses and "acc_focus_neg" in losses
        parts = sum(float(v.detach()) for k, v in losses.items() if k.startswith(("rpn_", "rcnn_", "focus_")))
        assert math.isclose(float(losses["loss"].detach()), parts, rel_tol=1e-5)
        losses["loss"].backward()
        assert model.focus is not None and model.focus.logits.weight.grad is not None
    # without the head: no focus loss, and detect(focus=True) is a clear error
    plain = SniperRCNN(tiny_cfg())
    assert plain.focus is None and "focus_cls" not in plain(batch)
    with pytest.raises(ValueError, match="focus_head"):
        plain.detect(batch["images"], torch.tensor([[64.0, 64], [64, 64]]), focus=True)
    model.eval()
    out = model.detect(batch["images"], torch.tensor([[64.0, 64], [48, 64]]), focus=True)
    assert out[0]["focus"].shape == (4, 4) and "boxes" in out[0]


def test_presets_and_config_checks():
    cfg = preset("tiny_autofocus")
    assert cfg.model.focus_head and not preset("tiny").model.focus_head
    assert preset("r101_autofocus").model.focus_head and preset("r101_autofocus").model.focus_channels == 256
    assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    # a config saved before AutoFocus (no focus keys) loads with the head off
    d = config_to_dict(preset("tiny"))
    for k in [k for k in d["model"] if k.startswith("focus")]:
        del d["model"][k]
    assert config_from_dict(d).model.focus_head is False
    for bad, msg in (
        ("model.focus_range=[64, 5]", "model.focus_range"),
        ("model.focus_ignore_below=10", "model.focus_ignore_below"),
        ("inference.autofocus_thresholds=[2, 0.1]", r"inference.autofocus_thresholds\[0\]"),
        ("inference.autofocus_min_chip=[0, 3]", r"inference.autofocus_min_chip\[0\]"),
        ("model.focus_head=1", "model.focus_head"),
    ):
        with pytest.raises(ConfigError, match=msg):
            apply_overrides(preset("tiny_autofocus"), [bad])
