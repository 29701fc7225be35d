"""Every CUDA op, run by the harness through its registration code
(csrc/ops/cuda/*_cuda.cpp) and its launchers, against the CPU op on the
inputs of the CUDA/CPU equality tests of python_tests/*.py
(test_cuda_matches_cpu): bitwise where those tests expect
exact equality, else with their tolerances. Every test runs in the three
thread orders; the costlier ones run each dtype/method/seed in one order, the
orders taking turns (SNIPER_SIM_FULL=1: all of them in every order)."""

import pytest
import test_deform_conv as deform_conv_tests
import test_focus_chips as focus_tests
import test_greedy_chip_cover as chip_cover_tests
import test_roi_align as roi_pool_tests
import torch
from common_utils import ALL_DTYPES, random_boxes

from .conftest import Unchanged, assert_bitwise, rotate

ops = torch.ops.sniper
SOFT_NMS_METHODS = {"linear": 0, "gaussian": 1, "hard": 2}


def _name(v):
    return "-".join(_name(x) for x in v) if isinstance(v, tuple) else str(v).replace("torch.", "")


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_box_iou(sim, dtype):
    a = random_boxes(300, dtype=dtype)
    b = random_boxes(200, generator=torch.Generator().manual_seed(9), dtype=dtype)
    with Unchanged(a, b):
        assert_bitwise(sim.box_iou(a, b), ops.box_iou(a, b), "box_iou")
    assert sim.box_iou(a[:0], b).shape == (0, 200) and sim.box_iou(a, b[:0]).shape == (300, 0)


@pytest.mark.parametrize("sim, dtype", rotate(ALL_DTYPES, _name), indirect=["sim"])
def test_nms(sim, dtype):
    g = torch.Generator().manual_seed(11)
    for n in (1, 63, 64, 65, 1000, 5000):
        boxes, scores = random_boxes(n, generator=g, dtype=dtype), torch.rand(n, generator=g).to(dtype)
        idxs = torch.randint(0, 17, (n,), generator=g)
        with Unchanged(boxes, scores, idxs):
            assert_bitwise(sim.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5), f"nms n={n}")
            assert_bitwise(
                sim.batched_nms(boxes, scores, idxs, 0.5),
                ops.batched_nms(boxes, scores, idxs, 0.5),
                f"batched_nms n={n}",
            )
    empty = torch.zeros(0, 4, dtype=dtype)
    assert sim.nms(empty, torch.zeros(0, dtype=dtype), 0.5).shape == (0,)


def test_nms_ties_and_signed_zero_scores(sim):
    # Equal scores (ties to the lower index), -0.0 beside +0.0, identical boxes.
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [20, 20, 30, 30], [50, 50, 51, 51]],
        dtype=torch.float32,
    ).repeat(40, 1)
    boxes += torch.arange(240).repeat_interleave(4).view(240, 4) % 3 * 0.25
    scores = torch.tensor([0.5, 0.5, -0.0, 0.0, 0.5, -0.0]).repeat(40)
    idxs = torch.arange(240) % 3
    for thr in (0.0, 0.5, 1.0):
        assert_bitwise(sim.nms(boxes, scores, thr), ops.nms(boxes, scores, thr), f"nms thr={thr}")
        assert_bitwise(
            sim.batched_nms(boxes, scores, idxs, thr),
            ops.batched_nms(boxes, scores, idxs, thr),
            f"batched_nms thr={thr}",
        )


@pytest.mark.parametrize(
    "sim, dtype, method", rotate([(d, m) for d in ALL_DTYPES for m in SOFT_NMS_METHODS], _name), indirect=["sim"]
)
def test_soft_nms(sim, dtype, method):
    g = torch.Generator().manual_seed(12)
    m = SOFT_NMS_METHODS[method]
    for n, ng in ((1, 1), (300, 1), (5000, 1), (20000, 400)):
        boxes = random_boxes(n, generator=g, dtype=dtype)
        scores = torch.rand(n, generator=g).to(dtype)
        idxs = torch.randint(0, ng, (n,), generator=g)
        with Unchanged(boxes, scores, idxs):
            k_sim, s_sim = sim.soft_nms(boxes, scores, idxs, m, 0.5, 0.3, 1e-3)
        k_cpu, s_cpu = ops.soft_nms(boxes, scores, idxs, m, 0.5, 0.3, 1e-3)
        assert_bitwise(k_sim, k_cpu, f"soft_nms keep n={n}")
        assert_bitwise(s_sim, s_cpu, f"soft_nms scores n={n}")  # exp_ rounds identically on CPU and CUDA
    k, s = sim.soft_nms(boxes[:0], scores[:0], None, m, 0.5, 0.3, 1e-3)
    assert k.shape == s.shape == (0,)


def test_soft_nms_one_group_without_ids(sim):
    g = torch.Generator().manual_seed(3)
    boxes, scores = random_boxes(700, generator=g), torch.rand(700, generator=g, dtype=torch.float64)
    for m in SOFT_NMS_METHODS.values():
        k_sim, s_sim = sim.soft_nms(boxes, scores, None, m, 0.5, 0.3, 1e-3)
        k_cpu, s_cpu = ops.soft_nms(boxes, scores, None, m, 0.5, 0.3, 1e-3)
        assert_bitwise(k_sim, k_cpu, "soft_nms keep")
        torch.testing.assert_close(s_sim, s_cpu, rtol=1e-12, atol=0)


# The large-group paths (csrc/ops/cuda/nms_tuning.h), taken by small inputs under lowered thresholds:
# bitmask batches for batched_nms (large_segment 0), column tiles with cross-tile suppression for nms
# (mask budgets of 512 and 4096 bytes: 64- and 181-box tiles, more than 1024 kept boxes), and the
# 1024-thread windowed Soft-NMS (soft_large 0 or 5).
@pytest.mark.parametrize("sim, dtype", rotate(ALL_DTYPES, _name), indirect=["sim"])
def test_nms_large_group_paths(sim, dtype):
    g = torch.Generator().manual_seed(21)
    for n, tuning in ((700, (0, 256 << 20, 1024)), (2500, (1024, 512, 1024)), (1500, (0, 4096, 1024))):
        boxes = random_boxes(n, generator=g, canvas=400.0, dtype=dtype)
        scores, idxs = torch.rand(n, generator=g).to(dtype), torch.randint(0, 3, (n,), generator=g)
        sim.tuning = tuning
        assert_bitwise(sim.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5), f"nms n={n} {tuning}")
        assert_bitwise(
            sim.batched_nms(boxes, scores, idxs, 0.5),
            ops.batched_nms(boxes, scores, idxs, 0.5),
            f"batched_nms n={n} {tuning}",
        )


@pytest.mark.parametrize("sim, method", rotate(list(SOFT_NMS_METHODS), _name), indirect=["sim"])
def test_soft_nms_large_group_path(sim, method):
    g = torch.Generator().manual_seed(22)
    m = SOFT_NMS_METHODS[method]
    for dtype in (torch.float32, torch.float64):
        for n, ng, soft_large in ((1500, 1, 0), (2000, 3, 5)):
            boxes = random_boxes(n, generator=g, canvas=300.0, dtype=dtype)
            scores, idxs = torch.rand(n, generator=g).to(dtype), torch.randint(0, ng, (n,), generator=g)
            sim.tuning = (1024, 256 << 20, soft_large)
            k_sim, s_sim = sim.soft_nms(boxes, scores, idxs if ng > 1 else None, m, 0.5, 0.3, 1e-3)
            k_cpu, s_cpu = ops.soft_nms(boxes, scores, idxs if ng > 1 else None, m, 0.5, 0.3, 1e-3)
            assert_bitwise(k_sim, k_cpu, f"soft_nms keep n={n} soft_large={soft_large}")
            assert_bitwise(s_sim, s_cpu, f"soft_nms scores n={n} soft_large={soft_large}")


# The fixed-capacity ops (nms_fixed, batched_nms_fixed, soft_nms_fixed): rows and counts bitwise equal to
# the CPU op's, and not one synchronisation or host<->device copy on the way (the simulated CUDA runtime
# counts them; the variable-size ops, which read their output size back, show that it does).

NO_HOST_TRAFFIC = {"syncs": 0, "to_host": 0, "to_device": 0}


def _fixed_case(g, n, groups, dtype, canvas=150.0):
    """Random boxes with coarse scores (ties), ids in [-2, groups + 2): out of range on both sides, empty
    groups, and group groups - 1 made of one box."""
    boxes = random_boxes(n, generator=g, canvas=canvas, dtype=dtype)
    scores = (torch.randint(0, 50, (n,), generator=g).double() / 49).to(dtype)
    idxs = torch.randint(-2, groups + 2, (n,), generator=g)
    if n > 3:
        idxs[idxs == groups - 1] = -1
        idxs[n // 2] = groups - 1
    return boxes, scores, idxs


def _check_fixed(sim, boxes, scores, idxs, groups, cap, method, what):
    """The three fixed ops through the harness against the CPU ops, bitwise, with no host traffic."""
    thr = 0.5
    sim.host_traffic(reset=True)
    with Unchanged(boxes, scores, idxs):
        got = {
            "nms_fixed": sim.nms_fixed(boxes, scores, thr, cap),
            "batched_nms_fixed": sim.batched_nms_fixed(boxes, scores, idxs, thr, groups, cap),
            "soft_nms_fixed": sim.soft_nms_fixed(boxes, scores, idxs, method, 0.5, 0.3, 1e-3, groups, cap),
        }
    assert sim.host_traffic() == NO_HOST_TRAFFIC, what
    want = {
        "nms_fixed": ops.nms_fixed(boxes, scores, thr, cap),
        "batched_nms_fixed": ops.batched_nms_fixed(boxes, scores, idxs, thr, groups, cap),
        "soft_nms_fixed": ops.soft_nms_fixed(boxes, scores, idxs, method, 0.5, 0.3, 1e-3, groups, cap),
    }
    for name in got:
        for k, (a, b) in enumerate(zip(got[name], want[name])):
            assert_bitwise(a, b, f"{name} output {k}: {what}")


@pytest.mark.parametrize(
    "sim, dtype, method", rotate([(d, m) for d in ALL_DTYPES for m in SOFT_NMS_METHODS], _name), indirect=["sim"]
)
def test_fixed_ops(sim, dtype, method):
    """Capacities below and above the number kept (1 .. all), no boxes, one box, empty groups, ids out of
    range, one-box groups, and ~1000-box groups (whose variable-size op takes the bitmask path, here
    with the threshold lowered; the fixed batched op runs every group on one block)."""
    g = torch.Generator().manual_seed(31)
    m = SOFT_NMS_METHODS[method]
    for n, groups in ((0, 3), (1, 1), (2, 1), (64, 4), (700, 6), (2500, 2)):
        boxes, scores, idxs = _fixed_case(g, n, groups, dtype)
        for cap in (1, 13, 5000):
            _check_fixed(sim, boxes, scores, idxs, groups, cap, m, f"n={n} groups={groups} cap={cap}")
    boxes, scores, idxs = _fixed_case(g, 900, 3, dtype)
    sim.tuning = (100, 256 << 20, 100)  # every group above the variable-size ops' large-group thresholds
    _check_fixed(sim, boxes, scores, idxs, 3, 40, m, "lowered thresholds")
    assert sim.batched_nms_fixed(boxes, scores, idxs, 0.5, 0, 4)[0].shape == (0, 4)
    assert sim.soft_nms_fixed(boxes, scores, idxs, m, 0.5, 0.3, 1e-3, 3, 0)[1].shape == (3, 0)


@pytest.mark.parametrize("sim, dtype", rotate(ALL_DTYPES, _name), indirect=["sim"])
def test_fixed_ops_large_group_paths(sim, dtype):
    """nms_fixed's bitmask path planned from n alone: one job, column tiles (mask budgets of 512 and 4096
    bytes: 64- and 181-box tiles, with cross-tile suppression); soft_nms_fixed's 1024-thread kernel
    (soft_large 0 or 5), with capacities inside and beyond the kept count."""
    g = torch.Generator().manual_seed(32)
    for n, tuning in ((700, (1024, 256 << 20, 0)), (2500, (1024, 512, 5)), (1500, (0, 4096, 1024))):
        boxes, scores, idxs = _fixed_case(g, n, 3, dtype, canvas=400.0)
        sim.tuning = tuning
        for cap in (7, 300, n):
            _check_fixed(sim, boxes, scores, idxs, 3, cap, cap % 3, f"n={n} {tuning} cap={cap}")


def test_fixed_ops_ties_and_identical_boxes(sim):
    """Equal scores (ties to the lower index), -0.0 beside +0.0, identical boxes, in one group and many."""
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [20, 20, 30, 30], [50, 50, 51, 51]],
        dtype=torch.float32,
    ).repeat(40, 1)
    scores = torch.tensor([0.5, 0.5, -0.0, 0.0, 0.5, -0.0]).repeat(40)
    idxs = torch.arange(240) % 3
    for cap in (1, 5, 240):
        for m in SOFT_NMS_METHODS.values():
            _check_fixed(sim, boxes, scores, idxs, 3, cap, m, f"ties cap={cap} method={m}")


def test_host_traffic_counter_sees_the_variable_size_ops(sim):
    """The counter behind NO_HOST_TRAFFIC works: nms and soft_nms read their output size back."""
    boxes, scores = random_boxes(50), torch.rand(50, dtype=torch.float64)
    for call in (lambda: sim.nms(boxes, scores, 0.5), lambda: sim.soft_nms(boxes, scores, None, 0, 0.5, 0.3, 0.0)):
        sim.host_traffic(reset=True)
        call()
        traffic = sim.host_traffic()
        assert traffic["syncs"] >= 1 and traffic["to_host"] >= 1, traffic


@pytest.mark.parametrize("sim, seed", rotate([None, 0, 99]), indirect=["sim"])
def test_greedy_chip_cover(sim, seed):
    for s in range(5):
        boxes, gid, canvas = chip_cover_tests._random_problem(200 + s, groups=300, per_group=(0, 30))
        with Unchanged(boxes, gid, canvas):
            got = sim.greedy_chip_cover(boxes, gid, canvas, 512, 32, seed)
        want = ops.greedy_chip_cover(boxes, gid, canvas, 512, 32, seed)
        for name, a, b in zip(("chips", "chip_group", "box_chip"), got, want):
            assert_bitwise(a, b, f"greedy_chip_cover {name} problem {s}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_greedy_chip_cover_dtypes(sim, dtype):
    boxes, gid, canvas = chip_cover_tests._random_problem(7, groups=40, per_group=(0, 40))
    got = sim.greedy_chip_cover(boxes.to(dtype), gid, canvas, 512, 32, None)
    want = ops.greedy_chip_cover(boxes.to(dtype), gid, canvas, 512, 32, None)
    for a, b in zip(got, want):
        assert_bitwise(a, b, "greedy_chip_cover")


@pytest.mark.parametrize("sim, dtype", rotate(ALL_DTYPES, _name), indirect=["sim"])
def test_focus_chips(sim, dtype):
    for k, (prob, sizes, *args) in enumerate(focus_tests.cuda_problems()):
        p = prob.to(dtype)
        sizes = focus_tests.full_sizes(p) if sizes is None else sizes
        with Unchanged(p, sizes):
            got = sim.focus_chips(p, sizes, *args)
        assert_bitwise(got, ops.focus_chips(p, sizes, *args), f"focus_chips problem {k}")
    empty = torch.zeros(3, 4, 5, dtype=dtype)
    assert sim.focus_chips(empty, torch.zeros(3, 2, dtype=torch.int64), 0.5, 3, 16).shape == (0, 5)
    assert sim.focus_chips(empty[:0], torch.zeros(0, 2, dtype=torch.int64), 0.5, 3, 16).shape == (0, 5)


def test_focus_chips_huge_map(sim):
    """9e6 cells in one block (test_focus_chips.test_huge_sparse_map's map)."""
    g = torch.Generator().manual_seed(5)
    prob = torch.zeros(1, 3000, 3000)
    prob.view(-1)[torch.randint(0, prob.numel(), (300,), generator=g)] = 0.9
    prob[0, 100:140, 2000:2100] = 0.8
    prob[0, -10:, ::7] = 0.7
    sizes = focus_tests.full_sizes(prob)
    assert_bitwise(sim.focus_chips(prob, sizes, 0.5, 3, 16), ops.focus_chips(prob, sizes, 0.5, 3, 16), "focus_chips")


@pytest.mark.parametrize("sim, dtype", rotate(ALL_DTYPES, _name), indirect=["sim"])
def test_label_anchors(sim, dtype):
    from sniper_ext import modeling

    anchors = modeling.make_anchors((32, 32), dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    gt = torch.stack([random_boxes(200, generator=gen, canvas=512, max_size=300) for _ in range(8)]).to(dtype)
    state = torch.randint(-1, 2, (8, 200), generator=gen, dtype=torch.int8)
    canvas = torch.tensor([[512.0, 512.0]] * 4 + [[300.0, 512.0]] * 4)
    args = (0.5, 0.4, 0.3, 32.0)  # sniper_ext.ops.label_anchors' defaults
    with Unchanged(anchors, gt, state, canvas):
        got = sim.label_anchors(anchors, gt, state, canvas, *args)
    want = ops.label_anchors(anchors, gt, state, canvas, *args)
    assert_bitwise(got[0], want[0], "labels")
    assert_bitwise(got[1], want[1], "matched")


DEFORM_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _deform_args(a, kh=3, kw=3):
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    og = a["offset"].shape[1] // (2 * kh * kw)
    return kh, kw, sh, sw, ph, pw, dh, dw, og


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_deform_im2col_col2im(sim, dtype, mask):
    # test_deform_conv.test_cuda_matches_cpu's input (3x3 kernel there: kh, kw default to 3, 2).
    a = deform_conv_tests._case(n=3, c=8, h=12, w=11, oc=8, og=4, dtype=dtype, mask=mask)
    params = _deform_args(a, kh=a["weight"].shape[2], kw=a["weight"].shape[3])
    tol = DEFORM_TOL[dtype]
    x, off, msk = a["input"], a["offset"], a["mask"]
    with Unchanged(x, off, msk):
        cols = sim.deform_im2col(x, off, msk, *params)
    torch.testing.assert_close(cols, ops.deform_im2col(x, off, msk, *params), rtol=tol, atol=tol)
    gcols = torch.randn(cols.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    for deterministic in (False, True):
        with Unchanged(gcols, x, off, msk):
            got = sim.deform_col2im(gcols, x, off, msk, *params, deterministic)
        want = ops.deform_col2im(gcols, x, off, msk, *params, deterministic)
        for name, g_, w_ in zip(("grad_input", "grad_offset", "grad_mask"), got, want):
            torch.testing.assert_close(g_, w_, rtol=tol * 10, atol=tol * 100, msg=lambda m, n=name: f"{n}: {m}")


ROI_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_roi_pool(sim, dtype):
    x, rois, off = roi_pool_tests._random(8, dtype)
    tol = ROI_TOL[dtype]
    n, c, h, w = x.shape
    for aligned in (False, True):
        with Unchanged(x, rois):
            out = sim.roi_align(x, rois, 0.5, 3, 2, 2, aligned)
        want = ops.roi_align(x, rois, 0.5, 3, 2, 2, aligned)
        torch.testing.assert_close(out, want, rtol=tol, atol=tol)
        grad = torch.ones_like(want)  # of out.sum()
        with Unchanged(grad, rois):
            gi = sim.roi_align_backward(grad, rois, 0.5, 3, 2, n, c, h, w, 2, aligned)
        torch.testing.assert_close(
            gi, ops.roi_align_backward(grad, rois, 0.5, 3, 2, n, c, h, w, 2, aligned), rtol=tol, atol=tol
        )
    with Unchanged(x, rois, off):
        out = sim.deform_roi_pool(x, rois, off, 0.5, 3, 2, 2, 0.1)
    want = ops.deform_roi_pool(x, rois, off, 0.5, 3, 2, 2, 0.1)
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    grad = 2 * want  # of out.square().sum()
    with Unchanged(grad, x, rois, off):
        gi, go = sim.deform_roi_pool_backward(grad, x, rois, off, 0.5, 3, 2, 2, 0.1)
    wi, wo = ops.deform_roi_pool_backward(grad, x, rois, off, 0.5, 3, 2, 2, 0.1)
    torch.testing.assert_close(gi, wi, rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(go, wo, rtol=tol * 10, atol=tol * 10)
    # Without an offset (deformable pooling degenerates to aligned RoIAlign).
    gi, go = sim.deform_roi_pool_backward(grad, x, rois, None, 0.5, 3, 2, 2, 0.1)
    wi, wo = ops.deform_roi_pool_backward(grad, x, rois, None, 0.5, 3, 2, 2, 0.1)
    torch.testing.assert_close(gi, wi, rtol=tol * 10, atol=tol * 10)
    assert go.numel() == wo.numel() == 0
