import math

import numpy as np
import pytest
import reference as ref
import torch
from common_utils import ALL_DTYPES, DEVICES, requires_cuda
from fuzz.values import Arg, tensor_arg
from op_tester import OpTester, Sample

from sniper_ext import ops
from sniper_ext.baselines import greedy_chip_cover_numpy


def _random_problem(seed, groups=6, per_group=(0, 25)):
    """Random groups with canvases from smaller than a chip to several chips, boxes from
    tiny to larger than a chip, some partly outside the canvas, some zero-area."""
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randint(150, 1800, (groups, 2), generator=g).double()
    boxes, gid = [], []
    for k in range(groups):
        n = int(torch.randint(per_group[0], per_group[1] + 1, (1,), generator=g))
        w, h = canvas[k]
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.stack([w, h]) * 1.05 - 10
        size = torch.rand(n, 2, generator=g, dtype=torch.float64) ** 3 * 600
        size[torch.rand(n, generator=g) < 0.05] = 0
        boxes.append(torch.cat([xy, xy + size], dim=1).round())
        gid.append(torch.full((n,), k, dtype=torch.int64))
    return torch.cat(boxes), torch.cat(gid), canvas


def _reference(boxes, gid, canvas, K=512, d=32, seed=None):
    chips, chip_group, box_chip = [], [], [-1] * len(boxes)
    for k in range(len(canvas)):
        members = [i for i in range(len(boxes)) if gid[i] == k]
        W, H = canvas[k]
        order = None if seed is None else ref.chip_order(seed, k, len(ref.chip_candidates(W, H, K, d)))
        c, bc = ref.greedy_chip_cover([boxes[i] for i in members], W, H, K, d, order)
        for i, ci in zip(members, bc):
            box_chip[i] = -1 if ci < 0 else len(chips) + ci
        chips += c
        chip_group += [k] * len(c)
    return chips, chip_group, box_chip


def chip_cover_fuzz_args(ctx):
    """A random valid call of greedy_chip_cover (raw op and wrapper alike)."""
    dt = ctx.dtype()
    g = ctx.n(4)
    n = ctx.n(20) if g else 0
    canvas = ctx.rand(g, 2, dtype=torch.float64, lo=50, hi=1500)
    group = ctx.ints(0, max(g, 1), n)
    wh = canvas.cpu()[group.cpu()] if n else torch.zeros(0, 2, dtype=torch.float64)
    xy = torch.rand(n, 2, generator=ctx.gen, dtype=torch.float64) * wh
    size = 1 + torch.rand(n, 2, generator=ctx.gen, dtype=torch.float64) * 200
    boxes = ctx._to(torch.cat([xy, xy + size], 1), dt)
    if ctx.rng.random() < 0.5:
        canvas = canvas.float()
    return [
        tensor_arg("boxes", boxes, "boxes"),
        tensor_arg("box_group", group, "index", g),
        tensor_arg("canvas_wh", canvas, "wh"),
        Arg("chip_size", ctx.rng.choice([64, 128, 256, 512]), "int"),
        Arg("stride", ctx.rng.choice([8, 16, 32, 64]), "int"),
        Arg("seed", None if ctx.rng.random() < 0.5 else ctx.rng.randrange(1 << 40), "opt_int"),
    ]


class TestGreedyChipCover(OpTester):
    """sniper::greedy_chip_cover through ops.greedy_chip_cover: chips, their groups and every box's chip,
    exactly the reference's (seeded orders included)."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.greedy_chip_cover", "raw.greedy_chip_cover")
    opcheck_samples = ("random problem 2", "random problem 2, seed 3")

    def fn(self, boxes, box_group, canvas_wh, chip_size=512, stride=32, seed=None):
        return ops.greedy_chip_cover(boxes, box_group, canvas_wh, chip_size, stride, seed)

    def expected_fn(self, boxes, box_group, canvas_wh, chip_size=512, stride=32, seed=None):
        chips, chip_group, box_chip = _reference(
            boxes.tolist(), box_group.tolist(), canvas_wh.tolist(), chip_size, stride, seed
        )
        return (
            torch.tensor(chips, dtype=torch.float64).reshape(-1, 4),
            torch.tensor(chip_group, dtype=torch.int64),
            torch.tensor(box_chip, dtype=torch.int64),
        )

    def output_dtypes(self, dtype):
        return (torch.float64 if dtype == torch.float64 else torch.float32, torch.int64, torch.int64)

    def sample_inputs(self, device, dtype):
        def sample(boxes, gid, canvas, *args, name):
            return Sample((boxes, gid, canvas, *args), name=name).to(device, dtype)

        one = torch.zeros(1, dtype=torch.long)
        boxes = torch.tensor([[10.0, 10, 50, 50], [600, 600, 700, 700], [0, 0, 1000, 20], [900, 10, 950, 40]])
        yield sample(boxes, one.expand(4), torch.tensor([[1000.0, 800.0]]), name="hand example, expanded groups")
        for seed in (2, 5):
            yield sample(*_random_problem(seed), name=f"random problem {seed}")
        yield sample(*_random_problem(2), 512, 32, 3, name="random problem 2, seed 3")
        boxes, gid, canvas = _random_problem(43, groups=3)
        yield sample(boxes / 4, gid, canvas / 2, 100, 100, name="chip size 100, stride 100")
        two = torch.zeros(2, dtype=torch.long)
        canvas = torch.tensor([[300.0, 200.0]])
        yield sample(torch.tensor([[10.0, 10, 50, 50], [250, 150, 300, 200]]), two, canvas, name="canvas < chip")
        yield sample(torch.tensor([[880.0, 5, 899, 20]]), one, torch.tensor([[900.0, 100.0]]), name="one side short")
        yield sample(torch.zeros(0, 4), one[:0], torch.tensor([[640.0, 480.0]]), name="no boxes")
        yield sample(torch.zeros(0, 4), one[:0], torch.zeros(0, 2), name="no boxes, no groups")
        canvas = torch.full((1, 2), 600.0).expand(4, 2)
        yield sample(torch.tensor([[1.0, 1, 9, 9]]), torch.tensor([2]), canvas, name="expanded canvases")

    def raw_calls(self, sample):
        args = tuple(sample.args) + (512, 32, None)[len(sample.args) - 3 :]
        return [(torch.ops.sniper.greedy_chip_cover.default, args)]

    def fuzz_args(self, ctx, target):
        return chip_cover_fuzz_args(ctx)


def test_hand_example():
    boxes = torch.tensor([[10.0, 10, 50, 50], [600, 600, 700, 700], [0, 0, 1000, 20], [900, 10, 950, 40]])
    chips, chip_group, box_chip = ops.greedy_chip_cover(
        boxes, torch.zeros(4, dtype=torch.long), torch.tensor([[1000.0, 800.0]])
    )
    # x starts 0..480 by 32 then 488; y starts 0..256 by 32 then 288.
    assert chips.tolist() == [[0, 0, 512, 512], [448, 0, 960, 512], [192, 192, 704, 704]]
    assert chip_group.tolist() == [0, 0, 0]
    assert box_chip.tolist() == [0, 2, -1, 1]  # the 1000-px-wide box fits no chip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference(device, seed):
    boxes, gid, canvas = _random_problem(seed)
    chips, chip_group, box_chip = ops.greedy_chip_cover(boxes.to(device), gid.to(device), canvas.to(device))
    rc, rg, rb = _reference(boxes.tolist(), gid.tolist(), canvas.tolist())
    assert chips.cpu().tolist() == [list(c) for c in rc]
    assert chip_group.cpu().tolist() == rg
    assert box_chip.cpu().tolist() == rb


@pytest.mark.parametrize("K, d", [(512, 32), (256, 56), (100, 100), (64, 7)])
def test_other_chip_sizes_and_strides(K, d):
    boxes, gid, canvas = _random_problem(40 + K, groups=3)
    boxes = boxes / 4
    chips, chip_group, box_chip = ops.greedy_chip_cover(boxes, gid, canvas / 2, chip_size=K, stride=d)
    rc, rg, rb = _reference(boxes.tolist(), gid.tolist(), (canvas / 2).tolist(), K, d)
    assert chips.tolist() == [list(c) for c in rc] and chip_group.tolist() == rg and box_chip.tolist() == rb


def test_canvas_smaller_than_chip():
    boxes = torch.tensor([[10.0, 10, 50, 50], [250, 150, 300, 200]])
    chips, _, box_chip = ops.greedy_chip_cover(boxes, torch.zeros(2, dtype=torch.long), torch.tensor([[300.0, 200.0]]))
    assert chips.tolist() == [[0, 0, 300, 200]] and box_chip.tolist() == [0, 0]
    # One side short, the other long.
    one = torch.zeros(1, dtype=torch.long)
    chips, _, _ = ops.greedy_chip_cover(torch.tensor([[700.0, 5, 720, 20]]), one, torch.tensor([[900.0, 100.0]]))
    assert chips.tolist() == [[224, 0, 736, 100]]  # first grid start >= 720 - 512
    chips, _, _ = ops.greedy_chip_cover(torch.tensor([[880.0, 5, 899, 20]]), one, torch.tensor([[900.0, 100.0]]))
    assert chips.tolist() == [[388, 0, 900, 100]]  # only the right-aligned start, 900 - 512


def test_empty_inputs():
    chips, cg, bc = ops.greedy_chip_cover(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.tensor([[640.0, 480.0]])
    )
    assert chips.shape == (0, 4) and cg.shape == (0,) and bc.shape == (0,)
    chips, cg, bc = ops.greedy_chip_cover(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
    assert chips.shape == (0, 4)
    # Groups without boxes produce no chips; the others are unaffected.
    chips, cg, _ = ops.greedy_chip_cover(torch.tensor([[1.0, 1, 9, 9]]), torch.tensor([2]), torch.full((4, 2), 600.0))
    assert cg.tolist() == [2]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dtypes(dtype):
    boxes, gid, canvas = _random_problem(3)
    boxes = boxes.clamp(0, 2000)  # exact in every dtype after rounding below
    got = ops.greedy_chip_cover(boxes.to(dtype), gid, canvas)
    want = ops.greedy_chip_cover(boxes.to(dtype).double(), gid, canvas)
    assert got[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    for a, b in zip(got, want):
        assert torch.equal(a.double() if a.is_floating_point() else a, b.double() if b.is_floating_point() else b)


def _check_cover_invariants(boxes, gid, canvas, chips, chip_group, box_chip):
    boxes, chips = boxes.double(), chips.double()
    clipped = boxes.clone()
    w, h = canvas[gid, 0], canvas[gid, 1]
    clipped[:, 0::2] = torch.minimum(clipped[:, 0::2].clamp(min=0), w[:, None])
    clipped[:, 1::2] = torch.minimum(clipped[:, 1::2].clamp(min=0), h[:, None])
    covered = box_chip >= 0
    c = chips[box_chip[covered]]
    b = clipped[covered]
    assert torch.all((c[:, :2] <= b[:, :2]) & (b[:, 2:] <= c[:, 2:])), "box outside its chip"
    assert torch.equal(chip_group[box_chip[covered]], gid[covered]), "chip of another group"
    # No chip without a newly covered box.
    assert torch.equal(torch.unique(box_chip[covered]), torch.arange(len(chips)))


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_seeded_invariants(seed):
    boxes, gid, canvas = _random_problem(100 + seed, groups=8, per_group=(5, 40))
    canonical = ops.greedy_chip_cover(boxes, gid, canvas)
    seeded = ops.greedy_chip_cover(boxes, gid, canvas, seed=seed)
    _check_cover_invariants(boxes, gid, canvas, *seeded)
    # Coverable boxes are the same whatever the order.
    assert torch.equal(seeded[2] >= 0, canonical[2] >= 0)
    # Greedy bound: chips <= H(k) * OPT <= H(k) * (canonical greedy count), per group.
    for k in range(len(canvas)):
        n_seeded = int((seeded[1] == k).sum())
        n_canon = int((canonical[1] == k).sum())
        most = int(torch.bincount(seeded[2][(gid == k) & (seeded[2] >= 0)]).max()) if n_seeded else 0
        harmonic = sum(1 / i for i in range(1, most + 1))
        assert n_seeded <= math.floor(harmonic * n_canon + 1e-9) or n_seeded == n_canon
    again = ops.greedy_chip_cover(boxes, gid, canvas, seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(seeded, again))


def test_seeds_change_the_order():
    boxes, gid, canvas = _random_problem(7, groups=8, per_group=(10, 40))
    outs = [ops.greedy_chip_cover(boxes, gid, canvas, seed=s)[0] for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.slow
def test_10k_boxes_in_one_image():
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(10_000, 2, generator=g, dtype=torch.float64) * 1900
    boxes = torch.cat([xy, xy + 4 + torch.rand(10_000, 2, generator=g, dtype=torch.float64) * 300], 1).round()
    gid = torch.zeros(10_000, dtype=torch.int64)
    canvas = torch.tensor([[2000.0, 1900.0]])
    chips, cg, bc = ops.greedy_chip_cover(boxes, gid, canvas)
    _check_cover_invariants(boxes, gid, canvas, chips, cg, bc)
    np_chips, np_bc = greedy_chip_cover_numpy(boxes.numpy(), 2000.0, 1900.0)
    assert np.array_equal(chips.numpy(), np_chips) and np.array_equal(bc.numpy(), np_bc)


@pytest.mark.parametrize(
    "args, kwargs, err, match",
    [
        (
            (torch.zeros(2, 4), torch.tensor([0, 1]), torch.ones(1, 2) * 600),
            {},
            ValueError,
            r"`box_group` values must lie in \[0, 1\)",
        ),
        ((torch.zeros(2, 4), torch.tensor([0, -1]), torch.ones(1, 2) * 600), {}, ValueError, "`box_group` values"),
        (
            (torch.zeros(1, 4), torch.tensor([0]), torch.tensor([[600.0, -5.0]])),
            {},
            ValueError,
            "`canvas_wh` must be finite and positive",
        ),
        (
            (torch.zeros(1, 4), torch.tensor([0]), torch.ones(1, 3)),
            {},
            ValueError,
            r"`canvas_wh` must have shape \[G, 2\]",
        ),
        (
            (torch.zeros(1, 4), torch.tensor([0.0]), torch.ones(1, 2)),
            {},
            TypeError,
            "`box_group` must be int64 or int32",
        ),
        (
            (torch.zeros(1, 4), torch.tensor([0]), torch.ones(1, 2)),
            {"chip_size": 0},
            ValueError,
            "`chip_size` must be a positive int",
        ),
        ((torch.zeros(1, 4), torch.tensor([0]), torch.ones(1, 2)), {"stride": 2.5}, ValueError, "`stride`"),
        ((torch.zeros(1, 4), torch.tensor([0]), torch.ones(1, 2)), {"seed": -1}, ValueError, "`seed`"),
        (
            (torch.tensor([[0.0, 0, float("nan"), 1]]), torch.tensor([0]), torch.ones(1, 2)),
            {},
            ValueError,
            r"`boxes`\[0\]",
        ),
        ((torch.tensor([[5.0, 0, 1, 1]]), torch.tensor([0]), torch.ones(1, 2)), {}, ValueError, "x1 <= x2"),
    ],
)
def test_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        ops.greedy_chip_cover(*args, **kwargs)


def test_raw_op_checks_values():
    with pytest.raises(RuntimeError, match=r"`box_group`\[0\] = 3 is outside \[0, 1\)"):
        torch.ops.sniper.greedy_chip_cover(torch.zeros(1, 4), torch.tensor([3]), torch.ones(1, 2), 512, 32, None)
    with pytest.raises(RuntimeError, match=r"`canvas_wh`\[0\] must be finite and positive"):
        torch.ops.sniper.greedy_chip_cover(torch.zeros(1, 4), torch.tensor([0]), torch.zeros(1, 2), 512, 32, None)
    with pytest.raises(RuntimeError, match=r"`boxes`\[0\] = .* must be finite"):
        torch.ops.sniper.greedy_chip_cover(
            torch.tensor([[1.0, 0, 0, 1]]), torch.tensor([0]), torch.ones(1, 2), 512, 32, None
        )


@requires_cuda
@pytest.mark.parametrize("seed", [None, 0, 99])
def test_cuda_matches_cpu(seed):
    for s in range(5):
        boxes, gid, canvas = _random_problem(200 + s, groups=300, per_group=(0, 30))
        cpu = ops.greedy_chip_cover(boxes, gid, canvas, seed=seed)
        gpu = ops.greedy_chip_cover(boxes.cuda(), gid.cuda(), canvas.cuda(), seed=seed)
        for a, b in zip(cpu, gpu):
            assert torch.equal(a, b.cpu())


def test_huge_canvas_is_refused_up_front():
    args = (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0]))
    with pytest.raises(
        RuntimeError,
        match=r"greedy_chip_cover: `canvas_wh`\[0\] = \(1e\+09, 1e\+09\) has .* "
        r"candidate chips for chip_size 512 and stride 32, more than the 2\^24",
    ):
        torch.ops.sniper.greedy_chip_cover(*args, torch.tensor([[1e9, 1e9]]), 512, 32, None)
    with pytest.raises(RuntimeError, match="more than the 2\\^24"):  # through the wrapper, and with stride 1
        ops.greedy_chip_cover(*args, torch.tensor([[1e5, 1e5]]), chip_size=1, stride=1)
    # The limit counts candidates, not pixels: a huge canvas with a huge stride is fine.
    chips, _, box_chip = ops.greedy_chip_cover(*args, torch.tensor([[1e9, 1e9]]), chip_size=2**40, stride=2**40)
    assert chips.tolist() == [[0.0, 0.0, 1e9, 1e9]] and box_chip.tolist() == [0]


def test_raw_op_argument_errors():
    b, g, c = torch.zeros(1, 4), torch.tensor([0]), torch.ones(1, 2)
    with pytest.raises(RuntimeError, match="greedy_chip_cover: `seed` must be None or >= 0, got -3"):
        torch.ops.sniper.greedy_chip_cover(b, g, c, 512, 32, -3)
    with pytest.raises(RuntimeError, match="greedy_chip_cover: `canvas_wh` must be a tensor, got None"):
        torch.ops.sniper.greedy_chip_cover(b, g, None, 512, 32, None)
    with pytest.raises(RuntimeError, match="greedy_chip_cover: `box_group` must be a tensor, got None"):
        torch.ops.sniper.greedy_chip_cover(b, None, c, 512, 32, None)
