"""The harness under sanitizers (skipped unless SNIPER_SIM_SANITIZERS=1):

* asan: the fiber build under AddressSanitizer + UndefinedBehaviorSanitizer,
  every launcher on small inputs in all three orders (out-of-bounds accesses,
  use of freed temporaries, UB, leaks at exit);
* tsan: a real thread per simulated thread under ThreadSanitizer on tiny
  inputs, which finds a plain `+=` where an atomic is needed, and missing
  barriers as races.

Each Sim runs its calls in a driver process built with the sanitizer."""

import pytest
import test_deform_conv as deform_conv_tests
import test_focus_chips as focus_tests
import test_greedy_chip_cover as chip_cover_tests
import test_roi_align as roi_pool_tests
import torch
from common_utils import random_boxes

from .conftest import ORDERS, assert_bitwise, harness
from .sim import SanitizerError, Sim, SimError

pytestmark = pytest.mark.sanitizer
ops = torch.ops.sniper


# -- the launchers against the CPU ops ---------------------------------------------------------


def check_box_iou(s, n, m, dtypes):
    for dt in dtypes:
        a = random_boxes(n, dtype=dt)
        b = random_boxes(m, generator=torch.Generator().manual_seed(9), dtype=dt)
        assert_bitwise(s.box_iou(a, b), ops.box_iou(a, b), "box_iou")


def check_nms(s, sizes, groups):
    g = torch.Generator().manual_seed(11)
    for n in sizes:
        boxes, scores = random_boxes(n, generator=g), torch.rand(n, generator=g, dtype=torch.float64)
        idxs = torch.randint(0, groups, (n,), generator=g)
        assert_bitwise(s.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5), f"nms n={n}")
        assert_bitwise(
            s.batched_nms(boxes, scores, idxs, 0.5), ops.batched_nms(boxes, scores, idxs, 0.5), f"batched_nms n={n}"
        )


def check_soft_nms(s, n, groups, methods=(0, 1, 2)):
    g = torch.Generator().manual_seed(12)
    boxes, scores = random_boxes(n, generator=g, dtype=torch.float32), torch.rand(n, generator=g)
    idxs = torch.randint(0, groups, (n,), generator=g)
    for m in methods:
        for ids in (idxs, None):
            k, sc = s.soft_nms(boxes, scores, ids, m, 0.5, 0.3, 1e-3)
            kc, scc = ops.soft_nms(boxes, scores, ids, m, 0.5, 0.3, 1e-3)
            assert_bitwise(k, kc, "soft_nms keep")
            torch.testing.assert_close(sc, scc, rtol=1e-5, atol=1e-6)


def check_fixed(s, sizes, groups, caps=(1, 9, 400), large_paths=True):
    """The fixed-capacity launchers (outputs allocated and prefilled in sim.py as FixedOutputs does),
    ids out of range included; with large_paths the last size also through the large-group paths
    (tiled mask, windowed Soft-NMS)."""
    g = torch.Generator().manual_seed(14)
    for n in sizes:
        boxes, scores = random_boxes(n, generator=g, canvas=60.0), torch.rand(n, generator=g)
        boxes = boxes.float()
        idxs = torch.randint(-1, groups + 1, (n,), generator=g)
        for tuning in [(1024, 256 << 20, 1024)] + ([(0, 512, 0)] if large_paths and n == sizes[-1] else []):
            s.tuning = tuning
            for cap in caps:
                pairs = [
                    (s.nms_fixed(boxes, scores, 0.5, cap), ops.nms_fixed(boxes, scores, 0.5, cap)),
                    (
                        s.batched_nms_fixed(boxes, scores, idxs, 0.5, groups, cap),
                        ops.batched_nms_fixed(boxes, scores, idxs, 0.5, groups, cap),
                    ),
                    (
                        s.soft_nms_fixed(boxes, scores, idxs, cap % 3, 0.5, 0.3, 1e-3, groups, cap),
                        ops.soft_nms_fixed(boxes, scores, idxs, cap % 3, 0.5, 0.3, 1e-3, groups, cap),
                    ),
                ]
                for got, want in pairs:
                    for a, b in zip(got, want):
                        assert_bitwise(a, b, f"fixed n={n} cap={cap} {tuning}")
    s.tuning = (1024, 256 << 20, 1024)


def check_focus_chips(s, maps, h, w):
    g = torch.Generator().manual_seed(13)
    prob = torch.maximum(focus_tests.blobs(maps, h, w, seed=13), (torch.rand(maps, h, w, generator=g) < 0.02).double())
    sizes = focus_tests.random_sizes(maps, h, w, g, full=0.5)
    for dtype, args in ((torch.float32, (0.5, 3, 6)), (torch.float64, (0.5, 1, 1)), (torch.bfloat16, (0.3, 2, 4))):
        p = prob.to(dtype)
        assert_bitwise(s.focus_chips(p, sizes, *args), ops.focus_chips(p, sizes, *args), f"focus_chips {dtype}")


def check_chip_cover(s, groups, per_group):
    boxes, gid, canvas = chip_cover_tests._random_problem(200, groups=groups, per_group=per_group)
    for seed in (None, 3):
        for a, b in zip(
            s.greedy_chip_cover(boxes, gid, canvas, 512, 32, seed),
            ops.greedy_chip_cover(boxes, gid, canvas, 512, 32, seed),
        ):
            assert_bitwise(a, b, "greedy_chip_cover")


def check_label_anchors(s, grid, chips, g, dtypes):
    from sniper_ext import modeling

    for dt in dtypes:
        anchors = modeling.make_anchors(grid, dtype=dt)
        gen = torch.Generator().manual_seed(7)
        gt = torch.stack([random_boxes(g, generator=gen, canvas=512, max_size=300) for _ in range(chips)]).to(dt)
        state = torch.randint(-1, 2, (chips, g), generator=gen, dtype=torch.int8)
        canvas = torch.tensor([[512.0, 512.0], [300.0, 512.0]] * chips)[:chips]
        got = s.label_anchors(anchors, gt, state, canvas, 0.5, 0.4, 0.3, 32.0)
        want = ops.label_anchors(anchors, gt, state, canvas, 0.5, 0.4, 0.3, 32.0)
        assert_bitwise(got[0], want[0], "labels")
        assert_bitwise(got[1], want[1], "matched")


def check_deform(s, dtypes, **case):
    for dt in dtypes:
        for mask in (True, False):
            a = deform_conv_tests._case(dtype=dt, mask=mask, **case)
            kh, kw = a["weight"].shape[2:]
            og = a["offset"].shape[1] // (2 * kh * kw)
            (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
            p = (kh, kw, sh, sw, ph, pw, dh, dw, og)
            x, off, msk = a["input"], a["offset"], a["mask"]
            tol = 1e-10 if dt == torch.float64 else 1e-4
            cols = s.deform_im2col(x, off, msk, *p)
            torch.testing.assert_close(cols, ops.deform_im2col(x, off, msk, *p), rtol=tol, atol=tol)
            gc = torch.randn(cols.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dt)
            for det in (False, True):
                for got, want in zip(
                    s.deform_col2im(gc, x, off, msk, *p, det), ops.deform_col2im(gc, x, off, msk, *p, det)
                ):
                    torch.testing.assert_close(got, want, rtol=tol * 10, atol=tol * 100)


def check_roi_pool(s, dtypes):
    for dt in dtypes:
        x, rois, off = roi_pool_tests._random(8, dt)
        n, c, h, w = x.shape
        tol = 1e-10 if dt == torch.float64 else 1e-5
        for aligned in (False, True):
            out = s.roi_align(x, rois, 0.5, 3, 2, 2, aligned)
            torch.testing.assert_close(out, ops.roi_align(x, rois, 0.5, 3, 2, 2, aligned), rtol=tol, atol=tol)
            grad = torch.ones_like(out)
            torch.testing.assert_close(
                s.roi_align_backward(grad, rois, 0.5, 3, 2, n, c, h, w, 0, aligned),
                ops.roi_align_backward(grad, rois, 0.5, 3, 2, n, c, h, w, 0, aligned),
                rtol=tol,
                atol=tol,
            )
        out = s.deform_roi_pool(x, rois, off, 0.5, 3, 2, 2, 0.1)
        torch.testing.assert_close(out, ops.deform_roi_pool(x, rois, off, 0.5, 3, 2, 2, 0.1), rtol=tol, atol=tol)
        for o in (off, None):
            got = s.deform_roi_pool_backward(2 * out, x, rois, o, 0.5, 3, 2, 2, 0.1)
            want = ops.deform_roi_pool_backward(2 * out, x, rois, o, 0.5, 3, 2, 2, 0.1)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=tol * 10, atol=tol * 10)


# -- AddressSanitizer + UndefinedBehaviorSanitizer ------------------------------------------------


@pytest.fixture(scope="module", params=[o for o, _ in ORDERS])
def asan(request):
    harness("asan")
    s = Sim(mode="asan", order=request.param, reduce=dict(ORDERS)[request.param], seed=99)
    yield s
    s.close()  # raises on ASan's leak report


def test_asan_launchers(asan):
    check_box_iou(asan, 60, 50, [torch.float32, torch.float16])
    check_nms(asan, (1, 65, 300), groups=5)
    check_soft_nms(asan, 300, groups=3)
    check_fixed(asan, (1, 65, 300), groups=3)
    check_chip_cover(asan, groups=30, per_group=(0, 30))
    check_focus_chips(asan, maps=12, h=40, w=47)
    check_label_anchors(asan, (8, 8), chips=3, g=140, dtypes=[torch.float32, torch.bfloat16])
    check_deform(asan, [torch.float32, torch.float64])
    check_roi_pool(asan, [torch.float32, torch.float64])


def test_asan_reports_an_out_of_bounds_write():
    harness("asan")
    with Sim(mode="asan") as s, pytest.raises(SanitizerError, match=r"(?s)heap-buffer-overflow.*overrun_kernel"):
        s.call("selftest_overrun", [torch.zeros(100, dtype=torch.int32)], [100])


def test_ubsan_reports_signed_overflow():
    harness("asan")
    with Sim(mode="asan") as s, pytest.raises(SanitizerError, match=r"(?s)signed integer overflow.*overflow_kernel"):
        s.call("selftest_overflow", [torch.zeros(32, dtype=torch.int32)], [2**31 - 8])


def test_asan_clean_after_a_barrier_error():
    # An error abandons fibers mid-kernel; their stacks must be usable again.
    harness("asan")
    with Sim(mode="asan", order="random") as s:
        for _ in range(2):
            with pytest.raises(SimError, match="exited while"):
                s.call("selftest_barrier_partial", [torch.zeros(256, dtype=torch.int32)], [])
            check_soft_nms(s, 100, groups=2, methods=(0,))


# -- ThreadSanitizer (real threads) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tsan():
    harness("tsan")
    s = Sim(mode="tsan", timeout=900)
    yield s
    s.close()


def test_tsan_launchers(tsan):
    check_box_iou(tsan, 20, 12, [torch.float32])
    check_nms(tsan, (70,), groups=3)
    check_soft_nms(tsan, 40, groups=2, methods=(0,))
    check_fixed(tsan, (70,), groups=2, caps=(5,), large_paths=False)
    check_chip_cover(tsan, groups=3, per_group=(4, 12))
    check_focus_chips(tsan, maps=2, h=9, w=11)
    check_label_anchors(tsan, (4, 4), chips=2, g=10, dtypes=[torch.float32])
    check_deform(tsan, [torch.float32], n=1, c=2, h=5, w=5, oc=2, groups=1, og=1)
    check_roi_pool(tsan, [torch.float32])


@pytest.mark.parametrize(
    "name, args, pattern",
    [
        ("selftest_count", [1, 64, 0], r"(?s)data race.*count_kernel"),
        ("selftest_neighbour", [1, 0], r"(?s)data race.*neighbour_kernel"),
        ("selftest_two_sums", [0], r"(?s)data race.*BlockReduce"),
    ],
)
def test_tsan_reports_races(name, args, pattern):
    harness("tsan")
    bufs = {
        "selftest_count": [torch.zeros(1, dtype=torch.int32)],
        "selftest_neighbour": [torch.randn(256), torch.zeros(256)],
        "selftest_two_sums": [torch.arange(512, dtype=torch.int32), torch.zeros(2, dtype=torch.int32)],
    }[name]
    with Sim(mode="tsan") as s:
        fixed = list(args)
        fixed[-1] = 1  # the correct twin (atomic / with the barrier) is clean
        s.call(name, [b.clone() for b in bufs], fixed)
        with pytest.raises(SanitizerError, match=pattern):
            s.call(name, bufs, args)


def test_tsan_barrier_errors_are_reported_with_threads():
    harness("tsan")
    with Sim(mode="tsan") as s:
        with pytest.raises(SimError, match=r"exited while thread \(\d+,0,0\) waits at __syncthreads\(\) at "):
            s.call("selftest_barrier_partial", [torch.zeros(256, dtype=torch.int32)], [])
        with pytest.raises(SimError, match="threads wait at different barriers"):
            s.call("selftest_barrier_mismatch", [torch.zeros(256, dtype=torch.int32)], [])
        check_nms(s, (20,), groups=2)  # and the pool still works


def test_tsan_finds_plain_add_in_chip_cover():
    harness("tsan")
    boxes, gid, canvas = chip_cover_tests._random_problem(200, groups=2, per_group=(8, 12))
    with (
        Sim(mode="tsan", variant="chip_cover_plain_add") as s,
        pytest.raises(SanitizerError, match=r"(?s)data race.*cover_kernel"),
    ):
        s.greedy_chip_cover(boxes, gid, canvas, 512, 32, None)


def test_tsan_finds_plain_add_in_roi_align_backward():
    harness("tsan")
    x, rois, _ = roi_pool_tests._random(8, torch.float32)
    n, c, h, w = x.shape
    grad = torch.ones(rois.shape[0], c, 3, 2)
    with (
        Sim(mode="tsan", variant="roi_pool_plain_add") as s,
        pytest.raises(SanitizerError, match=r"(?s)data race.*input_grad_kernel"),
    ):
        s.roi_align_backward(grad, rois, 0.5, 3, 2, n, c, h, w, 2, True)
