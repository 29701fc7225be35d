import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import reference as ref
import torch
from common_utils import (
    ALL_DTYPES,
    DEVICES,
    MMCV_BOXES,
    MMCV_EXPECTED,
    MMCV_SCORES,
    random_boxes,
    requires_cuda,
    tol,
)
from fuzz.values import Arg, random_scores, tensor_arg
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import OpTester, Sample

from sniper_ext import ops
from sniper_ext.ops import SOFT_NMS_METHODS

METHODS = ["linear", "gaussian", "hard"]


def soft_nms_fuzz_args(ctx, raw):
    """A random valid call of soft_nms: the raw op's (method an int) or the wrapper's (keywords)."""
    dt = ctx.dtype()
    n = ctx.n(30)
    idxs = ctx.ints(0, 3, n) if ctx.rng.random() < 0.6 else None
    method = ctx.rng.randrange(3)
    rest = [
        ("sigma", ctx.uniform(0.05, 1.0)),
        ("iou_threshold", ctx.uniform(0, 1)),
        ("score_threshold", ctx.uniform(0, 0.2)),
    ]
    args = [
        tensor_arg("boxes", ctx.boxes(n, dtype=dt), "boxes"),
        tensor_arg("scores", random_scores(ctx, n, dt)),
        tensor_arg("idxs", idxs, "index", 3),
    ]
    if raw:
        args.append(Arg("method", method, "int"))
        args += [Arg(k, v, "float") for k, v in rest]
    else:
        args.append(Arg("method", ["linear", "gaussian", "hard"][method], "str", keyword=True))
        args += [Arg(k, v, "float", keyword=True) for k, v in rest]
    return args


class TestSoftNms(OpTester):
    """sniper::soft_nms through ops.soft_nms: kept indices exactly, decayed scores to rounding."""

    grad_args = ()
    exact = (True, False)
    fuzz_targets = ("ops.soft_nms", "raw.soft_nms")
    opcheck_samples = ("250 boxes, 5 groups, gaussian", "250 boxes, one group, linear")
    # Decayed scores: to the last bits in float64 (exp_ is within 1 ulp), test_dtypes' bound in float32.
    tolerances = {
        **OpTester.tolerances,
        torch.float64: (0.0, 1e-12),
        torch.float32: (0.0, 4 * tol(torch.float32) + 1e-6),
    }

    def fn(self, boxes, scores, idxs=None, **kwargs):
        return ops.soft_nms(boxes, scores, idxs, **kwargs)

    def expected_fn(self, boxes, scores, idxs=None, **kwargs):
        keep, kept = ref.soft_nms(boxes.tolist(), scores.tolist(), None if idxs is None else idxs.tolist(), **kwargs)
        return torch.tensor(keep, dtype=torch.int64), torch.tensor(kept, dtype=torch.float64)

    def output_dtypes(self, dtype):
        return (torch.int64, dtype)

    def check_forward(self, got, want, dtype, name):
        if dtype in (torch.float32, torch.float64):
            return super().check_forward(got, want, dtype, name)
        # test_dtypes: float32 math on half inputs decides alike except right at a threshold.
        keep, kept = (t.cpu() for t in got)
        rk, rs = want
        assert len(set(keep.tolist()) ^ set(rk.tolist())) <= 2, name
        common = dict(zip(rk.tolist(), rs.tolist()))
        for i, v in zip(keep.tolist(), kept.double().tolist()):
            if i in common:
                assert abs(v - common[i]) <= 4 * tol(dtype) + 1e-6, name

    def sample_inputs(self, device, dtype):
        f = lambda x: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
        for method in METHODS:
            kw = dict(method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
            yield Sample((f(MMCV_BOXES), f(MMCV_SCORES)), kw, name=f"mmcv fixture, {method}")
        g = torch.Generator().manual_seed(9)
        boxes, scores = random_boxes(120, generator=g, dtype=dtype), torch.rand(120, generator=g).to(dtype)
        yield Sample((boxes.to(device), scores.to(device)), dict(score_threshold=0.05), name="test_dtypes' input")
        g = torch.Generator().manual_seed(7)
        boxes = random_boxes(250, generator=g).to(device, dtype)
        scores = torch.rand(250, generator=g, dtype=torch.float64).to(device, dtype)
        idxs = torch.randint(0, 5, (250,), generator=g).to(device)
        yield Sample((boxes, scores, idxs), dict(method="gaussian"), name="250 boxes, 5 groups, gaussian")
        kw = dict(method="linear", sigma=0.1, iou_threshold=0.6, score_threshold=0.05)
        yield Sample((boxes, scores), kw, name="250 boxes, one group, linear")
        kw = dict(method="hard", iou_threshold=0.0, score_threshold=0.0)
        yield Sample((boxes, scores, idxs), kw, name="250 boxes, 5 groups, hard at 0")
        # test_edge_cases
        yield Sample((f([[0, 0, 0, 0]])[:0], f([0.0])[:0]), name="no boxes")
        yield Sample((f([[0, 0, 1, 1]]), f([0.5])), name="one box")
        yield Sample((f([[0, 0, 2, 2]] * 3), f([0.9] * 3)), dict(score_threshold=0), name="identical boxes")
        yield Sample((f([[1, 1, 1, 1]] * 2), f([0.2, 0.4])), dict(method="hard"), name="zero-area boxes")
        kw = dict(score_threshold=0.05)
        yield Sample((f([[0, 0, 1, 1], [5, 5, 6, 6]]), f([0.5, 0.01])), kw, name="below the threshold from the start")
        kw = dict(method="hard", iou_threshold=0.5)
        yield Sample((f([[0, 0, 2, 1], [0, 0, 1, 1]]), f([0.9, 0.8])), kw, name="hard drops at the threshold")
        one = torch.zeros(1, dtype=torch.int64, device=device).expand(250)
        yield Sample((boxes, scores, one), dict(method="linear"), name="expanded group ids: one group")

    def raw_calls(self, sample):
        boxes, scores, *idxs = sample.args
        kw = dict(method="gaussian", sigma=0.5, iou_threshold=0.3, score_threshold=1e-3) | sample.kwargs
        args = (boxes, scores, idxs[0] if idxs else None, SOFT_NMS_METHODS[kw["method"]])
        return [(torch.ops.sniper.soft_nms.default, args + (kw["sigma"], kw["iou_threshold"], kw["score_threshold"]))]

    def fuzz_args(self, ctx, target):
        return soft_nms_fuzz_args(ctx, raw=target.startswith("raw."))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_mmcv_fixture(method, device, dtype):
    b = torch.tensor(MMCV_BOXES, dtype=dtype, device=device)
    s = torch.tensor(MMCV_SCORES, dtype=dtype, device=device)
    keep, scores = ops.soft_nms(b, s, method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.01)
    want_keep, want_scores = MMCV_EXPECTED[method]
    assert keep.tolist() == want_keep
    assert scores.dtype == dtype
    torch.testing.assert_close(
        scores.cpu().double(),
        torch.tensor(want_scores, dtype=torch.float64),
        rtol=max(tol(dtype), 1e-6),
        atol=max(tol(dtype), 1e-7),
    )


def _check(got, want, atol=1e-12):
    keep, scores = got
    assert keep.cpu().tolist() == want[0]
    torch.testing.assert_close(scores.cpu().double(), torch.tensor(want[1], dtype=torch.float64), rtol=0, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_matches_reference(method, device):
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(250, generator=g)
    scores = torch.rand(250, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 5, (250,), generator=g)
    for sigma, iou, sthr in [(0.5, 0.3, 1e-3), (0.1, 0.6, 0.05), (2.0, 0.0, 0.0)]:
        kw = dict(method=method, sigma=sigma, iou_threshold=iou, score_threshold=sthr)
        _check(
            ops.soft_nms(boxes.to(device), scores.to(device), **kw),
            ref.soft_nms(boxes.tolist(), scores.tolist(), None, **kw),
        )
        _check(
            ops.soft_nms(boxes.to(device), scores.to(device), idxs.to(device), **kw),
            ref.soft_nms(boxes.tolist(), scores.tolist(), idxs.tolist(), **kw),
        )


@pytest.mark.parametrize("device", DEVICES)
def test_thousands_of_groups(device):
    g = torch.Generator().manual_seed(8)
    n = 12_000
    boxes = random_boxes(n, generator=g, canvas=60)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 3000, (n,), generator=g) * 7 - 5000  # sparse, negative ids
    got = ops.soft_nms(boxes.to(device), scores.to(device), idxs.to(device), sigma=0.55)
    _check(got, ref.soft_nms(boxes.tolist(), scores.tolist(), idxs.tolist(), sigma=0.55))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_dtypes(dtype, device):
    g = torch.Generator().manual_seed(9)
    boxes = random_boxes(120, generator=g, dtype=dtype)
    scores = torch.rand(120, generator=g).to(dtype)
    keep, out = ops.soft_nms(boxes.to(device), scores.to(device), score_threshold=0.05)
    rk, rs = ref.soft_nms(boxes.double().tolist(), scores.double().tolist(), score_threshold=0.05)
    assert out.dtype == dtype
    if dtype in (torch.float32, torch.float64):
        assert keep.cpu().tolist() == rk
    else:  # float32 math on half inputs: decisions may differ only right at the threshold
        assert len(set(keep.tolist()) ^ set(rk)) <= 2
    common = {i: s for i, s in zip(rk, rs)}
    for i, s in zip(keep.cpu().tolist(), out.cpu().double().tolist()):
        if i in common:
            assert abs(s - common[i]) <= 4 * tol(dtype) + 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_edge_cases(device):
    f = lambda x: torch.tensor(x, dtype=torch.float64, device=device)  # noqa: E731
    keep, s = ops.soft_nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device))
    assert keep.shape == (0,) and s.shape == (0,) and keep.dtype == torch.int64
    keep, s = ops.soft_nms(f([[0, 0, 1, 1]]), f([0.5]))
    assert keep.tolist() == [0] and s.tolist() == [0.5]
    # Identical boxes: each later one decays by exp(-1/sigma) per selection before it.
    keep, s = ops.soft_nms(f([[0, 0, 2, 2]] * 3), f([0.9, 0.9, 0.9]), sigma=0.5, score_threshold=0)
    w = torch.exp(torch.tensor(-2.0, dtype=torch.float64)).item()
    assert keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(s, f([0.9, 0.9 * w, 0.9 * w * w]))
    # Zero-area boxes never overlap anything and keep their scores.
    keep, s = ops.soft_nms(f([[1, 1, 1, 1], [1, 1, 1, 1]]), f([0.2, 0.4]), method="hard")
    assert keep.tolist() == [1, 0] and s.tolist() == [0.4, 0.2]
    # Below the score threshold from the start: dropped.
    keep, _ = ops.soft_nms(f([[0, 0, 1, 1], [5, 5, 6, 6]]), f([0.5, 0.01]), score_threshold=0.05)
    assert keep.tolist() == [0]
    # "hard" drops at IoU == threshold (>=); nms keeps it (>).
    keep, _ = ops.soft_nms(f([[0, 0, 2, 1], [0, 0, 1, 1]]), f([0.9, 0.8]), method="hard", iou_threshold=0.5)
    assert keep.tolist() == [0]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_100k_boxes(device):
    g = torch.Generator().manual_seed(10)
    n = 100_000
    boxes = random_boxes(n, generator=g, canvas=300).float()
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 2000, (n,), generator=g)
    keep, s = ops.soft_nms(boxes.to(device), scores.to(device), idxs.to(device))
    keep, s = keep.cpu(), s.cpu()
    assert len(torch.unique(keep)) == len(keep) > 0
    assert torch.all(s[:-1] >= s[1:])
    assert torch.all(s <= scores[keep]) and torch.all(s >= 1e-3)
    # Spot-check a few groups against the reference.
    for gid in (0, 777, 1999):
        m = (idxs == gid).nonzero().flatten()
        rk, rs = ref.soft_nms(boxes[m].double().tolist(), scores[m].double().tolist())
        sel = torch.isin(keep, m)
        assert [m[i].item() for i in rk] == keep[sel].tolist()
        torch.testing.assert_close(s[sel].double(), torch.tensor(rs, dtype=torch.float64), rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 30),
    groups=st.integers(1, 3),
    method=st.sampled_from(METHODS),
    sigma=st.floats(0.05, 2.0),
    iou=st.floats(0.0, 1.0),
    sthr=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference(n, groups, method, sigma, iou, sthr, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, generator=g, canvas=30, max_size=20)
    scores = torch.randint(0, 5, (n,), generator=g).double() / 4  # frequent ties
    idxs = torch.randint(0, groups, (n,), generator=g)
    kw = dict(method=method, sigma=sigma, iou_threshold=iou, score_threshold=sthr)
    _check(ops.soft_nms(boxes, scores, idxs, **kw), ref.soft_nms(boxes.tolist(), scores.tolist(), idxs.tolist(), **kw))


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(method="cubic"), ValueError, "`method` must be one of"),
        (dict(sigma=0.0), ValueError, "`sigma` must be a finite number > 0"),
        (dict(iou_threshold=-1), ValueError, "`iou_threshold`"),
        (dict(score_threshold=float("inf")), ValueError, "`score_threshold`"),
        (dict(sigma="big"), TypeError, "`sigma` must be a number"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        ops.soft_nms(torch.zeros(2, 4), torch.rand(2), **kwargs)


def test_bad_tensors():
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    with pytest.raises(ValueError, match=r"`idxs` must have shape \[2\]"):
        ops.soft_nms(b, torch.rand(2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`boxes`\[1\]"):
        ops.soft_nms(torch.tensor([[0.0, 0, 1, 1], [0, 0, float("nan"), 1]]), torch.rand(2))
    with pytest.raises(RuntimeError, match="`method` must be 0 .linear., 1 .gaussian. or 2 .hard."):
        torch.ops.sniper.soft_nms(b, torch.rand(2), None, 5, 0.5, 0.3, 0.001)
    with pytest.raises(RuntimeError, match="`sigma` must be > 0"):
        torch.ops.sniper.soft_nms(b, torch.rand(2), None, 1, 0.0, 0.3, 0.001)


def _gaussian_weights(dtype, sigma, n, seed, device="cpu"):
    """The gaussian Soft-NMS weight exp(-IoU^2 / sigma), as the kernel computes
    it, for n IoUs spread over (0, 1]: n groups of two boxes, [0, 0, 1, 1]
    (score 2, selected first) and [0, 0, w, 1] (score 1, so its decayed score
    is the weight itself). Returns (the exponents, rounded as in the kernel,
    and the weights)."""
    npt = np.float32 if dtype == torch.float32 else np.float64
    g = torch.Generator().manual_seed(seed)
    # Log-uniform widths: IoU from 1e-4 to 1, so exponents from ~0 to -1/sigma.
    w = torch.pow(10.0, -4 * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype)
    boxes = torch.zeros(2 * n, 4, dtype=dtype)
    boxes[0::2] = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=dtype)
    boxes[1::2, 2], boxes[1::2, 3] = w, 1.0
    scores = torch.tensor([2.0, 1.0], dtype=dtype).repeat(n)
    groups = torch.arange(n).repeat_interleave(2)
    keep, out = ops.soft_nms(
        boxes.to(device), scores.to(device), groups.to(device), method="gaussian", sigma=sigma, score_threshold=0.0
    )
    keep, out = keep.cpu(), out.cpu()
    assert len(keep) == 2 * n
    weight = torch.empty(n, dtype=dtype)
    odd = keep % 2 == 1
    weight[keep[odd] // 2] = out[odd]
    # The kernel's IoU of the pair (inter = w, union = (1 + w) - w) and exponent.
    wn = w.numpy().astype(npt)
    one = npt(1)
    iou = wn / ((one + wn) - wn)
    arg = -(iou * iou) / npt(sigma)
    return arg, weight.numpy()


def test_exp_float32_correctly_rounded():
    """exp_ (host_device.h) for float computes in double and rounds once: within
    0.5 ulp of math.exp (so correctly rounded) over [-95, 0), subnormals included."""
    worst = 0.0
    for sigma in (0.0105, 0.05, 0.3, 1.0, 7.0, 100.0):
        arg, got = _gaussian_weights(torch.float32, sigma, 4000, seed=int(sigma * 1000))
        for a, v in zip(arg.tolist(), got.tolist()):
            want = math.exp(a)
            f = np.float32(want)
            ulp = float(np.spacing(np.float32(abs(f)))) if f != 0 else float(np.finfo(np.float32).smallest_subnormal)
            worst = max(worst, abs(v - want) / ulp)
    assert worst <= 0.5 + 1e-6, worst


def test_exp_float64_within_one_ulp():
    """exp_ for double (fdlibm's scheme, basic IEEE operations only): within 1 ulp
    of the exact value (0.89 ulp measured on 3e6 arguments, see host_device.h)
    over [-735, 0), subnormal results included."""
    worst = 0.0
    with localcontext() as ctx:
        ctx.prec = 40
        for sigma in (0.00136, 0.01, 0.3, 2.0, 100.0):
            arg, got = _gaussian_weights(torch.float64, sigma, 3000, seed=int(sigma * 1e5))
            for a, v in zip(arg.tolist(), got.tolist()):
                exact = Decimal(a).exp()
                ulp = max(math.ulp(float(exact)), 5e-324)
                worst = max(worst, float(abs(Decimal(v) - exact)) / ulp)
    assert worst < 1.0, worst


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_exp_bit_identical(dtype):
    for sigma in (0.00136, 0.0105, 0.5, 100.0):
        _, cpu = _gaussian_weights(dtype, sigma, 20000, seed=3)
        _, gpu = _gaussian_weights(dtype, sigma, 20000, seed=3, device="cuda")
        assert np.array_equal(cpu.view(np.uint8), gpu.view(np.uint8))


@requires_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(dtype, method):
    g = torch.Generator().manual_seed(12)
    for n, ng in ((1, 1), (300, 1), (5000, 1), (20000, 400)):
        boxes = random_boxes(n, generator=g, dtype=dtype)
        scores = torch.rand(n, generator=g).to(dtype)
        idxs = torch.randint(0, ng, (n,), generator=g)
        k_cpu, s_cpu = ops.soft_nms(boxes, scores, idxs, method=method)
        k_gpu, s_gpu = ops.soft_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), method=method)
        assert torch.equal(k_gpu.cpu(), k_cpu)
        assert torch.equal(s_gpu.cpu(), s_cpu)  # bit-identical, gaussian included (exp_)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_cuda_large_groups_match_cpu(dtype, method, monkeypatch):
    """Groups above SNIPER_SOFT_NMS_LARGE_GROUP run on the windowed 1024-thread
    kernel; lowering the threshold sends small groups there too."""
    g = torch.Generator().manual_seed(13)
    cases = [(3000, 1, None), (6000, 3, None), (300, 4, "0"), (300, 4, "7"), (2500, 1, "100")]
    for n, ng, large in cases:
        if large is None:
            monkeypatch.delenv("SNIPER_SOFT_NMS_LARGE_GROUP", raising=False)
        else:
            monkeypatch.setenv("SNIPER_SOFT_NMS_LARGE_GROUP", large)
        boxes = random_boxes(n, generator=g, canvas=400, dtype=dtype)
        boxes[::9, 2] = boxes[::9, 0]  # zero-width boxes
        scores = (torch.randint(1, 40, (n,), generator=g).double() / 39).to(dtype)  # ties
        idxs = torch.randint(0, ng, (n,), generator=g)
        for ids in (None, idxs):
            k_cpu, s_cpu = ops.soft_nms(boxes, scores, ids, method=method)
            k_gpu, s_gpu = ops.soft_nms(boxes.cuda(), scores.cuda(), None if ids is None else ids.cuda(), method=method)
            assert torch.equal(k_gpu.cpu(), k_cpu), (n, ng, large)
            assert torch.equal(s_gpu.cpu(), s_cpu), (n, ng, large)


@requires_cuda
def test_cuda_bad_tuning_variable(monkeypatch):
    monkeypatch.setenv("SNIPER_SOFT_NMS_LARGE_GROUP", "many")
    with pytest.raises(RuntimeError, match="SNIPER_SOFT_NMS_LARGE_GROUP must be an integer >= 0"):
        ops.soft_nms(torch.zeros(2, 4, device="cuda"), torch.rand(2, device="cuda"))
