import math

import pytest
import reference as ref
import torch
from common_utils import ALL_DTYPES, DEVICES, requires_cuda
from fuzz.values import Arg, tensor_arg
from op_tester import OpTester, Sample

from sniper_ext import ops


def art(*rows, value=0.9):
    """A map from rows of '#' (value) and '.' (0)."""
    return torch.tensor([[value if c == "#" else 0.0 for c in r] for r in rows], dtype=torch.float64)


# Two blobs and a lone cell; the chips below were worked out by hand (README of the test: the
# docstring of test_hand_computed).
HAND = art(
    "........",
    ".#......",
    "........",
    ".....##.",
    "........",
    ".......#",
)
# A ring with a blob inside it: two components, the blob's box inside the ring's.
RING = art(
    "..........",
    ".#######..",
    ".#.....#..",
    ".#..#..#..",
    ".#.....#..",
    ".#######..",
    "..........",
)
# Four lone cells: with min_size 3 and no dilation their boxes merge in three rounds (the middle two,
# then the lower one, then the upper-left one; each union touches a box none of its parts touched).
CHAIN = art(
    "..............",
    "...#..........",
    "........#.....",
    "..............",
    "..............",
    "..........#...",
    "..............",
    "..............",
    "..............",
    ".....#........",
)
# Two cells 6 apart: separate, until min_size 6 grows them into each other.
PAIR = art(
    "..............",
    "..............",
    "..#.....#.....",
    "..............",
    "..............",
    "..............",
)


def blobs(b, h, w, seed, per_map=(1, 4), sigma=(1.0, 4.0), dtype=torch.float64):
    """Realistic sparse FocusPixel maps: a few Gaussian blobs (peak 1) per map."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.arange(h, dtype=torch.float64).view(h, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, w)
    prob = torch.zeros(b, h, w, dtype=torch.float64)
    for i in range(b):
        for _ in range(int(torch.randint(per_map[0], per_map[1] + 1, (1,), generator=g))):
            cy, cx = float(torch.rand(1, generator=g)) * h, float(torch.rand(1, generator=g)) * w
            s = sigma[0] + float(torch.rand(1, generator=g)) * (sigma[1] - sigma[0])
            prob[i] = torch.maximum(prob[i], torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    return prob.to(dtype)


def random_sizes(b, h, w, g, full=0.3):
    sizes = torch.stack([torch.randint(0, h + 1, (b,), generator=g), torch.randint(0, w + 1, (b,), generator=g)], 1)
    whole = torch.rand(b, generator=g) < full
    sizes[whole] = torch.tensor([h, w])
    return sizes


def padded(maps, pad_value=1.0):
    """[H, W] maps -> (prob [B, H, W] padded with pad_value, sizes [B, 2])."""
    h = max(m.shape[0] for m in maps)
    w = max(m.shape[1] for m in maps)
    prob = torch.full((len(maps), h, w), pad_value, dtype=torch.float64)
    for i, m in enumerate(maps):
        prob[i, : m.shape[0], : m.shape[1]] = m
    return prob, torch.tensor([list(m.shape) for m in maps], dtype=torch.int64)


def full_sizes(prob):
    return torch.tensor([[prob.shape[1], prob.shape[2]]], dtype=torch.int64, device=prob.device).expand(
        prob.shape[0], 2
    )


def reference(prob, sizes=None, threshold=0.5, dilation=3, min_size=16):
    """ref.focus_chips on the op's arguments (tensors, a 2-D prob, sizes None) -> int64 [N, 5]."""
    if prob.dim() == 2:
        prob = prob[None]
        sizes = None if sizes is None else sizes.reshape(1, 2)
    sizes = full_sizes(prob) if sizes is None else sizes
    rows = ref.focus_chips(prob.double().tolist(), sizes.tolist(), threshold, dilation, min_size)
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 5)


def focus_fuzz_args(ctx, target):
    """A random valid call of focus_chips (the wrapper: sometimes sizes None; the raw op: a tensor)."""
    dt = ctx.dtype()
    b, h, w = ctx.n(4), ctx.n(12, p0=0.1), ctx.n(12, p0=0.1)
    prob = torch.rand(b, h, w, generator=ctx.gen, dtype=torch.float64)
    if ctx.rng.random() < 0.5:  # sparse: isolated cells and small blobs
        prob = (prob < 0.08).double() * (0.5 + prob * 5)
    sizes = random_sizes(b, h, w, ctx.gen)
    sizes_arg = tensor_arg("sizes", sizes.to(ctx.device), "index", min(h, w) + 1)
    if target.startswith("ops.") and ctx.rng.random() < 0.3:
        sizes_arg.value = None
    return [
        tensor_arg("prob", ctx._to(prob, dt)),
        sizes_arg,
        Arg("threshold", ctx.rng.choice([0.5, 0.3, ctx.uniform(0.0, 1.0)]), "float"),
        Arg("dilation", ctx.rng.randint(1, 5), "int"),
        Arg("min_size", ctx.rng.randint(1, 10), "int"),
    ]


class TestFocusChips(OpTester):
    """sniper::focus_chips through ops.focus_chips: the chips, exactly the reference's, in every dtype."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.focus_chips", "raw.focus_chips")
    opcheck_samples = ("random maps", "padded batch, high padding")

    def fn(self, prob, sizes=None, threshold=0.5, dilation=3, min_size=16):
        return ops.focus_chips(prob, sizes, threshold, dilation, min_size)

    def expected_fn(self, prob, sizes=None, threshold=0.5, dilation=3, min_size=16):
        return reference(prob, sizes, threshold, dilation, min_size)

    def output_dtypes(self, dtype):
        return (torch.int64,)

    def sample_inputs(self, device, dtype):
        def sample(prob, sizes, *args, name):
            return Sample((prob, sizes, *args), name=name).to(device, dtype)

        g = torch.Generator().manual_seed(3)
        yield sample(HAND[None], None, 0.5, 1, 3, name="hand example")
        yield sample(torch.rand(3, 20, 24, generator=g, dtype=torch.float64), None, 0.75, 3, 5, name="random maps")
        yield sample(blobs(3, 30, 41, seed=1), None, 0.5, 3, 16, name="sparse blobs")
        prob, sizes = padded([blobs(1, 17, 30, seed=2)[0], blobs(1, 25, 12, seed=3)[0], HAND])
        yield sample(prob, sizes, 0.5, 3, 8, name="padded batch, high padding")
        prob = torch.rand(4, 9, 11, generator=g, dtype=torch.float64)
        sizes = torch.tensor([[0, 11], [9, 0], [0, 0], [6, 7]])
        yield sample(prob, sizes, 0.4, 2, 4, name="sizes with 0")
        two = torch.stack([torch.zeros(8, 10, dtype=torch.float64), torch.ones(8, 10, dtype=torch.float64)])
        yield sample(two, None, 0.5, 3, 16, name="all zero and all one")
        yield sample(torch.tensor([[[0.2]], [[0.7]], [[float("nan")]]]), None, 0.5, 3, 16, name="1x1 maps")
        yield sample(torch.stack([RING, CHAIN[:7, :10]]), None, 0.5, 1, 1, name="ring around a blob")
        yield sample(CHAIN[None], None, 0.5, 1, 3, name="chain merging in three rounds")
        yield sample(PAIR[None], None, 0.5, 1, 6, name="touching after growth")
        one = blobs(1, 14, 18, seed=4)
        yield sample(
            one.expand(4, 14, 18), torch.tensor([[14, 18], [7, 18], [14, 5], [3, 3]]), 0.3, 4, 6, name="expanded maps"
        )
        nan = torch.rand(2, 12, 13, generator=g, dtype=torch.float64)
        nan[nan < 0.3] = float("nan")
        yield sample(nan, None, 0.6, 2, 3, name="NaN cells")
        yield sample(
            torch.zeros(0, 5, 6, dtype=torch.float64),
            torch.zeros(0, 2, dtype=torch.int64),
            0.5,
            3,
            16,
            name="empty batch",
        )
        yield sample(blobs(1, 23, 19, seed=5)[0], None, 0.5, 6, 40, name="one 2-D map, even dilation, min_size > map")

    def raw_calls(self, sample):
        prob, sizes, threshold, dilation, min_size = sample.args
        if prob.dim() == 2:
            prob = prob[None]
        sizes = full_sizes(prob) if sizes is None else sizes
        return [(torch.ops.sniper.focus_chips.default, (prob, sizes, threshold, dilation, min_size))]

    def fuzz_args(self, ctx, target):
        return focus_fuzz_args(ctx, target)


def test_hand_computed():
    """HAND with threshold 0.5, no dilation, min_size 3 (so 3 x 3 chips at least): components A = (1, 1),
    B = (3, 5)-(3, 6), C = (5, 7) (y, x). Grown: A -> x [0, 3), y [0, 3); B -> x [5 - 0, 8), y [3 - 1, 5);
    C -> x [6, 9) shifted to [5, 8), y [4, 7) shifted to [3, 6). B and C overlap: one chip x [5, 8),
    y [2, 6). With dilation 3 B and C are one component from the start, x [4, 8), y [2, 6)."""
    assert ops.focus_chips(HAND, threshold=0.5, dilation=1, min_size=3).tolist() == [[0, 0, 0, 3, 3], [0, 5, 2, 8, 6]]
    assert ops.focus_chips(HAND, threshold=0.5, dilation=3, min_size=3).tolist() == [[0, 0, 0, 3, 3], [0, 4, 2, 8, 6]]
    # Below 0.9 nothing is on.
    assert ops.focus_chips(HAND, threshold=0.95).shape == (0, 5)


def test_nested_touching_and_chains():
    assert ops.focus_chips(RING, dilation=1, min_size=1).tolist() == [[0, 1, 1, 8, 6]]
    # Without growth the four cells stay apart; with min_size 3 they end up one chip after three rounds.
    assert len(ops.focus_chips(CHAIN, dilation=1, min_size=1)) == 4
    assert ops.focus_chips(CHAIN, dilation=1, min_size=3).tolist() == [[0, 2, 0, 12, 10]]
    assert ops.focus_chips(PAIR, dilation=1, min_size=4).tolist() == [[0, 1, 1, 5, 5], [0, 7, 1, 11, 5]]
    assert ops.focus_chips(PAIR, dilation=1, min_size=6).tolist() == [[0, 0, 0, 12, 6]]


def check_invariants(prob, sizes, threshold, dilation, min_size, chips):
    """What every result must satisfy, independently of the reference: chips inside their map's valid
    region, at least min(min_size, side) on each side, pairwise neither overlapping nor 8-adjacent,
    sorted, and covering every on cell."""
    rows = chips.tolist()
    assert rows == sorted(rows, key=lambda r: (r[0], r[2], r[1], r[4], r[3]))
    for b, (h, w) in enumerate(sizes.tolist()):
        mine = [r[1:] for r in rows if r[0] == b]
        for x1, y1, x2, y2 in mine:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert x2 - x1 >= min(min_size, w) and y2 - y1 >= min(min_size, h)
        for i, a in enumerate(mine):
            for c in mine[i + 1 :]:
                assert not (a[0] <= c[2] and c[0] <= a[2] and a[1] <= c[3] and c[1] <= a[3]), (b, a, c)
        covered = torch.zeros(h, w, dtype=torch.bool)
        for x1, y1, x2, y2 in mine:
            covered[y1:y2, x1:x2] = True
        on = prob[b, :h, :w].double() >= threshold
        assert not bool((on & ~covered).any()), b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "threshold, dilation, min_size",
    # dilation 32 is the CPU kernel's longest direct window, 33 the first with prefix counts
    [(0.5, 3, 16), (0.5, 1, 1), (0.3, 2, 5), (0.8, 5, 3), (0.5, 4, 30), (0.1, 1, 7), (0.95, 3, 2), (0.97, 32, 3)]
    + [(0.97, 33, 2), (0.99, 50, 1)],
)
def test_random_maps_against_reference(device, threshold, dilation, min_size):
    g = torch.Generator().manual_seed(dilation * 100 + min_size)
    for trial in range(6):
        b, h, w = 3, int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
        if trial % 2:
            prob = torch.rand(b, h, w, generator=g, dtype=torch.float64) ** 3
        else:
            prob = blobs(b, h, w, seed=trial, sigma=(0.5, 3.0))
        sizes = random_sizes(b, h, w, g)
        got = ops.focus_chips(prob.to(device), sizes.to(device), threshold, dilation, min_size).cpu()
        assert torch.equal(got, reference(prob, sizes, threshold, dilation, min_size)), (trial, h, w)
        check_invariants(prob, sizes, threshold, dilation, min_size, got)


def test_many_boxes_take_the_painting_path():
    """Hundreds of isolated cells per map (more than the CPU kernel merges pairwise)."""
    g = torch.Generator().manual_seed(8)
    prob = (torch.rand(2, 90, 110, generator=g, dtype=torch.float64) < 0.04).double()
    for dilation, min_size in ((1, 1), (1, 2), (1, 3), (2, 2)):
        got = ops.focus_chips(prob, None, 0.5, dilation, min_size)
        assert torch.equal(got, reference(prob, None, 0.5, dilation, min_size)), (dilation, min_size)
        check_invariants(prob, full_sizes(prob), 0.5, dilation, min_size, got)
    assert len(ops.focus_chips(prob, None, 0.5, 1, 1)) > 400


def test_padding_never_produces_chips():
    prob, sizes = padded([torch.zeros(5, 7, dtype=torch.float64), torch.zeros(20, 3, dtype=torch.float64)])
    assert prob.max() == 1.0  # everything outside the valid regions is on
    assert ops.focus_chips(prob, sizes, 0.5, 5, 4).shape == (0, 5)
    # Dilation and growth stay inside the valid region; chips near its edge are shifted in.
    prob[0, 4, 6] = 0.9
    assert ops.focus_chips(prob, sizes, 0.5, 5, 4).tolist() == [[0, 3, 1, 7, 5]]
    assert ops.focus_chips(prob, torch.zeros(2, 2, dtype=torch.int64), 0.5, 5, 4).shape == (0, 5)


def test_two_dimensional_prob_and_sizes():
    m = blobs(1, 20, 30, seed=9)[0]
    want = reference(m[None], torch.tensor([[12, 30]]), 0.5, 3, 8)
    assert torch.equal(ops.focus_chips(m, torch.tensor([12, 30]), 0.5, 3, 8), want)
    assert torch.equal(ops.focus_chips(m, torch.tensor([[12, 30]]), 0.5, 3, 8), want)
    assert torch.equal(ops.focus_chips(m), ops.focus_chips(m[None], torch.tensor([[20, 30]])))


def test_thousands_of_maps():
    g = torch.Generator().manual_seed(11)
    b, h, w = 4000, 10, 13
    prob = torch.rand(b, h, w, generator=g, dtype=torch.float64)
    prob = torch.where(prob < 0.04, 0.5 + prob, prob * 0.2)
    sizes = random_sizes(b, h, w, g, full=0.5)
    got = ops.focus_chips(prob.float(), sizes, 0.5, 3, 4)
    assert torch.equal(got, reference(prob.float(), sizes, 0.5, 3, 4))
    assert len(torch.unique(got[:, 0])) > 1000


@pytest.mark.slow
def test_huge_sparse_map():
    """3000 x 3000 cells (9e6), a few hundred lone cells, a blob and a dotted line along the bottom
    edge; the reference starts from the on cells (found with torch: the threshold test is trivial, a
    Python loop over 9e6 cells is not)."""
    g = torch.Generator().manual_seed(5)
    h = w = 3000
    prob = torch.zeros(1, h, w)
    prob.view(-1)[torch.randint(0, h * w, (300,), generator=g)] = 0.9
    prob[0, 100:140, 2000:2100] = 0.8
    prob[0, h - 10 :, 0:w:7] = 0.7
    got = ops.focus_chips(prob, None, 0.5, 3, 16)
    on = {(y, x) for y, x in (prob[0] >= 0.5).nonzero().tolist()}
    assert got.tolist() == [[0, *c] for c in ref.focus_chips_from_cells(on, h, w, 3, 16)]
    assert len(got) > 250


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dtypes_agree_where_values_are_exact(dtype):
    prob = blobs(5, 33, 47, seed=12)
    prob = (prob * 8).round() / 8  # exact in every dtype
    want = ops.focus_chips(prob, None, 0.5, 3, 10)
    assert torch.equal(ops.focus_chips(prob.to(dtype), None, 0.5, 3, 10), want)


def test_huge_dilation_and_min_size():
    m = torch.zeros(1, 7, 9)
    m[0, 3, 4] = 1.0
    assert ops.focus_chips(m, None, 0.5, 2**62, 1).tolist() == [[0, 0, 0, 9, 7]]
    assert ops.focus_chips(m, None, 0.5, 1, 2**62).tolist() == [[0, 0, 0, 9, 7]]
    assert torch.ops.sniper.focus_chips(m, full_sizes(m), 0.5, 2**63 - 1, 2**63 - 1).tolist() == [[0, 0, 0, 9, 7]]


def test_threshold_edges():
    m = torch.tensor([[[0.5, float("nan"), float("-inf"), float("inf")]]])
    assert ops.focus_chips(m, None, 0.5, 1, 1).tolist() == [[0, 0, 0, 1, 1], [0, 3, 0, 4, 1]]
    assert ops.focus_chips(m, None, -1e300, 1, 1).tolist() == [[0, 0, 0, 1, 1], [0, 3, 0, 4, 1]]  # NaN stays off
    assert ops.focus_chips(m, None, 1e300, 1, 1).tolist() == [[0, 3, 0, 4, 1]]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_threshold_between_representable_values(dtype):
    """The comparison is prob >= threshold in float64 whatever the dtype (the CPU kernel compares
    float types against the least float >= threshold, which must give the same cells)."""
    values = torch.tensor([0.1, 1 / 3, -2.5, 1e-30, 3e38, -3e38, float("inf"), float("-inf")]).to(dtype)
    m = torch.full((1, 1, 2 * len(values)), float("nan"), dtype=dtype)  # NaN is never on
    m[0, 0, ::2] = values  # isolated cells, one chip each when on
    for v in values.double().tolist():
        for t in (v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf), 1e39, -1e39):
            if not math.isfinite(t):
                continue
            want = [[0, 2 * i, 0, 2 * i + 1, 1] for i, u in enumerate(values.double().tolist()) if u >= t]
            assert ops.focus_chips(m, None, t, 1, 1).tolist() == want, (v, t)


B2 = torch.zeros(2, 4, 5)


@pytest.mark.parametrize(
    "args, kwargs, err, match",
    [
        ((torch.zeros(4),), {}, ValueError, r"focus_chips: `prob` must have shape \[B, H, W\] or \[H, W\], got \(4,\)"),
        ((torch.zeros(2, 3, 4, 5),), {}, ValueError, r"`prob` must have shape \[B, H, W\]"),
        (
            (torch.zeros(2, 4, 5, dtype=torch.int64),),
            {},
            TypeError,
            "focus_chips: `prob` must be float32, float64, float16 or bfloat16, got torch.int64",
        ),
        (([[0.5]],), {}, TypeError, "focus_chips: `prob` must be a torch.Tensor, got list"),
        (
            (B2, torch.zeros(3, 2, dtype=torch.int64)),
            {},
            ValueError,
            r"focus_chips: `sizes` must have shape \[2, 2\] \(valid height and width of each map\), got \(3, 2\)",
        ),
        (
            (B2, torch.zeros(2, 2, dtype=torch.int32)),
            {},
            TypeError,
            "focus_chips: `sizes` must be int64, got torch.int32",
        ),
        ((B2, torch.zeros(2, 2)), {}, TypeError, "`sizes` must be int64, got torch.float32"),
        ((B2, [[1, 2], [3, 4]]), {}, TypeError, "focus_chips: `sizes` must be a torch.Tensor, got list"),
        ((B2,), {"threshold": float("nan")}, ValueError, "focus_chips: `threshold` must be a finite number, got nan"),
        ((B2,), {"threshold": float("inf")}, ValueError, "`threshold` must be a finite number"),
        ((B2,), {"threshold": "0.5"}, TypeError, "focus_chips: `threshold` must be a number, got str"),
        ((B2,), {"dilation": 0}, ValueError, r"focus_chips: `dilation` must be an int in \[1, "),
        ((B2,), {"dilation": 2.0}, TypeError, "focus_chips: `dilation` must be an int, got float"),
        ((B2,), {"min_size": 0}, ValueError, r"focus_chips: `min_size` must be an int in \[1, "),
        ((B2,), {"min_size": True}, TypeError, "`min_size` must be an int, got bool"),
        (
            (torch.zeros(1, 1, 1).expand(1, 2**16, 2**15 + 1),),
            {},
            ValueError,
            r"at most 2\*\*31 - 1 cells \(H \* W\), got 65536 x 32769",
        ),
    ],
)
def test_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        ops.focus_chips(*args, **kwargs)


def test_sizes_out_of_range_are_refused_by_the_op():
    for sizes, bad in (
        ([[4, 5], [5, 5]], r"`sizes`\[1\] must lie in \[0, 4\] x \[0, 5\] .*, got \(5, 5\)"),
        ([[4, 6], [1, 1]], r"`sizes`\[0\] .*got \(4, 6\)"),
        ([[-1, 0], [1, 1]], r"`sizes`\[0\] .*got \(-1, 0\)"),
    ):
        with pytest.raises(RuntimeError, match="focus_chips: " + bad):
            ops.focus_chips(B2, torch.tensor(sizes))


def test_raw_op_checks():
    raw = torch.ops.sniper.focus_chips
    s = torch.tensor([[4, 5], [4, 5]])
    cases = [
        (
            (torch.zeros(4, 5), s[:1], 0.5, 3, 16),
            r"focus_chips: `prob` must have shape \[B, H, W\] \(a batch of probability maps\), got \[4, 5\]",
        ),
        ((B2.long(), s, 0.5, 3, 16), "focus_chips: `prob` must be a floating tensor .* got int64"),
        (
            (B2, s[:1], 0.5, 3, 16),
            r"focus_chips: `sizes` must have shape \[2, 2\] \(valid height and width of each map\), got \[1, 2\]",
        ),
        ((B2, s.int(), 0.5, 3, 16), "focus_chips: `sizes` must be int64, got int32"),
        ((B2, s, float("nan"), 3, 16), "focus_chips: `threshold` must be finite, got nan"),
        ((B2, s, 0.5, 0, 16), "focus_chips: `dilation` must be >= 1, got 0"),
        ((B2, s, 0.5, 3, -2), "focus_chips: `min_size` must be >= 1, got -2"),
        (
            (B2, torch.tensor([[4, 5], [0, 6]]), 0.5, 3, 16),
            r"focus_chips: `sizes`\[1\] must lie in \[0, 4\] x \[0, 5\]",
        ),
        (
            (torch.zeros(1, 1, 1).expand(1, 2**16, 2**15 + 1), torch.zeros(1, 2, dtype=torch.int64), 0.5, 3, 16),
            r"focus_chips: `prob` maps must have at most 2\^31-1 cells \(H \* W\), got 65536 x 32769",
        ),
        ((B2, None, 0.5, 3, 16), "focus_chips: `sizes` must be a tensor, got None"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            raw(*args)


def test_not_differentiable():
    prob = blobs(1, 10, 10, seed=1).requires_grad_()
    out = ops.focus_chips(prob)
    assert out.dtype == torch.int64 and not out.requires_grad


def cuda_problems():
    """The CUDA/CPU equality inputs (test_cuda_matches_cpu here, python_tests/cuda_sim/test_ops.py)."""
    g = torch.Generator().manual_seed(21)
    yield blobs(64, 88, 125, seed=0), None, 0.5, 3, 16
    prob = (torch.rand(2, 150, 170, generator=g, dtype=torch.float64) < 0.03).double()
    yield prob, None, 0.5, 1, 1  # > 1024 boxes: the kernel paints without the pairwise check
    yield prob, None, 0.5, 1, 3
    yield torch.rand(3, 64, 80, generator=g, dtype=torch.float64), None, 0.8, 2, 6
    prob = torch.rand(700, 12, 15, generator=g, dtype=torch.float64)
    yield torch.where(prob < 0.05, 0.9, 0.1), random_sizes(700, 12, 15, g), 0.5, 3, 4
    prob, sizes = padded([HAND, RING, CHAIN, PAIR])
    yield prob, sizes, 0.5, 1, 3


@requires_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_matches_cpu(dtype):
    for prob, sizes, *args in cuda_problems():
        p = prob.to(dtype)
        cpu = ops.focus_chips(p, sizes, *args)
        gpu = ops.focus_chips(p.cuda(), None if sizes is None else sizes.cuda(), *args)
        assert torch.equal(cpu, gpu.cpu())
