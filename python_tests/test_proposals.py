import math

import pytest
import reference as ref
import torch
from common_utils import DEVICES, random_boxes

from sniper_ext import modeling


def _rpn_outputs(seed, chips=3, fh=6):
    gen = torch.Generator().manual_seed(seed)
    anchors = modeling.make_anchors((fh, fh), stride=16, scales=(1, 2, 4), dtype=torch.float64)
    a = len(anchors)
    objectness = torch.rand(chips, a, generator=gen, dtype=torch.float64)
    deltas = torch.randn(chips, a, 4, generator=gen, dtype=torch.float64) * 0.3
    canvas = torch.tensor([[96.0, 96.0], [80.0, 96.0], [96.0, 60.0]][:chips], dtype=torch.float64)
    valid_range = torch.tensor([[0.0, 40.0], [10.0, math.inf], [20.0, 70.0]][:chips], dtype=torch.float64)
    return anchors, objectness, deltas, canvas, valid_range


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_n", [300, 5])
def test_filter_proposals_matches_reference(device, top_n):
    anchors, obj, deltas, canvas, vr = _rpn_outputs(0)
    boxes, scores, chip = modeling.filter_proposals(
        *(t.to(device) for t in (anchors, obj, deltas, canvas, vr)), post_nms_top_n=top_n
    )
    want = ref.filter_proposals(
        anchors.tolist(), obj.tolist(), deltas.tolist(), canvas.tolist(), vr.tolist(), top_n=top_n
    )
    assert chip.cpu().tolist() == [c for _, _, c in want]
    torch.testing.assert_close(scores.cpu(), torch.tensor([s for _, s, _ in want], dtype=torch.float64))
    torch.testing.assert_close(boxes.cpu(), torch.tensor([b for b, _, _ in want], dtype=torch.float64).reshape(-1, 4))


def test_filter_proposals_rules():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 22, 22], [0, 0, 100, 100], [50, 50, 60, 60]])
    obj = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    deltas = torch.zeros(1, 4, 4)
    canvas = torch.tensor([[64.0, 64.0]])
    boxes, scores, chip = modeling.filter_proposals(anchors, obj, deltas, canvas, torch.tensor([[5.0, 50.0]]))
    # [20,20,22,22] is under 3 px; [0,0,100,100] is clipped to 64x64 (area 4096 >= 50^2): out of range.
    assert boxes.tolist() == [[0, 0, 10, 10], [50, 50, 60, 60]] and scores.tolist() == pytest.approx([0.9, 0.6])
    # Pre-NMS top-n keeps the best before NMS.
    boxes, _, _ = modeling.filter_proposals(
        anchors, obj, deltas, canvas, torch.tensor([[0.0, math.inf]]), pre_nms_top_n=1
    )
    assert boxes.tolist() == [[0, 0, 10, 10]]
    # Empty batch.
    out = modeling.filter_proposals(anchors, obj[:0], deltas[:0], canvas[:0], torch.zeros(0, 2))
    assert all(len(t) == 0 for t in out)


def _targets_case(seed):
    gen = torch.Generator().manual_seed(seed)
    b, g = 3, 6
    gt = torch.stack([random_boxes(g, generator=gen, canvas=100, max_size=60) for _ in range(b)])
    labels = torch.randint(1, 5, (b, g), generator=gen)
    state = torch.randint(-1, 2, (b, g), generator=gen, dtype=torch.int8)
    state[2] = -1  # a chip with no GT at all
    props, chip = [], []
    for c in range(b):
        jitter = (
            gt[c][torch.randint(0, g, (8,), generator=gen)] + torch.randn(8, 4, generator=gen, dtype=torch.float64) * 4
        )
        jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        props.append(torch.cat([jitter, random_boxes(5, generator=gen, canvas=100)]))
        chip.append(torch.full((13,), c))
    vr = torch.tensor([[0.0, 50.0], [20.0, math.inf], [0.0, math.inf]], dtype=torch.float64)
    return torch.cat(props), torch.cat(chip), gt, labels, state, vr


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proposal_targets_matches_reference(device, seed):
    props, chip, gt, labels, state, vr = _targets_case(seed)
    rois, roi_chip, lab, tgt = modeling.proposal_targets(*(t.to(device) for t in (props, chip, gt, labels, state, vr)))
    want = ref.proposal_targets(
        props.tolist(), chip.tolist(), gt.tolist(), labels.tolist(), state.tolist(), vr.tolist()
    )
    assert roi_chip.cpu().tolist() == [c for _, c, _, _ in want]
    assert lab.cpu().tolist() == [lb for _, _, lb, _ in want]
    torch.testing.assert_close(rois.cpu(), torch.tensor([r for r, _, _, _ in want], dtype=torch.float64))
    torch.testing.assert_close(tgt.cpu(), torch.tensor([t for _, _, _, t in want], dtype=torch.float64))
    assert (lab > 0).any() and (lab == 0).any()


def test_proposal_targets_rules():
    gt = torch.tensor([[[0.0, 0, 10, 10], [50, 50, 90, 90]]])
    labels = torch.tensor([[3, 7]])
    state = torch.tensor([[0, 1]], dtype=torch.int8)  # an invalid GT still labels RoIs
    props = torch.tensor([[0.0, 0, 10, 11], [50, 50, 70, 70], [200, 200, 210, 210]], requires_grad=True)
    rois, roi_chip, lab, tgt = modeling.proposal_targets(
        props, torch.zeros(3, dtype=torch.long), gt, labels, state, torch.tensor([[0.0, 20.0]])
    )
    # GT 0 (size 10) is in range [0, 20) and is added; GT 1 (size 40) is not.
    assert rois.tolist() == [[0, 0, 10, 11], [50, 50, 70, 70], [200, 200, 210, 210], [0, 0, 10, 10]]
    assert lab.tolist() == [3, 0, 0, 3]  # IoU 0.25 with GT 1 is background
    assert not rois.requires_grad
    assert tgt[1:3].abs().sum() == 0 and tgt[3].abs().sum() == 0


def test_bad_input():
    anchors, obj, deltas, canvas, vr = _rpn_outputs(0)
    with pytest.raises(ValueError, match=r"`deltas` must have shape"):
        modeling.filter_proposals(anchors, obj, deltas[:, :-1], canvas, vr)
    with pytest.raises(ValueError, match=r"`valid_range` must have shape \[3, 2\]"):
        modeling.filter_proposals(anchors, obj, deltas, canvas, vr[:2])
    props, chip, gt, labels, state, vr = _targets_case(0)
    with pytest.raises(ValueError, match=r"`proposal_chip` values must lie in \[0, 3\)"):
        modeling.proposal_targets(props, chip + 5, gt, labels, state, vr)
    with pytest.raises(ValueError, match=r"`gt_labels` must have shape"):
        modeling.proposal_targets(props, chip, gt, labels[:, :2], state, vr)


def test_bad_values_and_arguments():
    anchors, obj, deltas, canvas, vr = _rpn_outputs(0)
    nan = float("nan")
    with pytest.raises(ValueError, match="filter_proposals: `deltas` must be finite"):
        modeling.filter_proposals(anchors, obj, deltas.index_fill(1, torch.tensor([3]), nan), canvas, vr)
    with pytest.raises(ValueError, match="filter_proposals: `objectness` must be finite"):
        modeling.filter_proposals(anchors, obj.index_fill(1, torch.tensor([3]), nan), deltas, canvas, vr)
    with pytest.raises(ValueError, match="filter_proposals: `anchors` box 0"):
        modeling.filter_proposals(anchors.index_fill(0, torch.tensor([0]), 0.0), obj, deltas, canvas, vr)
    with pytest.raises(ValueError, match="filter_proposals: `canvas_wh` must be finite and positive"):
        modeling.filter_proposals(anchors, obj, deltas, -canvas, vr)
    with pytest.raises(
        ValueError, match=r"filter_proposals: `valid_range`\[1\] = \[50.0, 10.0\] must have 0 <= lo <= hi"
    ):
        modeling.filter_proposals(
            anchors, obj, deltas, canvas, torch.tensor([[0.0, 40], [50, 10], [0, 1]], dtype=torch.float64)
        )
    with pytest.raises(TypeError, match="filter_proposals: `pre_nms_top_n` must be an int, got bool"):
        modeling.filter_proposals(anchors, obj, deltas, canvas, vr, pre_nms_top_n=True)
    with pytest.raises(ValueError, match="filter_proposals: `weights` must have 4 numbers"):
        modeling.filter_proposals(anchors, obj, deltas, canvas, vr, weights=(1.0,))
    with pytest.raises(ValueError, match=r"filter_proposals: `anchors` must have shape \[A, 4\], got \(\)"):
        modeling.filter_proposals(anchors[0, 0], obj, deltas, canvas, vr)
    # A huge post_nms_top_n keeps everything, as a large one does.
    for a, b in zip(
        modeling.filter_proposals(anchors, obj, deltas, canvas, vr, post_nms_top_n=2**64),
        modeling.filter_proposals(anchors, obj, deltas, canvas, vr, post_nms_top_n=10**6),
    ):
        assert torch.equal(a, b)


def test_proposal_targets_ignores_padding_values():
    props, chip, gt, labels, state, vr = _targets_case(0)
    want = modeling.proposal_targets(props, chip, gt, labels, state, vr)
    gt = torch.where((state < 0)[..., None], float("nan"), gt)  # padding may hold anything
    for a, b in zip(modeling.proposal_targets(props, chip, gt, labels, state, vr), want):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"proposal_targets: `gt_boxes \(valid and invalid GT\)`"):
        modeling.proposal_targets(
            props, chip, torch.where((state >= 0)[..., None], float("nan"), gt), labels, state, vr
        )
    with pytest.raises(TypeError, match="proposal_targets: `proposal_chip` must be an integer tensor"):
        modeling.proposal_targets(props, chip.double(), gt, labels, state, vr)


def test_proposal_targets_degenerate_gt_is_never_encoded():
    """A zero-area GT in the valid range is added as an RoI; it is background (IoU 0), not a -inf target."""
    props = torch.tensor([[0.0, 0, 10, 10]], dtype=torch.float64)
    gt = torch.tensor([[[5.0, 5, 5, 5], [0, 0, 10, 11]]], dtype=torch.float64)
    state = torch.tensor([[1, 1]], dtype=torch.int8)
    rois, _, lab, tgt = modeling.proposal_targets(
        props,
        torch.tensor([0]),
        gt,
        torch.tensor([[2, 3]]),
        state,
        torch.tensor([[0.0, math.inf]], dtype=torch.float64),
    )
    assert len(rois) == 3 and lab.tolist() == [3, 0, 3] and torch.isfinite(tgt).all()
