"""The harness itself: the launch rewrite, the host CUB stand-ins, the CUDA
registrations run through it, and that deliberately broken kernels (small ones
in kernels/selftest.cu, patched copies of the project's kernels and
registrations in variants.py) fail under it."""

import math
import struct

import pytest
import test_greedy_chip_cover as chip_cover_tests
import torch
from common_utils import random_boxes

from sniper_ext import modeling

from . import build
from .conftest import ORDERS, assert_bitwise, harness
from .sim import Sim, SimError

ops = torch.ops.sniper


def sims(**kw):
    harness()
    return [Sim(order=o, reduce=r, seed=77, **kw) for o, r in ORDERS]


# -- the <<< >>> rewrite -------------------------------------------------------------------------


def test_rewrite_keeps_lines_and_handles_templates_comments_and_shifts():
    src = (
        "// a comment with k<<<1, 2>>>(x) in it\n"
        "void f() {\n"
        '  const char* s = "not <<< a launch";\n'
        "  ns::kern<T, A><<<blocks_for(n, 256, 1 << 20), dim3(8, 8),\n"
        "                  0, static_cast<cudaStream_t>(stream)>>>(a, b,\n"
        "      c);  /* <<<x>>>() */\n"
        "  other<<<1, 32>>>();\n"
        "}\n"
    )
    out, n = build.rewrite_launches(src, "x.cu")
    assert n == 2
    lines = out.split("\n")
    assert lines[0] == '#line 1 "x.cu"' and len(lines) == len(src.split("\n")) + 1
    assert lines[4].startswith(
        '  ::sim::launch(::sim::Site{"ns::kern<T, A>", __FILE__, __LINE__}, '
        "::sim::cfg(blocks_for(n, 256, 1 << 20), dim3(8, 8),"
    )
    assert "[](auto&&... sim_a) { ns::kern<T, A>(sim_a...); }, a, b," in lines[5]
    assert lines[6] == "      c);  /* <<<x>>>() */"
    assert lines[7] == (
        '  ::sim::launch(::sim::Site{"other", __FILE__, __LINE__}, ::sim::cfg(1, 32), '
        "[](auto&&... sim_a) { other(sim_a...); });"
    )
    assert "not <<< a launch" in out and "k<<<1, 2>>>(x)" in out  # comments and strings untouched


@pytest.mark.parametrize("bad", ["  <<<1, 2>>>(x);\n", "k<<<1, 2(x);\n", "k<<<1, 2>>> x;\n"])
def test_rewrite_fails_loudly(bad):
    with pytest.raises(build.BuildError, match="bad.cu:1: cannot rewrite"):
        build.rewrite_launches(bad, "bad.cu")


def test_every_kernel_file_is_rewritten():
    for name, text in build._kernel_sources().items():
        out, n = build.rewrite_launches(text, name)
        assert "<<<" not in build._mask_comments_and_strings(out)
        if name.endswith(".cu"):
            assert n > 0, f"{name} launches no kernel?"


def test_variant_patch_that_no_longer_matches_fails_loudly():
    with pytest.raises(build.BuildError, match="variant v: pattern .* matched 0 times in nms_kernel.cu"):
        build.apply_patches("v", build._kernel_sources(), (build.Patch("nms_kernel.cu", "no such code", ""),))


# -- host CUB ------------------------------------------------------------------------------------


def _twiddle(v, fmt, bits):
    u = struct.unpack(bits, struct.pack(fmt, v))[0]
    width = 8 * struct.calcsize(bits)
    high = 1 << (width - 1)
    if fmt in ("<f", "<d"):
        if u == high:
            u = 0  # -0.0 sorts as +0.0
        return (~u & ((1 << width) - 1)) if u & high else u ^ high
    return u ^ high  # signed integers


@pytest.mark.parametrize("key", ["float32", "float64", "int64"])
@pytest.mark.parametrize("descending", [False, True])
def test_radix_sort_order_and_stability(key, descending):
    harness()
    s = Sim()
    nan = float("nan")
    if key == "int64":
        keys = torch.tensor([5, -3, 0, 7, -3, 5, -(2**62), 2**62, 0] * 3, dtype=torch.int64)
        fmt, bits = "<q", "<Q"
    else:
        dt = getattr(torch, key)
        vals = [1.5, -0.0, 0.0, -2.0, math.inf, -math.inf, nan, 1.5, -0.0, 3.0, -nan, 0.0]
        keys = torch.tensor(vals * 3, dtype=dt)
        keys[5] = -keys[5]  # vary a few
        fmt, bits = ("<f", "<I") if key == "float32" else ("<d", "<Q")
    n = keys.numel()
    vals_in = torch.arange(n, dtype=torch.int64)
    keys_out, vals_out = s.empty((n,), keys.dtype), s.empty((n,), torch.int64)
    s.call(
        "selftest_sort_pairs",
        [keys, keys_out, vals_in, vals_out],
        [n, {"float32": 0, "float64": 1, "int64": 2}[key], int(descending), 0, 8 * keys.element_size()],
    )
    tw = [_twiddle(v, fmt, bits) for v in keys.tolist()]
    # Independent reference: Python's sort is stable; descending = stable on the negated key.
    want = sorted(range(n), key=lambda i: -tw[i] if descending else tw[i])
    assert vals_out.tolist() == want
    assert_bitwise(keys_out, keys[torch.tensor(want)], "keys")


def test_radix_sort_bit_range():
    harness()
    s = Sim()
    keys = torch.tensor([0x1F0, 0x0F1, 0x2F2, 0x1F3, 0x0F4], dtype=torch.int64)
    vals = torch.arange(5, dtype=torch.int64)
    ko, vo = s.empty((5,), torch.int64), s.empty((5,), torch.int64)
    s.call("selftest_sort_pairs", [keys, ko, vals, vo], [5, 2, 0, 8, 12])  # bits 8..11 only
    assert vo.tolist() == [1, 4, 0, 3, 2]


def test_select_and_scan():
    harness()
    s = Sim()
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 100):
        items = torch.randint(-50, 50, (n,), generator=g, dtype=torch.int64)
        flags = (torch.rand(n, generator=g) < 0.4).to(torch.uint8)
        out, count, scan = s.empty((n,), torch.int64), s.empty((1,), torch.int32), s.empty((n,), torch.int64)
        s.call("selftest_select_scan", [items, flags, out, count, scan], [n])
        k = int(count)
        assert k == int(flags.sum()) and out[:k].tolist() == items[flags.bool()].tolist()
        assert scan.tolist() == [sum(items[:i].tolist()) for i in range(n)]


# -- deliberately broken kernels -----------------------------------------------------------------


def test_barrier_reached_by_part_of_the_block_is_reported():
    for s in sims():
        with pytest.raises(
            SimError,
            match=r"barrier_partial_kernel launched at .*selftest\.cu:\d+, block \(0,0,0\): "
            r"thread \(\d+,0,0\) exited while thread \(\d+,0,0\) waits at "
            r"__syncthreads\(\) at .*selftest\.cu:\d+",
        ):
            s.call("selftest_barrier_partial", [s.empty((256,), torch.int32)], [])


def test_threads_at_different_barriers_are_reported():
    for s in sims():
        with pytest.raises(
            SimError,
            match=r"threads wait at different barriers: thread \(\d+,0,0\) at "
            r".*selftest\.cu:(\d+), thread \(\d+,0,0\) at .*selftest\.cu:(?!\1)\d+",
        ):
            s.call("selftest_barrier_mismatch", [s.empty((256,), torch.int32)], [])


def test_uninitialised_shared_memory_reads_poison():
    for s in sims(poison=0x5A):
        out = torch.zeros(256, dtype=torch.int32)
        s.call("selftest_shared_uninit", [out], [])
        assert out[0].item() == 0x5A5A5A5A and out[1:].tolist() == list(range(1, 256))


def test_missing_barrier_is_caught_by_some_order_only():
    x = torch.randn(3 * 256, generator=torch.Generator().manual_seed(1))
    want = torch.cat([torch.cat([b[:1], b[:-1]]) for b in x.view(3, 256)])
    caught = {}
    for s in sims():
        for sync in (1, 0):
            out = torch.zeros_like(x)
            s.call("selftest_neighbour", [x, out], [3, sync])
            if sync:
                assert torch.equal(out, want), s  # the correct kernel passes in every order
            else:
                caught[s.order] = not torch.equal(out, want)
    # Forward order runs each left neighbour first and misses the bug.
    assert caught == {"forward": False, "reverse": True, "random": True}


def test_plain_increment_is_invisible_to_fibers():
    # Fibers run uninterrupted between barriers, so a racy += gives the right
    # count in every order: this is what the ThreadSanitizer build is for.
    for s in sims():
        for atomic in (1, 0):
            counter = torch.zeros(1, dtype=torch.int32)
            s.call("selftest_count", [counter], [4, 128, atomic])
            assert counter.item() == 512


def test_order_dependent_reduction_operator_is_caught_by_random_reduce_order():
    x = torch.tensor([1.0, 5.0, 3.0, 5.0, 2.0, 5.0] * 100)  # max 5.0 at 1, 3, 5, ...
    results = {}
    for s in sims():
        for full in (1, 0):
            out = torch.full((1,), -1, dtype=torch.int32)
            for _ in range(3):  # random order: a few draws
                s.call("selftest_argmax", [x, out], [x.numel(), full])
                if full:
                    assert out.item() == 1, s
                elif out.item() != 1:
                    results[s.reduce] = True
    assert results == {"random": True}


def test_temp_storage_reuse_without_barrier_is_caught():
    x = torch.arange(512, dtype=torch.int32)
    want = [sum(range(256)), sum(range(256, 512))]
    bad = {}
    for s in sims():
        for sync in (1, 0):
            out = torch.zeros(2, dtype=torch.int32)
            s.call("selftest_two_sums", [x, out], [sync])
            if sync:
                assert out.tolist() == want, s
            else:
                bad[s.order] = out.tolist() != want
    assert bad == {"forward": False, "reverse": True, "random": True}


def test_launch_configuration_is_checked():
    harness()
    s = Sim()
    with pytest.raises(SimError, match=r"count_kernel.*block \(2048,1,1\) exceeds CUDA's limits"):
        s.call("selftest_count", [torch.zeros(1, dtype=torch.int32)], [1, 2048, 1])
    with pytest.raises(SimError, match=r"empty launch configuration"):
        s.call("selftest_count", [torch.zeros(1, dtype=torch.int32)], [0, 32, 1])
    # The harness recovers: the next launch runs normally.
    c = torch.zeros(1, dtype=torch.int32)
    s.call("selftest_count", [c], [2, 32, 1])
    assert c.item() == 64


# -- patched copies of the project's kernels -------------------------------------------------------


def _soft_nms_case():
    g = torch.Generator().manual_seed(12)
    boxes = random_boxes(600, generator=g, dtype=torch.float32)
    scores = torch.rand(600, generator=g)
    return boxes, scores, torch.randint(0, 3, (600,), generator=g)


def test_soft_nms_without_its_barrier_is_caught():
    boxes, scores, idxs = _soft_nms_case()
    want = ops.soft_nms(boxes, scores, idxs, 0, 0.5, 0.3, 1e-3)
    failed = {}
    for s in sims(variant="soft_nms_missing_barrier"):
        try:
            got = s.soft_nms(boxes, scores, idxs, 0, 0.5, 0.3, 1e-3)
            failed[s.order] = not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]))
        except SimError:
            failed[s.order] = True
    assert failed["reverse"] and failed["random"], failed


def test_nms_walk_without_its_barrier_is_caught():
    g = torch.Generator().manual_seed(11)
    boxes, scores = random_boxes(1000, generator=g), torch.rand(1000, generator=g, dtype=torch.float64)
    want = ops.nms(boxes, scores, 0.5)
    failed = {
        s.order: not torch.equal(s.nms(boxes, scores, 0.5), want) for s in sims(variant="nms_walk_missing_barrier")
    }
    assert failed["reverse"] and failed["random"], failed


def test_chip_cover_with_order_dependent_tiebreak_is_caught():
    boxes, gid, canvas = chip_cover_tests._random_problem(200, groups=300, per_group=(0, 30))
    want = ops.greedy_chip_cover(boxes, gid, canvas, 512, 32, None)
    failed = {}
    for s in sims(variant="chip_cover_broken_tiebreak"):
        got = s.greedy_chip_cover(boxes, gid, canvas, 512, 32, None)
        failed[s.reduce] = not all(torch.equal(a, b) for a, b in zip(got, want))
    assert failed["random"], failed


# -- the CUDA registration code (csrc/ops/cuda/*_cuda.cpp) ------------------------------------------


def test_ops_run_the_cuda_registrations():
    """The fiber mode calls the ops through the CUDA registration code: its entry points' checks
    (the messages of the CPU op), empty-input returns, and what it passes to the launchers."""
    harness()
    s = Sim()
    assert s._ops is torch.ops.sniper_sim  # the harness library registered the ops there
    with pytest.raises(SimError, match=r"nms: `scores` must have shape \[2\]"):
        s.nms(torch.zeros(2, 4), torch.zeros(3), 0.5)
    with pytest.raises(SimError, match=r"label_anchors: `gt_boxes` must have shape \[B, G, 4\]"):
        s.label_anchors(
            torch.zeros(1, 4),
            torch.zeros(1, 4),
            torch.zeros(1, 1, dtype=torch.int8),
            torch.ones(1, 2),
            0.5,
            0.4,
            0.3,
            32.0,
        )
    keep, scores = s.soft_nms(torch.zeros(0, 4), torch.zeros(0), None, 1, 0.5, 0.3, 1e-3)
    assert keep.shape == scores.shape == (0,) and keep.dtype == torch.int64
    # Outputs come from torch's allocator, poisoned while the registration runs.
    chips, chip_group, box_chip = s.greedy_chip_cover(
        torch.tensor([[1.0, 1, 9, 9]]), torch.tensor([0]), torch.full((1, 2), 600.0), 512, 32, None
    )
    assert chips.tolist() == [[0.0, 0.0, 512.0, 512.0]] and chip_group.tolist() == [0] and box_chip.tolist() == [0]


def test_registration_bug_is_caught():
    anchors = modeling.make_anchors((8, 8), stride=16, scales=(1, 2, 4))
    gen = torch.Generator().manual_seed(3)
    gt = torch.stack([random_boxes(20, generator=gen, canvas=128, max_size=90) for _ in range(3)]).float()
    state = torch.randint(-1, 2, (3, 20), generator=gen, dtype=torch.int8)
    canvas = torch.full((3, 2), 128.0)
    args = (anchors, gt, state, canvas, 0.6, 0.3, 0.3, 8.0)
    want = ops.label_anchors(*args)
    for s in sims():
        got = s.label_anchors(*args)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), s
    for s in sims(variant="label_anchors_registration_swaps_thresholds"):
        assert not torch.equal(s.label_anchors(*args)[0], want[0]), s
