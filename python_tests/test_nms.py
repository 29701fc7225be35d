import pytest
import reference as ref
import torch
from common_utils import ALL_DTYPES, DEVICES, MMCV_BOXES, MMCV_SCORES, random_boxes, requires_cuda
from fuzz.values import Arg, random_scores, tensor_arg
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import OpTester, Sample

from sniper_ext import ops
from sniper_ext.baselines import box_iou_torch


def _scores(n, seed=0, dtype=torch.float64):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def nms_fuzz_args(ctx, idxs=False):
    """A random valid call of nms (batched_nms with `idxs`): the same for the raw op and the wrapper."""
    dt = ctx.dtype()
    n = ctx.n(30)
    args = [tensor_arg("boxes", ctx.boxes(n, dtype=dt), "boxes"), tensor_arg("scores", random_scores(ctx, n, dt))]
    if idxs:
        args.append(tensor_arg("idxs", ctx.ints(0, 4, n), "index", 4))
    args.append(Arg("iou_threshold", ctx.uniform(0, 1), "float"))
    return args


def _edge_cases(device, dtype):
    """(boxes, scores, iou_threshold, name) of test_edge_cases and the mmcv fixture."""
    f = lambda x: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
    yield f(MMCV_BOXES), f(MMCV_SCORES), 0.3, "mmcv fixture"
    yield f([[0, 0, 0, 0]])[:0], f([0.0])[:0], 0.5, "no boxes"
    yield f([[0, 0, 1, 1]]), f([0.5]), 0.5, "one box"
    yield f([[0, 0, 2, 2]] * 3), f([0.7] * 3), 0.5, "identical boxes and scores: the lower index survives"
    yield f([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 3, 0]]), f([0.1, 0.3, 0.2]), 0.0, "zero-area boxes overlap nothing"
    yield f([[0, 0, 2, 1], [0, 0, 1, 1]]), f([0.9, 0.8]), 0.5, "IoU at the threshold is kept"
    yield f([[0, 0, 2, 1], [0, 0, 1, 1]]), f([0.9, 0.8]), 0.49, "IoU above the threshold"
    yield f([[0, 0, 2, 2]]).expand(3, 4), f([0.7]).expand(3), 0.5, "expanded boxes and scores"


class TestNms(OpTester):
    """sniper::nms through ops.nms: kept indices, exactly those of the reference in every dtype."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.nms", "raw.nms")
    opcheck_samples = ("150 random boxes", "no boxes")

    def fn(self, boxes, scores, iou_threshold):
        return ops.nms(boxes, scores, iou_threshold)

    def expected_fn(self, boxes, scores, iou_threshold):
        return torch.tensor(ref.nms(boxes.tolist(), scores.tolist(), iou_threshold), dtype=torch.int64)

    def output_dtypes(self, dtype):
        return (torch.int64,)

    def sample_inputs(self, device, dtype):
        for boxes, scores, thr, name in _edge_cases(device, dtype):
            yield Sample((boxes, scores, thr), name=name)
        # test_dtypes' input: decided alike in every dtype.
        boxes, scores = random_boxes(150, dtype=dtype, device=device), _scores(150, 3, dtype).to(device)
        yield Sample((boxes, scores, 0.5), name="150 random boxes")
        boxes, scores = random_boxes(200, dtype=dtype, device=device), _scores(200, 0, dtype).to(device)
        yield Sample((boxes, scores, 0.0), name="200 random boxes, threshold 0")

    def raw_calls(self, sample):
        return [(torch.ops.sniper.nms.default, sample.args)]

    def fuzz_args(self, ctx, target):
        return nms_fuzz_args(ctx)


class TestBatchedNms(OpTester):
    """sniper::batched_nms through ops.batched_nms."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.batched_nms", "raw.batched_nms")
    opcheck_samples = ("300 boxes, 10 groups",)

    def fn(self, boxes, scores, idxs, iou_threshold):
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)

    def expected_fn(self, boxes, scores, idxs, iou_threshold):
        keep = ref.nms(boxes.tolist(), scores.tolist(), iou_threshold, idxs.tolist())
        return torch.tensor(keep, dtype=torch.int64)

    def output_dtypes(self, dtype):
        return (torch.int64,)

    def sample_inputs(self, device, dtype):
        # test_batched_matches_reference's input: negative and sparse group ids, int64 and int32.
        boxes, scores = random_boxes(300, dtype=dtype, device=device), _scores(300, 1, dtype).to(device)
        idxs = torch.randint(-3, 7, (300,), generator=torch.Generator().manual_seed(2)).to(device)
        yield Sample((boxes, scores, idxs, 0.4), name="300 boxes, 10 groups")
        yield Sample((boxes, scores, idxs.int(), 0.4), name="300 boxes, int32 group ids")
        for b, s, thr, name in _edge_cases(device, dtype):
            ids = (torch.arange(len(b), device=device) % 2).flip(0)
            yield Sample((b, s, ids, thr), name=f"{name}, two groups")
        one = torch.zeros(1, dtype=torch.int64, device=device).expand(150)
        yield Sample((boxes[:150], scores[:150], one, 0.5), name="expanded group ids: one group")

    def raw_calls(self, sample):
        return [(torch.ops.sniper.batched_nms.default, sample.args)]

    def fuzz_args(self, ctx, target):
        return nms_fuzz_args(ctx, idxs=True)


def test_fixture():
    b, s = torch.tensor(MMCV_BOXES), torch.tensor(MMCV_SCORES)
    assert ops.nms(b, s, 0.3).tolist() == [1, 0, 3]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("thr", [0.0, 0.1, 0.5, 0.9])
def test_matches_reference(device, thr):
    boxes, scores = random_boxes(200), _scores(200)
    got = ops.nms(boxes.to(device), scores.to(device), thr).cpu().tolist()
    assert got == ref.nms(boxes.tolist(), scores.tolist(), thr)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_matches_reference(device):
    boxes, scores = random_boxes(300), _scores(300, 1)
    idxs = torch.randint(-3, 7, (300,), generator=torch.Generator().manual_seed(2))
    for idx_dtype in (torch.int64, torch.int32):
        got = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device, idx_dtype), 0.4)
        assert got.cpu().tolist() == ref.nms(boxes.tolist(), scores.tolist(), 0.4, idxs.tolist())


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_dtypes(dtype, device):
    boxes, scores = random_boxes(150, dtype=dtype), _scores(150, 3, dtype)
    got = ops.nms(boxes.to(device), scores.to(device), 0.5).cpu().tolist()
    # The same rounded values, decided in exact float64 arithmetic.
    assert got == ref.nms(boxes.double().tolist(), scores.double().tolist(), 0.5)


@pytest.mark.parametrize("device", DEVICES)
def test_edge_cases(device):
    f = lambda x: torch.tensor(x, dtype=torch.float32, device=device)  # noqa: E731
    empty = ops.nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert ops.nms(f([[0, 0, 1, 1]]), f([0.5]), 0.5).tolist() == [0]
    # Identical boxes and scores: the lower index survives.
    assert ops.nms(f([[0, 0, 2, 2]] * 3), f([0.7] * 3), 0.5).tolist() == [0]
    # Zero-area boxes overlap nothing: all kept, by score.
    assert ops.nms(f([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 3, 0]]), f([0.1, 0.3, 0.2]), 0.0).tolist() == [1, 2, 0]
    # IoU exactly at the threshold is not suppressed (strict >).
    assert ops.nms(f([[0, 0, 2, 1], [0, 0, 1, 1]]), f([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert ops.nms(f([[0, 0, 2, 1], [0, 0, 1, 1]]), f([0.9, 0.8]), 0.49).tolist() == [0]


def _check_nms_invariants(boxes, scores, idxs, keep, thr):
    """Kept boxes do not overlap (> thr) within a group; every dropped box overlaps a kept,
    higher-ranked box of its group."""
    kept = torch.zeros(len(boxes), dtype=torch.bool)
    kept[keep] = True
    assert kept.sum() == len(keep)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])

    for gid in torch.unique(idxs).tolist():
        m = idxs == gid
        kb, ks = boxes[m & kept], scores[m & kept]
        o = box_iou_torch(kb, kb)
        o.fill_diagonal_(0)
        assert o.max() <= thr if len(kb) > 1 else True
        db, ds = boxes[m & ~kept], scores[m & ~kept]
        if len(db):
            ok = (box_iou_torch(db, kb) > thr) & (ks[None, :] >= ds[:, None])
            assert ok.any(dim=1).all()


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_100k_boxes(device):
    g = torch.Generator().manual_seed(5)
    n = 100_000
    # Batched: 1000 groups of ~100 boxes.
    boxes, scores = random_boxes(n, generator=g, canvas=200), torch.rand(n, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 1000, (n,), generator=g)
    keep = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), 0.5).cpu()
    _check_nms_invariants(boxes, scores, idxs, keep, 0.5)
    # One group: 100k boxes jittered around 150 centres.
    centres = torch.rand(150, 2, generator=g, dtype=torch.float64) * 1000
    c = centres[torch.randint(0, 150, (n,), generator=g)] + torch.rand(n, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([c, c + 30], dim=1)
    keep = ops.nms(boxes.to(device), scores.to(device), 0.5).cpu()
    _check_nms_invariants(boxes, scores, torch.zeros(n, dtype=torch.int64), keep, 0.5)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    groups=st.integers(1, 4),
    thr=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference(n, groups, thr, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, generator=g, canvas=30, max_size=20)
    # Coarse scores make ties frequent.
    scores = torch.randint(0, 5, (n,), generator=g).double() / 4
    idxs = torch.randint(0, groups, (n,), generator=g)
    assert ops.nms(boxes, scores, thr).tolist() == ref.nms(boxes.tolist(), scores.tolist(), thr)
    got = ops.batched_nms(boxes, scores, idxs, thr).tolist()
    assert got == ref.nms(boxes.tolist(), scores.tolist(), thr, idxs.tolist())


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda b, s: ops.nms(b, s, -0.1), ValueError, "`iou_threshold` must be a finite number >= 0"),
        (lambda b, s: ops.nms(b, s, float("nan")), ValueError, "`iou_threshold`"),
        (lambda b, s: ops.nms(b, s[:2], 0.5), ValueError, r"`scores` must have shape \[3\]"),
        (lambda b, s: ops.nms(b, s.double(), 0.5), TypeError, "`scores` must have the dtype of `boxes`"),
        (lambda b, s: ops.nms(b[:, :3], s, 0.5), ValueError, r"`boxes` must have shape \[N, 4\]"),
        (lambda b, s: ops.nms(b, s.to("meta"), 0.5), ValueError, "`scores` is on meta"),
        (lambda b, s: ops.nms(b.clone().fill_(float("inf")), s, 0.5), ValueError, r"`boxes`\[0\]"),
        (lambda b, s: ops.nms(b, s.clone().fill_(float("nan")), 0.5), ValueError, r"`scores`\[0\] = nan"),
        (lambda b, s: ops.batched_nms(b, s, torch.zeros(3), 0.5), TypeError, "`idxs` must be an integer"),
        (lambda b, s: ops.batched_nms(b, s, torch.zeros(2, dtype=torch.long), 0.5), ValueError, r"`idxs`"),
    ],
)
def test_bad_input(call, err, match):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    with pytest.raises(err, match=match):
        call(boxes, torch.rand(3))


def test_raw_op_rejects_bad_shapes():
    with pytest.raises(RuntimeError, match=r"nms: `scores` must have shape \[2\]"):
        torch.ops.sniper.nms(torch.zeros(2, 4), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match="`iou_threshold` must be >= 0"):
        torch.ops.sniper.nms(torch.zeros(2, 4), torch.zeros(2), -1.0)


@requires_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(11)
    for n in (1, 63, 64, 65, 1000, 5000):
        boxes, scores = random_boxes(n, generator=g, dtype=dtype), torch.rand(n, generator=g).to(dtype)
        idxs = torch.randint(0, 17, (n,), generator=g)
        assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), ops.nms(boxes, scores, 0.5))
        assert torch.equal(
            ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5).cpu(),
            ops.batched_nms(boxes, scores, idxs, 0.5),
        )


def _proposal_like(chips, per_chip, generator, canvas=512.0):
    """RPN-proposal-like boxes: uniform centres, log-uniform sizes 8..256."""
    n = chips * per_chip
    c = torch.rand(n, 2, generator=generator, dtype=torch.float64) * canvas
    wh = torch.pow(2.0, 3 + 5 * torch.rand(n, 2, generator=generator, dtype=torch.float64))
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1)
    return (
        boxes,
        torch.rand(n, generator=generator, dtype=torch.float64),
        torch.arange(chips).repeat_interleave(per_chip),
    )


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_bitmask_paths_match_cpu(dtype, monkeypatch):
    """Small inputs through the large-group paths: SNIPER_NMS_LARGE_SEGMENT sends
    batched groups to the bitmask path, SNIPER_NMS_MASK_BUDGET batches them and
    tiles a group whose mask does not fit (512 bytes: 64-box tiles)."""
    g = torch.Generator().manual_seed(21)
    for large, budget in [("0", "512"), ("40", "4096"), ("100", "100000"), ("0", "300000")]:
        monkeypatch.setenv("SNIPER_NMS_LARGE_SEGMENT", large)
        monkeypatch.setenv("SNIPER_NMS_MASK_BUDGET", budget)
        for n in (1, 64, 65, 300, 1500):
            boxes = random_boxes(n, generator=g, canvas=150, dtype=dtype)
            scores = (torch.randint(0, 30, (n,), generator=g).double() / 29).to(dtype)  # ties
            idxs = torch.randint(0, 5, (n,), generator=g)
            for thr in (0.0, 0.5):
                assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), thr).cpu(), ops.nms(boxes, scores, thr))
                assert torch.equal(
                    ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr).cpu(),
                    ops.batched_nms(boxes, scores, idxs, thr),
                )


@requires_cuda
def test_cuda_large_groups_default_tuning():
    """At the default thresholds: 4 x 18k proposals (one batch of bitmask jobs,
    as in filter_proposals) and one group of 60k (over the 256 MiB mask budget:
    two column tiles)."""
    g = torch.Generator().manual_seed(22)
    boxes, scores, idxs = _proposal_like(4, 18_000, g)
    for thr in (0.5, 0.7):
        assert torch.equal(
            ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr).cpu(),
            ops.batched_nms(boxes, scores, idxs, thr),
        )
    boxes, scores, _ = _proposal_like(1, 60_000, g, canvas=2000.0)
    assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), ops.nms(boxes, scores, 0.5))


@requires_cuda
def test_cuda_bad_tuning_variable(monkeypatch):
    monkeypatch.setenv("SNIPER_NMS_MASK_BUDGET", "100")
    with pytest.raises(RuntimeError, match="SNIPER_NMS_MASK_BUDGET must be an integer >= 512"):
        ops.nms(torch.zeros(2, 4, device="cuda"), torch.rand(2, device="cuda"), 0.5)
