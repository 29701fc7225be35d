"""The fixed-capacity ops (nms_fixed, batched_nms_fixed, soft_nms_fixed): static [num_groups, capacity]
rows, -1 (and 0.0) padded, and per-group counts, equal to the variable-size ops' results within the
capacity. Specs against the plain-Python references, then the ops against nms / batched_nms /
soft_nms of the selected boxes, argument errors, and static shapes under torch.compile and
torch.export."""

import pytest
import reference as ref
import test_soft_nms
import torch
from common_utils import ALL_DTYPES, DEVICES, MMCV_BOXES, MMCV_SCORES, random_boxes, tol
from fuzz.values import Arg, random_scores, tensor_arg
from op_tester import OpTester, Sample
from test_nms import _edge_cases, _scores, nms_fuzz_args

from sniper_ext import ops
from sniper_ext.ops import SOFT_NMS_METHODS

raw = torch.ops.sniper
METHODS = test_soft_nms.METHODS


def _long(rows):
    return torch.tensor(rows, dtype=torch.int64)


def _ids(n, lo, hi, seed, device="cpu"):
    return torch.randint(lo, hi, (n,), generator=torch.Generator().manual_seed(seed)).to(device)


class TestNmsFixed(OpTester):
    """sniper::nms_fixed through ops.nms_fixed: (keep [capacity], count []), exactly the reference's."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.nms_fixed", "raw.nms_fixed")
    opcheck_samples = ("150 random boxes, capacity 10", "no boxes, capacity 4", "150 random boxes, capacity 0")

    def fn(self, boxes, scores, iou_threshold, capacity):
        return ops.nms_fixed(boxes, scores, iou_threshold, capacity)

    def expected_fn(self, boxes, scores, iou_threshold, capacity):
        keep, counts = ref.nms_fixed(boxes.tolist(), scores.tolist(), iou_threshold, capacity)
        return _long(keep[0]), _long(counts[0])

    def output_dtypes(self, dtype):
        return (torch.int64, torch.int64)

    def sample_inputs(self, device, dtype):
        for boxes, scores, thr, name in _edge_cases(device, dtype):
            for cap in (1, 4):
                yield Sample((boxes, scores, thr, cap), name=f"{name}, capacity {cap}")
        # test_nms's random inputs (decided alike in every dtype): more and fewer kept than the capacity.
        boxes, scores = random_boxes(150, dtype=dtype, device=device), _scores(150, 3, dtype).to(device)
        for cap in (10, 200, 0):
            yield Sample((boxes, scores, 0.5, cap), name=f"150 random boxes, capacity {cap}")
        boxes, scores = random_boxes(200, dtype=dtype, device=device), _scores(200, 0, dtype).to(device)
        yield Sample((boxes, scores, 0.0, 50), name="200 random boxes, threshold 0, capacity 50")

    def raw_calls(self, sample):
        return [(raw.nms_fixed.default, sample.args)]

    def fuzz_args(self, ctx, target):
        return nms_fuzz_args(ctx) + [Arg("capacity", ctx.rng.randint(0, 40), "int")]


class TestBatchedNmsFixed(OpTester):
    """sniper::batched_nms_fixed through ops.batched_nms_fixed: (keep [G, capacity], count [G])."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.batched_nms_fixed", "raw.batched_nms_fixed")
    opcheck_samples = ("300 boxes, ids in [-3, 7), 5 groups, capacity 8", "12 groups, some empty", "num_groups 0")

    def fn(self, boxes, scores, idxs, iou_threshold, num_groups, capacity):
        return ops.batched_nms_fixed(boxes, scores, idxs, iou_threshold, num_groups, capacity)

    def expected_fn(self, boxes, scores, idxs, iou_threshold, num_groups, capacity):
        keep, counts = ref.nms_fixed(
            boxes.tolist(), scores.tolist(), iou_threshold, capacity, idxs.tolist(), num_groups
        )
        return _long(keep).view(num_groups, capacity), _long(counts)

    def output_dtypes(self, dtype):
        return (torch.int64, torch.int64)

    def sample_inputs(self, device, dtype):
        # test_nms's batched input: negative and large ids, which take no part here.
        boxes, scores = random_boxes(300, dtype=dtype, device=device), _scores(300, 1, dtype).to(device)
        idxs = _ids(300, -3, 7, 2, device)
        yield Sample((boxes, scores, idxs, 0.4, 5, 8), name="300 boxes, ids in [-3, 7), 5 groups, capacity 8")
        yield Sample((boxes, scores, idxs.int(), 0.4, 5, 100), name="int32 ids, capacity 100")
        yield Sample((boxes, scores, idxs, 0.4, 12, 20), name="12 groups, some empty")
        yield Sample((boxes, scores, idxs, 0.4, 0, 5), name="num_groups 0")
        yield Sample((boxes, scores, idxs, 0.4, 5, 0), name="capacity 0")
        yield Sample((boxes[:20], scores[:20], torch.arange(20, device=device), 0.4, 20, 3), name="one box per group")
        for b, s, thr, name in _edge_cases(device, dtype):
            ids = (torch.arange(len(b), device=device) % 2).flip(0)
            yield Sample((b, s, ids, thr, 2, 2), name=f"{name}, two groups, capacity 2")
        one = torch.zeros(1, dtype=torch.int64, device=device).expand(150)
        yield Sample((boxes[:150], scores[:150], one, 0.5, 1, 30), name="expanded group ids: one group")

    def raw_calls(self, sample):
        return [(raw.batched_nms_fixed.default, sample.args)]

    def fuzz_args(self, ctx, target):
        args = nms_fuzz_args(ctx, idxs=True)  # ids in [0, 4)
        return args + [Arg("num_groups", ctx.rng.randint(0, 5), "int"), Arg("capacity", ctx.rng.randint(0, 40), "int")]


def _soft_kwargs(kw):
    return dict(method="gaussian", sigma=0.5, iou_threshold=0.3, score_threshold=1e-3) | kw


class TestSoftNmsFixed(OpTester):
    """sniper::soft_nms_fixed through ops.soft_nms_fixed: (keep [G, capacity], decayed scores [G, capacity],
    count [G]); indices and counts exactly, scores to TestSoftNms's tolerances."""

    grad_args = ()
    exact = (True, False, True)
    fuzz_targets = ("ops.soft_nms_fixed", "raw.soft_nms_fixed")
    opcheck_samples = ("250 boxes, 5 groups, gaussian, capacity 20", "num_groups 0")
    tolerances = test_soft_nms.TestSoftNms.tolerances

    def fn(self, boxes, scores, idxs, num_groups, capacity, **kwargs):
        return ops.soft_nms_fixed(boxes, scores, idxs, num_groups, capacity, **kwargs)

    def expected_fn(self, boxes, scores, idxs, num_groups, capacity, **kwargs):
        keep, kept, counts = ref.soft_nms_fixed(
            boxes.tolist(), scores.tolist(), idxs.tolist(), num_groups, capacity, **kwargs
        )
        shape = (num_groups, capacity)
        return _long(keep).view(shape), torch.tensor(kept, dtype=torch.float64).view(shape), _long(counts)

    def output_dtypes(self, dtype):
        return (torch.int64, dtype, torch.int64)

    def check_forward(self, got, want, dtype, name):
        if dtype in (torch.float32, torch.float64):
            return super().check_forward(got, want, dtype, name)
        # Half types (TestSoftNms.check_forward): float32 math on rounded inputs decides alike except
        # right at a threshold; per row at most two indices differ, common ones have close scores.
        keep, kept, count = (t.cpu() for t in got)
        rk, rs, rc = want
        assert keep.shape == rk.shape and kept.shape == rs.shape and count.shape == rc.shape, name
        for g in range(rk.shape[0]):
            row, ref_row = keep[g][keep[g] >= 0].tolist(), rk[g][rk[g] >= 0].tolist()
            assert len(row) == int(count[g]) and len(set(row) ^ set(ref_row)) <= 2, (name, g)
            common = dict(zip(ref_row, rs[g].tolist()))
            for i, v in zip(row, kept[g].double().tolist()):
                if i in common:
                    assert abs(v - common[i]) <= 4 * tol(dtype) + 1e-6, (name, g)

    def sample_inputs(self, device, dtype):
        f = lambda x: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
        zeros = lambda n: torch.zeros(n, dtype=torch.int64, device=device)  # noqa: E731
        for method in METHODS:
            kw = dict(method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
            # 4 boxes (3 kept by hard): more and fewer than a capacity of 3.
            yield Sample((f(MMCV_BOXES), f(MMCV_SCORES), zeros(4), 1, 3), kw, name=f"mmcv fixture, {method}")
        # TestSoftNms's random input: groups of ~50 boxes that keep more than 20.
        g = torch.Generator().manual_seed(7)
        boxes = random_boxes(250, generator=g).to(device, dtype)
        scores = torch.rand(250, generator=g, dtype=torch.float64).to(device, dtype)
        idxs = torch.randint(0, 5, (250,), generator=g).to(device)
        kw = dict(method="gaussian")
        yield Sample((boxes, scores, idxs, 5, 20), kw, name="250 boxes, 5 groups, gaussian, capacity 20")
        kw = dict(method="linear", sigma=0.1, iou_threshold=0.6, score_threshold=0.05)
        yield Sample((boxes, scores, idxs - 1, 4, 100), kw, name="ids in [-1, 4), 4 groups, linear, capacity 100")
        kw = dict(method="hard", iou_threshold=0.0, score_threshold=0.0)
        yield Sample((boxes, scores, idxs, 7, 10), kw, name="hard at 0, 7 groups (2 empty), capacity 10")
        yield Sample((boxes, scores, idxs, 0, 10), name="num_groups 0")
        yield Sample((boxes, scores, idxs, 5, 0), name="capacity 0")
        yield Sample((f([[0, 0, 0, 0]])[:0], f([0.0])[:0], zeros(0), 2, 4), name="no boxes")
        yield Sample((f([[0, 0, 1, 1]]), f([0.5]), zeros(1), 1, 4), name="one box")
        kw = dict(score_threshold=0)
        yield Sample((f([[0, 0, 2, 2]] * 3), f([0.9] * 3), zeros(3), 1, 2), kw, name="identical boxes and scores")
        one = torch.zeros(1, dtype=torch.int64, device=device).expand(250)
        yield Sample((boxes, scores, one, 1, 64), dict(method="linear"), name="expanded group ids: one group")

    def raw_calls(self, sample):
        boxes, scores, idxs, num_groups, capacity = sample.args
        kw = _soft_kwargs(sample.kwargs)
        args = (boxes, scores, idxs, SOFT_NMS_METHODS[kw["method"]], kw["sigma"], kw["iou_threshold"])
        return [(raw.soft_nms_fixed.default, args + (kw["score_threshold"], num_groups, capacity))]

    def fuzz_args(self, ctx, target):
        dt = ctx.dtype()
        n = ctx.n(30)
        method = ctx.rng.randrange(3)
        rest = [
            ("sigma", ctx.uniform(0.05, 1.0)),
            ("iou_threshold", ctx.uniform(0, 1)),
            ("score_threshold", ctx.uniform(0, 0.2)),
        ]
        args = [
            tensor_arg("boxes", ctx.boxes(n, dtype=dt), "boxes"),
            tensor_arg("scores", random_scores(ctx, n, dt)),
            tensor_arg("idxs", ctx.ints(-1, 4, n), "index", 4),
        ]
        sizes = [Arg("num_groups", ctx.rng.randint(0, 4), "int"), Arg("capacity", ctx.rng.randint(0, 30), "int")]
        if target.startswith("raw."):
            return args + [Arg("method", method, "int")] + [Arg(k, v, "float") for k, v in rest] + sizes
        return (
            args
            + sizes
            + [Arg("method", METHODS[method], "str", keyword=True)]
            + [Arg(k, v, "float", keyword=True) for k, v in rest]
        )


# -- the fixed-capacity ops against the variable-size ops ---------------------------------------------


def _variable_rows(boxes, scores, idxs, num_groups, capacity, run):
    """Rows from the variable-size op `run(boxes, scores) -> (keep, scores)` on each group's boxes alone,
    its indices mapped back to the input's: what the fixed op must return."""
    keep = torch.full((num_groups, capacity), -1, dtype=torch.int64)
    kept = torch.zeros((num_groups, capacity), dtype=scores.dtype)
    count = torch.zeros(num_groups, dtype=torch.int64)
    for g in range(num_groups):
        members = (idxs == g).nonzero().flatten()
        k, s = run(boxes[members], scores[members])
        c = min(len(k), capacity)
        keep[g, :c], kept[g, :c], count[g] = members[k[:c]], s[:c], c
    return keep, kept, count


def _random_case(seed, dtype):
    """Random boxes (coarse scores: ties) with ids in [-2, G + 2): out of range, empty groups, a group of
    one box; group sizes from 0 to a few hundred."""
    g = torch.Generator().manual_seed(seed)
    n = [0, 1, 7, 40, 300, 900][seed % 6]
    groups = [1, 3, 8][seed % 3]
    boxes = random_boxes(n, generator=g, canvas=150.0, dtype=dtype)
    scores = (torch.randint(0, 40, (n,), generator=g).double() / 39).to(dtype)
    idxs = torch.randint(-2, groups + 2, (n,), generator=g)
    if n > 3:
        idxs[idxs == groups - 1] = groups + 5  # group G - 1: one box
        idxs[n // 2] = groups - 1
    return boxes, scores, idxs, groups


def _bits(t):
    return t.contiguous().view(-1).view(torch.uint8)


def _assert_same(got, want, what):
    """Same dtypes, shapes and bytes: the same kernels decide the same boxes and round the same scores."""
    assert len(got) == len(want), what
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and a.shape == b.shape, (what, k, a.dtype, a.shape, b.dtype, b.shape)
        assert torch.equal(_bits(a), _bits(b)), (what, k, a, b)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_fixed_match_variable_size_ops(dtype):
    """Every op in every dtype on random cases: capacities below and above the number kept, zero boxes,
    capacity 0, num_groups 0, ids outside [0, G), empty groups and one-box groups; bitwise."""
    for seed in range(12):
        boxes, scores, idxs, groups = _random_case(seed, dtype)
        for cap in (0, 1, 5, 64, 1000):
            thr = (0.3, 0.5, 0.7)[cap % 3]
            want = _variable_rows(
                boxes, scores, torch.zeros_like(idxs), 1, cap, lambda b, s, thr=thr: (ops.nms(b, s, thr), s)
            )
            _assert_same(ops.nms_fixed(boxes, scores, thr, cap), (want[0][0], want[2][0]), f"nms_fixed {seed} {cap}")
            for g in (groups, 0):
                want = _variable_rows(boxes, scores, idxs, g, cap, lambda b, s, thr=thr: (ops.nms(b, s, thr), s))
                got = ops.batched_nms_fixed(boxes, scores, idxs, thr, g, cap)
                _assert_same(got, (want[0], want[2]), f"batched_nms_fixed {seed} {g} {cap}")
            method = METHODS[seed % 3]
            kw = dict(method=method, sigma=0.5, iou_threshold=thr, score_threshold=0.02)
            want = _variable_rows(boxes, scores, idxs, groups, cap, lambda b, s, kw=kw: ops.soft_nms(b, s, **kw))
            got = ops.soft_nms_fixed(boxes, scores, idxs, groups, cap, **kw)
            _assert_same(got, want, f"soft_nms_fixed {seed} {cap} {method}")


def test_fixed_batched_rows_follow_batched_nms_order():
    """Row g is batched_nms's output restricted to group g (score descending, ties to the lower index)."""
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(500, generator=g, canvas=80.0)
    scores = (torch.randint(0, 8, (500,), generator=g).double() / 7).float()  # many ties
    boxes = boxes.float()
    idxs = torch.randint(0, 4, (500,), generator=g)
    full = ops.batched_nms(boxes, scores, idxs, 0.5)
    keep, count = ops.batched_nms_fixed(boxes, scores, idxs, 0.5, 4, 1000)
    for k in range(4):
        assert keep[k, : count[k]].tolist() == full[idxs[full] == k].tolist()
        assert (keep[k, count[k] :] == -1).all()


def test_noncontiguous_inputs():
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes(200, generator=g, canvas=60.0)
    scores = torch.rand(200, generator=g, dtype=torch.float64)
    idxs = torch.randint(-1, 4, (200,), generator=g)
    b_t = boxes.t().contiguous().t()  # column-major
    s_s, i_s = torch.stack([scores, scores], 1)[:, 0], torch.stack([idxs, idxs], 1)[:, 1]  # stride 2
    assert not (b_t.is_contiguous() or s_s.is_contiguous() or i_s.is_contiguous())
    for a, b in [
        (ops.nms_fixed(b_t, s_s, 0.5, 30), ops.nms_fixed(boxes, scores, 0.5, 30)),
        (ops.batched_nms_fixed(b_t, s_s, i_s, 0.5, 3, 9), ops.batched_nms_fixed(boxes, scores, idxs, 0.5, 3, 9)),
        (ops.soft_nms_fixed(b_t, s_s, i_s, 3, 9), ops.soft_nms_fixed(boxes, scores, idxs, 3, 9)),
    ]:
        _assert_same(a, b, "non-contiguous")


def test_empty_outputs():
    boxes, scores = random_boxes(5).float(), torch.rand(5)
    idxs = torch.zeros(5, dtype=torch.int64)
    keep, count = ops.nms_fixed(boxes[:0], scores[:0], 0.5, 3)
    assert keep.tolist() == [-1, -1, -1] and count.shape == () and int(count) == 0
    keep, count = ops.nms_fixed(boxes, scores, 0.5, 0)
    assert keep.shape == (0,) and int(count) == 0
    keep, count = ops.batched_nms_fixed(boxes, scores, idxs, 0.5, 0, 4)
    assert keep.shape == (0, 4) and count.shape == (0,)
    keep, kept, count = ops.soft_nms_fixed(boxes, scores, idxs + 7, 2, 4)  # every id out of range
    assert (keep == -1).all() and (kept == 0).all() and kept.dtype == torch.float32 and count.tolist() == [0, 0]


# -- argument errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda b, s, i: ops.nms_fixed(b, s, 0.5, -1), ValueError, r"nms_fixed: `capacity` must be an int in \[0"),
        (lambda b, s, i: ops.nms_fixed(b, s, 0.5, 2.0), TypeError, "nms_fixed: `capacity` must be an int"),
        (lambda b, s, i: ops.nms_fixed(b, s, -0.5, 2), ValueError, "nms_fixed: `iou_threshold`"),
        (lambda b, s, i: ops.nms_fixed(b, s[:2], 0.5, 2), ValueError, r"nms_fixed: `scores` must have shape \[3\]"),
        (
            lambda b, s, i: ops.batched_nms_fixed(b, s, i, 0.5, -2, 4),
            ValueError,
            r"batched_nms_fixed: `num_groups` must be an int in \[0",
        ),
        (
            lambda b, s, i: ops.batched_nms_fixed(b, s, i, 0.5, 2, -4),
            ValueError,
            r"batched_nms_fixed: `capacity` must be an int in \[0",
        ),
        (
            lambda b, s, i: ops.batched_nms_fixed(b, s, i.float(), 0.5, 2, 4),
            TypeError,
            "batched_nms_fixed: `idxs` must be an integer",
        ),
        (
            lambda b, s, i: ops.soft_nms_fixed(b, s, i, -1, 4),
            ValueError,
            r"soft_nms_fixed: `num_groups` must be an int in \[0",
        ),
        (
            lambda b, s, i: ops.soft_nms_fixed(b, s, i, 1, -4),
            ValueError,
            r"soft_nms_fixed: `capacity` must be an int in \[0",
        ),
        (
            lambda b, s, i: ops.soft_nms_fixed(b, s, i, 1, 4, method="soft"),
            ValueError,
            "soft_nms_fixed: `method` must be one of",
        ),
        (
            lambda b, s, i: ops.soft_nms_fixed(b, s, i, 1, 4, sigma=0.0),
            ValueError,
            "soft_nms_fixed: `sigma`",
        ),
    ],
)
def test_bad_input(call, err, match):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    with pytest.raises(err, match=match):
        call(boxes, torch.rand(3), torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda b, s, i: raw.nms_fixed(b, s, 0.5, -1), "nms_fixed: `capacity` must be >= 0, got -1"),
        (lambda b, s, i: raw.batched_nms_fixed(b, s, i, 0.5, -3, 2), "batched_nms_fixed: `num_groups` must be >= 0"),
        (lambda b, s, i: raw.batched_nms_fixed(b, s, i, 0.5, 3, -2), "batched_nms_fixed: `capacity` must be >= 0"),
        (lambda b, s, i: raw.batched_nms_fixed(b, s, i[:2], 0.5, 3, 2), r"batched_nms_fixed: `idxs` must have shape"),
        (
            lambda b, s, i: raw.soft_nms_fixed(b, s, i, 1, 0.5, 0.3, 0.0, -1, 2),
            "soft_nms_fixed: `num_groups` must be >= 0",
        ),
        (
            lambda b, s, i: raw.soft_nms_fixed(b, s, i, 1, 0.5, 0.3, 0.0, 1, -2),
            "soft_nms_fixed: `capacity` must be >= 0",
        ),
        (lambda b, s, i: raw.soft_nms_fixed(b, s, i, 5, 0.5, 0.3, 0.0, 1, 2), "soft_nms_fixed: `method` must be 0"),
        (
            lambda b, s, i: raw.batched_nms_fixed(b, s, i, 0.5, 1 << 30, 1 << 20),
            r"batched_nms_fixed: the kept indices would have .* elements",
        ),
    ],
)
def test_raw_op_errors_name_the_argument(call, match):
    """The raw ops (no Python checks) check their sizes in C++, naming op and argument."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    with pytest.raises(RuntimeError, match=match):
        call(boxes, torch.rand(3), torch.zeros(3, dtype=torch.int64))


# -- static shapes in traced programs ---------------------------------------------------------------


class _Detect(torch.nn.Module):
    def forward(self, boxes, scores, idxs):
        keep, count = ops.batched_nms_fixed(boxes, scores, idxs, 0.5, 4, 100)
        top, kept, _ = ops.soft_nms_fixed(boxes, scores, idxs, 4, 50)
        first, n = ops.nms_fixed(boxes, scores, 0.7, 10)
        return keep, count, top, kept, first, n


def _detect_inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, generator=g, canvas=200.0).float()
    return boxes, torch.rand(n, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_export_has_static_output_shapes():
    """torch.export with a dynamic number of boxes: every output has a static shape (no data-dependent
    size, no guard on the data), and the exported program gives eager's results at other sizes."""
    n = torch.export.Dim("n", min=2, max=100_000)
    ep = torch.export.export(_Detect(), _detect_inputs(300, 0), dynamic_shapes=({0: n}, {0: n}, {0: n}))
    shapes = [tuple(node.meta["val"].shape) for node in ep.graph.find_nodes(op="output")[0].args[0]]
    assert shapes == [(4, 100), (4,), (4, 50), (4, 50), (10,), ()]
    assert all(isinstance(d, int) for s in shapes for d in s)
    for size in (57, 1000):
        inputs = _detect_inputs(size, size)
        for a, b in zip(ep.module()(*inputs), _Detect()(*inputs)):
            assert torch.equal(a, b)


def test_compile_dynamic_fullgraph():
    """torch.compile(fullgraph=True, dynamic=True) traces the ops through their fake kernels: static
    output shapes whatever the number of boxes (aot_eager: the tracing, without Inductor's codegen,
    which the specs' test_compile runs)."""
    torch._dynamo.reset()
    detect = _Detect()
    compiled = torch.compile(detect, fullgraph=True, dynamic=True, backend="aot_eager")
    for size in (40, 77):
        inputs = _detect_inputs(size, size)
        got = compiled(*inputs)
        assert [tuple(t.shape) for t in got] == [(4, 100), (4,), (4, 50), (4, 50), (10,), ()]
        for a, b in zip(got, detect(*inputs)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_symbolic_num_groups(device):
    """num_groups is a SymInt: a traced size (here the batch of a per-image problem) may feed it."""
    torch._dynamo.reset()

    def per_image(boxes, scores):  # boxes [B, N, 4]
        b, n = boxes.shape[:2]
        ids = torch.arange(b, device=boxes.device).repeat_interleave(n)
        return ops.batched_nms_fixed(boxes.reshape(-1, 4), scores.reshape(-1), ids, 0.5, b, 16)

    compiled = torch.compile(per_image, fullgraph=True, dynamic=True, backend="aot_eager")
    for b in (2, 3):
        g = torch.Generator().manual_seed(b)
        boxes = random_boxes(b * 30, generator=g).float().view(b, 30, 4).to(device)
        scores = torch.rand(b, 30, generator=g).to(device)
        got, want = compiled(boxes, scores), per_image(boxes, scores)
        assert got[0].shape == (b, 16) and all(torch.equal(x, y) for x, y in zip(got, want))
