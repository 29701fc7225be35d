import math

import pytest
import reference as ref
import torch
from common_utils import DEVICES, random_boxes, requires_cuda
from fuzz.values import Arg, small_anchors, tensor_arg
from op_tester import OpTester, Sample

from sniper_ext import modeling, ops


def test_make_anchors_layout():
    a = modeling.make_anchors((32, 32))
    assert a.shape == (32 * 32 * 21, 4) and a.dtype == torch.float32
    a = modeling.make_anchors((2, 3), stride=16, base_size=16, ratios=(0.5, 1, 2), scales=(2, 4), dtype=torch.float64)
    assert a.shape == (2 * 3 * 6, 4)
    # Cell (y=1, x=2), ratio 1 (second), scale 4: centre (40, 24), 64 x 64.
    k = (1 * 3 + 2) * 6 + 1 * 2 + 1
    assert a[k].tolist() == [8.0, -8.0, 72.0, 56.0]
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    torch.testing.assert_close((w * h)[:6], torch.tensor([32.0**2, 64.0**2] * 3, dtype=torch.float64))
    torch.testing.assert_close((h / w)[:6], torch.tensor([0.5, 0.5, 1, 1, 2, 2], dtype=torch.float64))


def _case(device="cpu", dtype=torch.float64):
    f = lambda x: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
    anchors = f(
        [[0, 0, 32, 32], [16, 0, 48, 32], [200, 200, 232, 232], [-40, 0, 0, 32], [100, 100, 140, 140], [60, 60, 70, 70]]
    )
    return anchors, f


@pytest.mark.parametrize("device", DEVICES)
def test_rules_by_hand(device):
    anchors, f = _case(device)
    canvas = f([[256, 256], [256, 256], [256, 256]]).float()
    gt = f(
        [
            [[0, 0, 32, 32], [100, 100, 136, 136], [0, 0, 0, 0]],  # exact match; an invalid GT near anchor 4
            [[58, 58, 80, 80], [0, 0, 0, 0], [0, 0, 0, 0]],  # only a weak match (best-anchor rule)
            [[200, 200, 230, 230], [0, 0, 0, 0], [0, 0, 0, 0]],  # only invalid GT
        ]
    )
    state = torch.tensor([[1, 0, -1], [1, -1, -1], [0, -1, -1]], dtype=torch.int8, device=device)
    labels, matched = ops.label_anchors(anchors, gt, state, canvas)
    # Chip 0: anchor 0 is the GT (1); anchor 1 IoU 1/3 -> 0; anchor 3 reaches 40 px beyond -> -1;
    # anchor 4 overlaps the invalid GT (IoU 0.81) -> -1; others 0.
    assert labels[0].tolist() == [1, 0, 0, -1, -1, 0]
    assert matched[0].tolist() == [0, -1, -1, -1, -1, -1]
    # Chip 1: anchor 5 has IoU 100/484 with the only valid GT, its best anchor -> 1.
    assert labels[1].tolist() == [0, 0, 0, -1, 0, 1]
    assert matched[1].tolist() == [-1, -1, -1, -1, -1, 0]
    # Chip 2: no valid GT: all considered anchors 0, but the invalid GT still ignores anchor 2.
    assert labels[2].tolist() == [0, 0, -1, -1, 0, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_invalid_gt_overrides_a_positive(device):
    anchors, f = _case(device)
    gt = f([[[0, 0, 32, 32], [1, 1, 33, 33]]])
    state = torch.tensor([[1, 0]], dtype=torch.int8, device=device)
    labels, matched = ops.label_anchors(anchors, gt, state, f([[256, 256]]))
    assert labels[0, 0] == -1 and matched[0, 0] == -1
    labels, _ = ops.label_anchors(anchors, gt, state, f([[256, 256]]), invalid_iou=0.95)
    assert labels[0, 0] == 1


def _random_chips(seed, anchors, chips=5, g=12, size=128.0):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.stack([random_boxes(g, generator=gen, canvas=size, max_size=90) for _ in range(chips)])
    gt[0, 3] = gt[0, 2]  # duplicate GT (ties)
    state = torch.randint(-1, 2, (chips, g), generator=gen, dtype=torch.int8)
    state[1] = torch.where(state[1] == 1, 0, state[1])  # chip 1: no valid GT
    canvas = torch.tensor([[size, size], [size, size * 0.75], [size * 0.6, size], [size, size], [size, size]])[:chips]
    return gt, state, canvas


def label_anchors_fuzz_args(ctx, raw):
    """A random valid call of label_anchors: the thresholds positional (raw op) or keywords (wrapper)."""
    dt = ctx.dtype()
    b, g = ctx.n(3), ctx.n(5)
    pos = ctx.uniform(0.3, 0.8)
    args = [
        tensor_arg("anchors", small_anchors(ctx, dt), "boxes"),
        tensor_arg("gt_boxes", ctx.boxes(b, g, dtype=dt, canvas=100, max_size=80), "boxes"),
        tensor_arg("gt_state", ctx.ints(-1, 2, b, g, dtype=torch.int8), "state"),
        tensor_arg(
            "canvas_wh", ctx.rand(b, 2, dtype=ctx.rng.choice([torch.float32, torch.float64]), lo=64, hi=256), "wh"
        ),
    ]
    scal = [
        ("pos_iou", pos),
        ("neg_iou", ctx.uniform(0, pos)),
        ("invalid_iou", ctx.uniform(0, 1)),
        ("allowed_border", ctx.uniform(0, 40)),
    ]
    args += [Arg(k, v, "float", keyword=not raw) for k, v in scal]
    return args


THRESHOLDS = ("pos_iou", "neg_iou", "invalid_iou", "allowed_border")


class TestLabelAnchors(OpTester):
    """sniper::label_anchors through ops.label_anchors: labels and matches exactly the reference's in
    float64; in the other dtypes (float32 IoUs) only labels within rounding of a threshold may differ."""

    grad_args = ()
    exact = True
    fuzz_targets = ("ops.label_anchors", "raw.label_anchors")
    opcheck_samples = ("grid anchors, 3 chips",)

    def fn(self, anchors, gt_boxes, gt_state, canvas_wh, **thresholds):
        return ops.label_anchors(anchors, gt_boxes, gt_state, canvas_wh, **thresholds)

    def expected_fn(self, anchors, gt_boxes, gt_state, canvas_wh, **thresholds):
        t = dict(zip(THRESHOLDS, (0.5, 0.4, 0.3, 32.0))) | thresholds
        labels, matched = [], []
        for c in range(len(gt_boxes)):
            rl, rm = ref.label_anchors(
                anchors.tolist(), gt_boxes[c].tolist(), gt_state[c].tolist(), *canvas_wh[c].tolist(),
                t["pos_iou"], t["neg_iou"], t["invalid_iou"], t["allowed_border"],
            )  # fmt: skip
            labels.append(rl)
            matched.append(rm)
        shape = (len(gt_boxes), len(anchors))
        return (
            torch.tensor(labels, dtype=torch.int64).reshape(shape),
            torch.tensor(matched, dtype=torch.int64).reshape(shape),
        )

    def output_dtypes(self, dtype):
        return (torch.int8, torch.int64)

    def check_forward(self, got, want, dtype, name):
        if dtype == torch.float64:
            return super().check_forward(got, want, dtype, name)
        labels, matched = (t.cpu().long() for t in got)
        assert labels.shape == want[0].shape and matched.shape == want[1].shape, name
        # test_low_precision_dtypes' rule: labels agree but for IoUs within rounding of a threshold.
        agree = (labels == want[0]).float().mean().item() if labels.numel() else 1.0
        assert agree > 0.995, (name, agree)
        same = labels == want[0]
        assert torch.equal(matched[same], want[1][same]), name

    def sample_inputs(self, device, dtype):
        anchors, f = _case(device, dtype)
        canvas = f([[256, 256], [256, 256], [256, 256]]).float()
        gt = f(
            [
                [[0, 0, 32, 32], [100, 100, 136, 136], [0, 0, 0, 0]],
                [[58, 58, 80, 80], [0, 0, 0, 0], [0, 0, 0, 0]],
                [[200, 200, 230, 230], [0, 0, 0, 0], [0, 0, 0, 0]],
            ]
        )
        state = torch.tensor([[1, 0, -1], [1, -1, -1], [0, -1, -1]], dtype=torch.int8, device=device)
        yield Sample((anchors, gt, state, canvas), name="test_rules_by_hand")
        gt = f([[[0, 0, 32, 32], [1, 1, 33, 33]]])
        state = torch.tensor([[1, 0]], dtype=torch.int8, device=device)
        yield Sample((anchors, gt, state, f([[256, 256]])), name="an invalid GT overrides a positive")
        kw = dict(pos_iou=0.5, neg_iou=0.3, invalid_iou=0.3, allowed_border=8.0)
        grid = modeling.make_anchors((8, 8), stride=16, scales=(1, 2, 4), dtype=torch.float64)
        gt, state, canvas = _random_chips(2, grid, chips=3)
        sample = Sample((grid, gt.round(), state, canvas), kw, name="grid anchors, 3 chips").to(device, dtype)
        yield sample
        irregular = random_boxes(200, generator=torch.Generator().manual_seed(1), canvas=140, max_size=80)
        gt, state, canvas = _random_chips(2, irregular, chips=2)
        yield Sample((irregular, gt.round(), state, canvas), kw, name="irregular anchors").to(device, dtype)
        a, gt, state, canvas = sample.args
        yield Sample((a, gt[:0], state[:0], canvas[:0]), kw, name="no chips")
        yield Sample((a, gt[:, :0], state[:, :0], canvas), kw, name="no GT")
        yield Sample((a[:0], gt, state, canvas), kw, name="no anchors")
        expanded = torch.full((1, 2), 128.0, device=device).expand(len(gt), 2)
        yield Sample((a, gt, state, expanded), kw, name="expanded canvases")

    def raw_calls(self, sample):
        t = dict(zip(THRESHOLDS, (0.5, 0.4, 0.3, 32.0))) | sample.kwargs
        return [(torch.ops.sniper.label_anchors.default, tuple(sample.args) + tuple(t[k] for k in THRESHOLDS))]

    def fuzz_args(self, ctx, target):
        return label_anchors_fuzz_args(ctx, raw=target.startswith("raw."))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["grid", "irregular"])
def test_matches_reference(device, kind):
    if kind == "grid":
        anchors = modeling.make_anchors((8, 8), stride=16, scales=(1, 2, 4), dtype=torch.float64)
    else:  # every anchor its own shape: the kernel's no-index path
        anchors = random_boxes(700, generator=torch.Generator().manual_seed(1), canvas=140, max_size=80)
    gt, state, canvas = _random_chips(2, anchors)
    kw = dict(pos_iou=0.5, neg_iou=0.3, invalid_iou=0.3, allowed_border=8)
    labels, matched = ops.label_anchors(anchors.to(device), gt.to(device), state.to(device), canvas.to(device), **kw)
    for c in range(len(gt)):
        rl, rm = ref.label_anchors(
            anchors.tolist(), gt[c].tolist(), state[c].tolist(), *canvas[c].tolist(), 0.5, 0.3, 0.3, 8
        )
        assert labels[c].cpu().tolist() == rl, f"chip {c}"
        assert matched[c].cpu().tolist() == rm, f"chip {c}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_dtypes(dtype):
    anchors = modeling.make_anchors((8, 8), stride=16, scales=(1, 2, 4), dtype=torch.float64)
    gt, state, canvas = _random_chips(3, anchors)
    gt = gt.round()
    got = ops.label_anchors(anchors.to(dtype), gt.to(dtype), state, canvas)
    want = ops.label_anchors(anchors.to(dtype).double(), gt.to(dtype).double(), state, canvas)
    assert got[0].dtype == torch.int8
    agree = (got[0] == want[0]).float().mean().item()
    assert agree > 0.995, agree  # only IoUs within rounding of a threshold may differ


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_padding_only(device):
    anchors = modeling.make_anchors((4, 4), device=device, dtype=torch.float64)
    labels, matched = ops.label_anchors(
        anchors,
        torch.zeros(0, 3, 4, dtype=torch.float64, device=device),
        torch.zeros(0, 3, dtype=torch.int8, device=device),
        torch.zeros(0, 2, device=device),
    )
    assert labels.shape == (0, len(anchors))
    gt = torch.zeros(2, 0, 4, dtype=torch.float64, device=device)
    labels, matched = ops.label_anchors(
        anchors, gt, torch.zeros(2, 0, dtype=torch.int8, device=device), torch.full((2, 2), 64.0, device=device)
    )
    considered = (anchors[:, 0] >= -32) & (anchors[:, 1] >= -32) & (anchors[:, 2] <= 96) & (anchors[:, 3] <= 96)
    assert torch.equal(labels[0], torch.where(considered, 0, -1).to(torch.int8))
    assert (matched == -1).all()


@pytest.mark.slow
def test_sniper_size_runs():
    anchors = modeling.make_anchors((32, 32))
    gen = torch.Generator().manual_seed(0)
    gt = torch.stack([random_boxes(50, generator=gen, canvas=512, max_size=300).float() for _ in range(16)])
    state = torch.randint(-1, 2, (16, 50), generator=gen, dtype=torch.int8)
    labels, matched = ops.label_anchors(anchors, gt, state, torch.full((16, 2), 512.0))
    assert labels.shape == (16, 21504)
    # Spot-check one chip against the plain PyTorch computation of the same rules.
    c = 3
    iou = ops.box_iou(anchors, gt[c])
    valid, invalid = state[c] == 1, state[c] == 0
    m = torch.where(valid[None], iou, torch.full_like(iou, -1)).max(1).values.clamp(min=0)
    considered = (anchors[:, :2] >= -32).all(1) & (anchors[:, 2] <= 544) & (anchors[:, 3] <= 544)
    gt_best = torch.where(considered[:, None], iou, torch.zeros_like(iou)).max(0).values
    best = ((iou == gt_best[None]) & (gt_best[None] > 0) & valid[None] & considered[:, None]).any(1)
    want = torch.where(m >= 0.5, 1, torch.where(m < 0.4, 0, -1))
    want = torch.where(best, 1, want)
    want = torch.where((iou[:, invalid] > 0.3).any(1) | ~considered, -1, want)
    assert torch.equal(labels[c].long(), want)


def test_bad_input():
    a = modeling.make_anchors((2, 2))
    gt, st, cv = torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.int8), torch.full((1, 2), 64.0)
    with pytest.raises(ValueError, match=r"`gt_state` must have shape \[1, 2\]"):
        ops.label_anchors(a, gt, st[:, :1], cv)
    with pytest.raises(TypeError, match="`gt_state` must be int8"):
        ops.label_anchors(a, gt, st.long(), cv)
    with pytest.raises(TypeError, match="`gt_boxes` must have the dtype of `anchors`"):
        ops.label_anchors(a, gt.double(), st, cv)
    with pytest.raises(ValueError, match=r"`canvas_wh` must have shape \[1, 2\]"):
        ops.label_anchors(a, gt, st, cv[:, :1])
    with pytest.raises(ValueError, match="must not exceed `pos_iou`"):
        ops.label_anchors(a, gt, st, cv, pos_iou=0.3, neg_iou=0.4)
    with pytest.raises(ValueError, match="`gt_boxes` of valid and invalid GT must be finite"):
        ops.label_anchors(a, torch.full((1, 2, 4), float("nan")), st, cv)
    with pytest.raises(ValueError, match=r"`gt_state` values must be 1, 0 or -1 .*got 3 at \[0, 1\]"):
        ops.label_anchors(a, gt, torch.tensor([[1, 3]], dtype=torch.int8), cv)
    with pytest.raises(ValueError, match=r"`gt_state` values must be 1, 0 or -1 .*got -2 at \[0, 0\]"):
        ops.label_anchors(a, gt, torch.tensor([[-2, 0]], dtype=torch.int8), cv)
    with pytest.raises(RuntimeError, match=r"label_anchors: `gt_boxes` must have shape \[B, G, 4\]"):
        torch.ops.sniper.label_anchors(a, gt[0], st, cv, 0.5, 0.4, 0.3, 32.0)


@pytest.mark.parametrize("device", DEVICES)
def test_raw_op_other_state_values(device):
    """The raw op (no value check) on every device: a state other than 1 (valid) and 0 (invalid)
    means no GT, like the -1 padding, as in the reference."""
    anchors = modeling.make_anchors((6, 6), stride=16, scales=(1, 2, 4), dtype=torch.float64)
    gt, state, canvas = _random_chips(5, anchors, chips=4, g=10, size=96.0)
    others = torch.tensor([2, 5, 127, -2, -128], dtype=torch.int8)
    gen = torch.Generator().manual_seed(6)
    odd = torch.rand(state.shape, generator=gen) < 0.4
    state = torch.where(odd, others[torch.randint(0, 5, state.shape, generator=gen)], state)
    state[2, :3] = torch.tensor([1, 2, 2], dtype=torch.int8)  # a valid GT among odd ones
    state[3] = torch.where(state[3] == 1, 3, state[3])  # odd values but no valid GT
    labels, matched = torch.ops.sniper.label_anchors(
        anchors.to(device), gt.to(device), state.to(device), canvas.to(device), 0.5, 0.3, 0.3, 8.0
    )
    for c in range(len(gt)):
        rl, rm = ref.label_anchors(
            anchors.tolist(), gt[c].tolist(), state[c].tolist(), *canvas[c].tolist(), 0.5, 0.3, 0.3, 8
        )
        assert labels[c].cpu().tolist() == rl, f"chip {c}"
        assert matched[c].cpu().tolist() == rm, f"chip {c}"
    # Same as with those values replaced by -1.
    padded = torch.where((state == 1) | (state == 0), state, torch.tensor(-1, dtype=torch.int8))
    want = torch.ops.sniper.label_anchors(anchors, gt, padded, canvas, 0.5, 0.3, 0.3, 8.0)
    assert torch.equal(labels.cpu(), want[0]) and torch.equal(matched.cpu(), want[1])


@requires_cuda
def test_cuda_more_chips_than_a_grid_dimension():
    anchors = modeling.make_anchors((2, 2), scales=(1, 2), device="cuda")
    chips = 70000  # > 65535 (grid.y)
    gen = torch.Generator().manual_seed(8)
    gt = torch.stack([random_boxes(3, generator=gen, canvas=32, max_size=24) for _ in range(chips)]).float()
    state = torch.randint(-1, 2, (chips, 3), generator=gen, dtype=torch.int8)
    canvas = torch.full((chips, 2), 32.0)
    cpu = torch.ops.sniper.label_anchors(anchors.cpu(), gt, state, canvas, 0.5, 0.4, 0.3, 8.0)
    gpu = torch.ops.sniper.label_anchors(anchors, gt.cuda(), state.cuda(), canvas.cuda(), 0.5, 0.4, 0.3, 8.0)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    anchors = modeling.make_anchors((32, 32), dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    gt = torch.stack([random_boxes(200, generator=gen, canvas=512, max_size=300) for _ in range(8)]).to(dtype)
    state = torch.randint(-1, 2, (8, 200), generator=gen, dtype=torch.int8)
    canvas = torch.tensor([[512.0, 512.0]] * 4 + [[300.0, 512.0]] * 4)
    cpu = ops.label_anchors(anchors, gt, state, canvas)
    gpu = ops.label_anchors(anchors.cuda(), gt.cuda(), state.cuda(), canvas.cuda())
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


# -- sampling -----------------------------------------------------------------------------------


def test_sample_anchors():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 2, (4, 3000), generator=gen, dtype=torch.int8)
    labels[1] = torch.where(labels[1] == 1, 0, labels[1])  # no positives: all 256 negatives
    labels[2, :] = -1
    labels[2, :10] = 1  # few positives, no negatives
    out = modeling.sample_anchors(labels, 256, 0.5, generator=torch.Generator().manual_seed(1))
    again = modeling.sample_anchors(labels, 256, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert ((out == 1) <= (labels == 1)).all() and ((out == 0) <= (labels == 0)).all()
    n_pos, n_neg = (out == 1).sum(1), (out == 0).sum(1)
    assert n_pos[0] == 128 and n_neg[0] == 128
    assert n_pos[1] == 0 and n_neg[1] == 256
    assert n_pos[2] == 10 and n_neg[2] == 0
    other = modeling.sample_anchors(labels, 256, 0.5, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out, other)
    assert (modeling.sample_anchors(labels, 64, 0.25) == 1).sum(1).max() <= 16


# -- box coding ---------------------------------------------------------------------------------


def test_encode_decode():
    ref_box = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    tgt = torch.tensor([[5.0, 10.0, 25.0, 30.0]], dtype=torch.float64)
    d = modeling.encode_boxes(ref_box, tgt, (10, 10, 5, 5))
    torch.testing.assert_close(
        d, torch.tensor([[10 * 10 / 10, 10 * 10 / 20, 5 * math.log(2), 5 * math.log(1)]], dtype=torch.float64)
    )
    torch.testing.assert_close(modeling.decode_boxes(ref_box, d, (10, 10, 5, 5)), tgt)
    gen = torch.Generator().manual_seed(0)
    a, b = random_boxes(50, generator=gen), random_boxes(50, generator=gen)
    torch.testing.assert_close(modeling.decode_boxes(a, modeling.encode_boxes(a, b)), b)
    # dw is clamped at log(1000/16); clipping to the canvas.
    huge = modeling.decode_boxes(ref_box, torch.tensor([[0.0, 0.0, 50.0, 0.0]], dtype=torch.float64))
    assert math.isclose(huge[0, 2] - huge[0, 0], 10 * 1000 / 16)
    clipped = modeling.decode_boxes(
        ref_box, torch.tensor([[0.0, 0.0, 50.0, 0.0]], dtype=torch.float64), clip_wh=(100, 15)
    )
    assert clipped.tolist() == [[0.0, 0.0, 100.0, 15.0]]
    assert ref.decode([0, 0, 10, 20], [0.1, -0.2, 0.3, 0.1]) == pytest.approx(
        modeling.decode_boxes(ref_box, torch.tensor([[0.1, -0.2, 0.3, 0.1]], dtype=torch.float64))[0].tolist()
    )


# -- hostile arguments (found by python_tests/test_fuzz.py) ----------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(ratios=(NAN,)), ValueError, r"make_anchors: `ratios\[0\]` must be a finite number"),
        (dict(ratios=(1, 0)), ValueError, r"make_anchors: `ratios\[1\]` must be > 0"),
        (dict(scales=(-1,)), ValueError, r"`scales\[0\]` must be > 0"),
        (dict(scales=()), ValueError, "`scales` must have at least one number"),
        (dict(ratios="12"), TypeError, "`ratios` must be a sequence of numbers"),
        (dict(base_size=0), ValueError, "`base_size` must be > 0"),
        (dict(stride=INF), ValueError, "`stride` must be a finite number"),
        (dict(stride=-16), ValueError, "`stride` must be > 0"),
        (dict(stride="16"), TypeError, "`stride` must be a number"),
        (dict(feature_hw=(2.5, 3)), TypeError, r"`feature_hw\[0\]` must be an int"),
        (dict(feature_hw=(-1, 3)), ValueError, r"`feature_hw\[0\]` must be an int in \[0, inf\]"),
        (dict(feature_hw=3), TypeError, "`feature_hw` must be a pair of ints"),
        (dict(feature_hw=(2**30, 2**30)), ValueError, "the anchors would have .* elements"),
        (dict(ratios=(1e-300,)), ValueError, "beyond the range of torch.float32"),
        (dict(scales=(1e4,), dtype=torch.float16), ValueError, "beyond the range of torch.float16"),
        (dict(dtype=torch.int64), TypeError, "`dtype` must be a floating torch.dtype"),
        (dict(device="bogus"), ValueError, "`device` 'bogus' is not a device"),
    ],
)
def test_make_anchors_bad_arguments(kwargs, err, match):
    kwargs = {"feature_hw": (2, 2), **kwargs}
    with pytest.raises(err, match=match):
        modeling.make_anchors(kwargs.pop("feature_hw"), **kwargs)


def test_make_anchors_extreme_but_valid():
    a = modeling.make_anchors((0, 5))
    assert a.shape == (0, 4)
    a = modeling.make_anchors((1, 1), ratios=(1e-3,), scales=(1,), dtype=torch.float64)
    assert torch.isfinite(a).all()
    assert torch.equal(
        modeling.make_anchors((2, 2), stride=16.0, ratios=torch.tensor([1.0])),
        modeling.make_anchors((2, 2), stride=16, ratios=(1,)),
    )


@pytest.mark.parametrize(
    "labels, kwargs, err, match",
    [
        (torch.tensor([[255, 1, 0]], dtype=torch.uint8), {}, TypeError, "`labels` must be a signed integer tensor"),
        (torch.tensor([[True, False]]), {}, TypeError, "`labels` must be a signed integer tensor .*got torch.bool"),
        (torch.tensor([[1.0, 0.0]]), {}, TypeError, "`labels` must be a signed integer tensor .*float32"),
        (torch.tensor([[3, 0]], dtype=torch.int8), {}, ValueError, "`labels` values must be -1, 0 or 1"),
        (torch.tensor([[1, 0]]), {"num": 1.5}, TypeError, "`num` must be an int, got float"),
        (torch.tensor([[1, 0]]), {"num": NAN}, TypeError, "`num` must be an int"),
        (torch.tensor([[1, 0]]), {"num": -1}, ValueError, r"`num` must be an int in \[0, inf\]"),
        (torch.tensor([[1, 0]]), {"positive_fraction": 1.5}, ValueError, r"`positive_fraction` must lie in \[0, 1\]"),
        (torch.tensor([[1, 0]]), {"positive_fraction": NAN}, ValueError, "`positive_fraction` must be a finite number"),
        (torch.tensor([[1, 0]]), {"generator": 3}, TypeError, "`generator` must be a torch.Generator"),
    ],
)
def test_sample_anchors_bad_arguments(labels, kwargs, err, match):
    with pytest.raises(err, match="sample_anchors: " + match):
        modeling.sample_anchors(labels, **kwargs)


def test_sample_anchors_huge_num_keeps_everything():
    labels = torch.tensor([[1, 0, -1, 1, 0]], dtype=torch.int8)
    for num in (5, 10**30):
        assert torch.equal(modeling.sample_anchors(labels, num, positive_fraction=1.0), labels)


@pytest.mark.parametrize(
    "fn, args, kwargs, err, match",
    [
        (
            "encode_boxes",
            ([[0.0, 0, 0, 10]], [[0.0, 0, 5, 5]]),
            {},
            ValueError,
            r"encode_boxes: `ref` box 0 = .* must be finite with x2 > x1 and y2 > y1",
        ),
        ("encode_boxes", ([[10.0, 0, 0, 10]], [[0.0, 0, 5, 5]]), {}, ValueError, "`ref` box 0"),
        ("encode_boxes", ([[0.0, 0, 10, 10]], [[0.0, 0, 5, 0]]), {}, ValueError, "`target` box 0"),
        ("encode_boxes", ([[0.0, 0, 10]], [[0.0, 0, 5, 5]]), {}, ValueError, r"`ref` must have shape \[..., 4\]"),
        ("encode_boxes", ([[0.0, 0, 10, 10]] * 3, [[0.0, 0, 5, 5]] * 2), {}, ValueError, "do not broadcast"),
        (
            "encode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, 0, 5, 5]]),
            {"weights": (1, 1, 1)},
            ValueError,
            "`weights` must have 4 numbers",
        ),
        (
            "encode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, 0, 5, 5]]),
            {"weights": (1, 1, 0, 1)},
            ValueError,
            r"`weights\[2\]` must be > 0",
        ),
        ("decode_boxes", ([[0.0, 0, 0, 10]], [[0.0, 0, 0, 0]]), {}, ValueError, "decode_boxes: `ref` box 0"),
        (
            "decode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, NAN, 0, 0]]),
            {},
            ValueError,
            "decode_boxes: `deltas` must be finite",
        ),
        (
            "decode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, 0, 0, 0]]),
            {"clip_wh": (NAN, 5)},
            ValueError,
            r"decode_boxes: `clip_wh\[0\]` must be a finite number",
        ),
        (
            "decode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, 0, 0, 0]]),
            {"clip_wh": (-1, 5)},
            ValueError,
            "`clip_wh` must be >= 0",
        ),
        (
            "decode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, 0, 0, 0]]),
            {"clip_wh": torch.tensor([[1.0, NAN]])},
            ValueError,
            "`clip_wh` must be finite and >= 0",
        ),
        (
            "decode_boxes",
            ([[0.0, 0, 10, 10]], [[0.0, 0, 0, 0]]),
            {"clip_wh": torch.ones(3, 2)},
            ValueError,
            "does not broadcast",
        ),
    ],
)
def test_box_coding_bad_arguments(fn, args, kwargs, err, match):
    with pytest.raises(err, match=match):
        getattr(modeling, fn)(*(torch.tensor(a, dtype=torch.float64) for a in args), **kwargs)


def test_box_coding_dtypes_must_match():
    with pytest.raises(TypeError, match="encode_boxes: `target` must have the dtype of `ref`"):
        modeling.encode_boxes(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[0.0, 0, 1, 1]], dtype=torch.float64))
    with pytest.raises(TypeError, match="decode_boxes: `ref` must be a floating tensor"):
        modeling.decode_boxes(torch.tensor([[0, 0, 1, 1]]), torch.zeros(1, 4))


def test_label_anchors_bad_values_and_raw_limits():
    a = modeling.make_anchors((2, 2))
    gt, st, cv = torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.int8), torch.full((1, 2), 64.0)
    with pytest.raises(ValueError, match="label_anchors: `canvas_wh` must be finite and positive"):
        ops.label_anchors(a, gt, st, torch.tensor([[NAN, 64.0]]))
    with pytest.raises(ValueError, match=r"label_anchors: `anchors`\[0\]"):
        ops.label_anchors(torch.where(torch.arange(len(a))[:, None] == 0, NAN, a), gt, st, cv)
    with pytest.raises(RuntimeError, match="label_anchors: `gt_state` must be a tensor, got None"):
        torch.ops.sniper.label_anchors(a, gt, None, cv, 0.5, 0.4, 0.3, 32.0)
    big = 1 << 21  # 2**21 chips x 2**21 anchors: refused before anything is allocated
    with pytest.raises(RuntimeError, match=r"label_anchors: the labels would have 4\.39805e\+12 elements"):
        torch.ops.sniper.label_anchors(
            a[:1].expand(big, 4),
            gt[:, :0].expand(big, 0, 4),
            st[:, :0].expand(big, 0),
            cv.expand(big, 2),
            0.5,
            0.4,
            0.3,
            32.0,
        )
    with pytest.raises(ValueError, match="label_anchors: `gt_state` is on meta but `anchors` is on cpu"):
        torch.ops.sniper.label_anchors(a, gt, st.to("meta"), cv, 0.5, 0.4, 0.3, 32.0)  # the fake kernel
