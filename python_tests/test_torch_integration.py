"""opcheck on every op (the op specs' list), torch.compile(fullgraph=True), and the info report."""

import subprocess
import sys

import op_tester
import torch
from common_utils import random_boxes
from fuzz.cases import SPEC_MODULES

from sniper_ext import info, modeling, ops


def test_opcheck_list_covers_every_op():
    """Every raw op of the dispatcher is in the opcheck list of some op spec (OpTester.opcheck_calls, which
    each spec's test_opcheck runs in float32 and float64 on every device), and every spec is in a module
    the fuzz cases read."""
    specs = [spec() for spec in op_tester.SPECS]
    assert {spec.__module__ for spec in op_tester.SPECS} == set(SPEC_MODULES)
    covered = {op.name() for spec in specs for op, _ in spec.opcheck_calls("cpu", torch.float32)}
    assert covered == {f"sniper::{name}" for name in info.op_names()}


def test_compile_fullgraph():
    torch._dynamo.reset()

    def detect(boxes, scores, idxs):
        keep, new_scores = ops.soft_nms(boxes, scores, idxs, method="gaussian", sigma=0.55)
        kept = boxes[keep]
        nms_keep = ops.batched_nms(boxes, scores, idxs, 0.5)
        return kept * 2, new_scores + 1, nms_keep, ops.box_iou(kept, boxes).sum()

    compiled = torch.compile(detect, fullgraph=True, dynamic=True)
    for n in (40, 57):
        g = torch.Generator().manual_seed(n)
        boxes = random_boxes(n, generator=g, dtype=torch.float32)
        scores, idxs = torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)
        for a, b in zip(compiled(boxes, scores, idxs), detect(boxes, scores, idxs)):
            torch.testing.assert_close(a, b)


def test_compile_chip_cover():
    torch._dynamo.reset()

    def plan(boxes, group, canvas):
        chips, chip_group, box_chip = ops.greedy_chip_cover(boxes, group, canvas, seed=3)
        return chips / 512, chip_group, box_chip + 1

    compiled = torch.compile(plan, fullgraph=True)
    boxes = random_boxes(30, canvas=900, max_size=200).float()
    group = torch.arange(30) % 3
    canvas = torch.tensor([[1000.0, 900.0], [400.0, 300.0], [1200.0, 1200.0]])
    for a, b in zip(compiled(boxes, group, canvas), plan(boxes, group, canvas)):
        torch.testing.assert_close(a, b)


def test_compile_rpn_targets():
    torch._dynamo.reset()
    anchors = modeling.make_anchors((4, 4), scales=(1, 2))

    def targets(gt, state, canvas):
        labels, matched = ops.label_anchors(anchors, gt, state, canvas)
        return (labels == 1).sum(1), matched.clamp(min=0)

    compiled = torch.compile(targets, fullgraph=True)
    gt = torch.stack([random_boxes(5, generator=torch.Generator().manual_seed(i), canvas=64).float() for i in range(3)])
    state = torch.tensor([[1, 0, -1, 1, 1]] * 3, dtype=torch.int8)
    canvas = torch.full((3, 2), 64.0)
    for a, b in zip(compiled(gt, state, canvas), targets(gt, state, canvas)):
        torch.testing.assert_close(a, b)


def test_compile_box_iou_backward():
    torch._dynamo.reset()
    f = torch.compile(lambda a, b: ops.box_iou(a, b).square().sum(), fullgraph=True)
    a = random_boxes(8).requires_grad_()
    b = random_boxes(5, generator=torch.Generator().manual_seed(1))
    f(a, b).backward()
    a2 = a.detach().clone().requires_grad_()
    ops.box_iou(a2, b).square().sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)


def test_info_report():
    text = info.report()
    assert "built against torch" in text and "running on torch" in text
    names = info.op_names()  # from the dispatcher, not a hand-kept list
    assert {
        "box_iou",
        "nms",
        "batched_nms",
        "soft_nms",
        "greedy_chip_cover",
        "label_anchors",
        "deform_im2col",
        "deform_col2im",
        "roi_align",
        "deform_roi_pool",
    } <= set(names)
    for name in names:
        assert f"sniper::{name}" in text
        assert {"CPU", "Fake"} <= set(info.op_backends(name)), name
    assert info.ops_without("CPU") == []
    assert set(info.op_backends("soft_nms")) >= {"CPU", "Fake"}
    assert "Autograd" in info.op_backends("box_iou")
    out = subprocess.run([sys.executable, "-m", "sniper_ext.info"], capture_output=True, text=True, check=True)
    assert "sniper::soft_nms" in out.stdout
