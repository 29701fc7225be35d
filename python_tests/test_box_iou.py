import pytest
import reference as ref
import torch
from common_utils import ALL_DTYPES, DEVICES, random_boxes, requires_cuda, tol
from fuzz.values import tensor_arg
from op_tester import OpTester, Sample

from sniper_ext import ops
from sniper_ext.baselines import box_iou_torch


class TestBoxIou(OpTester):
    """sniper::box_iou through ops.box_iou."""

    grad_args = (0, 1)
    fuzz_targets = ("ops.box_iou", "raw.box_iou")

    def fn(self, boxes1, boxes2):
        return ops.box_iou(boxes1, boxes2)

    def expected_fn(self, boxes1, boxes2):
        iou = ref.box_iou(boxes1.tolist(), boxes2.tolist())
        return torch.tensor(iou, dtype=torch.float64).reshape(len(boxes1), len(boxes2))

    def sample_inputs(self, device, dtype):
        g = torch.Generator().manual_seed(1)
        a, b = (t.to(device, dtype) for t in (random_boxes(37, generator=g), random_boxes(23, generator=g)))
        yield Sample((a, b), name="random 37 x 23")
        # A point (empty union with itself), a line, a box.
        degenerate = torch.tensor([[1.0, 1, 1, 1], [0, 0, 5, 0], [0, 0, 5, 5]], dtype=dtype, device=device)
        yield Sample((degenerate, degenerate), name="degenerate")
        yield Sample((a[:0], b[:3]), name="no boxes1")
        yield Sample((a[:3], b[:0]), name="no boxes2")
        yield Sample((a[:1].expand(4, 4), b), name="expanded boxes1")

    def raw_calls(self, sample):
        return [(torch.ops.sniper.box_iou.default, sample.args)]

    def backward_inputs(self, device):
        g = torch.Generator().manual_seed(3)
        yield Sample(
            (random_boxes(6, generator=g, canvas=20), random_boxes(5, generator=g, canvas=20)), name="6 x 5"
        ).to(device)

    def fuzz_args(self, ctx, target):
        dt = ctx.dtype()
        return [
            tensor_arg("boxes1", ctx.boxes(ctx.n(12), dtype=dt), "boxes"),
            tensor_arg("boxes2", ctx.boxes(ctx.n(12), dtype=dt), "boxes"),
        ]


def test_hand_computed_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 1.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 1.0, 1.0], [20.0, 20.0, 30.0, 30.0]])
    expected = torch.tensor([[25 / 175, 1 / 100, 0.0], [0.0, 0.5, 0.0]])  # [0,0,2,1] misses [5,5,15,15]
    torch.testing.assert_close(ops.box_iou(a, b), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference(device):
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(37, generator=g), random_boxes(23, generator=g)
    got = ops.box_iou(a.to(device), b.to(device)).cpu()
    expected = torch.tensor(ref.box_iou(a.tolist(), b.tolist()), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_dtypes(dtype, device):
    a = random_boxes(20, dtype=dtype, device=device)
    got = ops.box_iou(a, a)
    assert got.dtype == dtype and got.shape == (20, 20)
    expected = ops.box_iou(a.double(), a.double()).to(dtype)  # same rounded inputs, exact math
    torch.testing.assert_close(got, expected, rtol=tol(dtype), atol=tol(dtype))


def test_empty_and_degenerate():
    assert ops.box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    assert ops.box_iou(torch.zeros(3, 4), torch.zeros(0, 4)).shape == (3, 0)
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 0.0, 5.0, 0.0]])
    box = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    assert ops.box_iou(point, point).item() == 0.0  # empty union
    assert ops.box_iou(line, box).item() == 0.0
    assert ops.box_iou(box, box).item() == 1.0


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    a = random_boxes(6, generator=g, canvas=20).requires_grad_()
    b = random_boxes(5, generator=g, canvas=20).requires_grad_()
    assert torch.autograd.gradcheck(ops.box_iou, (a, b))


def test_gradient_matches_plain_pytorch():
    g = torch.Generator().manual_seed(4)
    a = random_boxes(30, generator=g).requires_grad_()
    b = random_boxes(20, generator=g).requires_grad_()
    w = torch.randn(30, 20, generator=g, dtype=torch.float64)
    (ops.box_iou(a, b) * w).sum().backward()
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    (box_iou_torch(a2, b2) * w).sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(3, 5), torch.zeros(2, 4)), r"`boxes1` must have shape \[N, 4\]"),
        ((torch.zeros(3, 4), torch.zeros(4)), r"`boxes2` must have shape \[N, 4\]"),
        ((torch.zeros(3, 4, dtype=torch.int64), torch.zeros(2, 4)), "`boxes1` must be float32"),
        ((torch.zeros(3, 4), torch.zeros(2, 4, dtype=torch.float64)), "`boxes2` must have the dtype"),
        ((torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.zeros(1, 4)), r"`boxes1`\[0\]"),
        ((torch.zeros(1, 4), torch.tensor([[5.0, 0.0, 1.0, 1.0]])), r"x1 <= x2"),
        (([[0, 0, 1, 1]], torch.zeros(1, 4)), "must be a torch.Tensor"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ops.box_iou(*args)


def test_raw_op_checks_shapes():
    with pytest.raises(RuntimeError, match=r"box_iou: `boxes1` must have shape \[N, 4\]"):
        torch.ops.sniper.box_iou(torch.zeros(3, 3), torch.zeros(2, 4))


@requires_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_matches_cpu(dtype):
    a = random_boxes(300, dtype=dtype)
    b = random_boxes(200, generator=torch.Generator().manual_seed(9), dtype=dtype)
    torch.testing.assert_close(ops.box_iou(a.cuda(), b.cuda()).cpu(), ops.box_iou(a, b), rtol=0, atol=0)


def test_boxes_too_large_for_the_compute_type():
    # float32 computes areas in float32: a 2e19-pixel box would give NaN or a silently wrong IoU.
    huge = torch.tensor([[-1e19, -1e19, 1e19, 1e19]])
    with pytest.raises(ValueError, match=r"box_iou: `boxes2`\[0\] = .* is too large: its area must be at most"):
        ops.box_iou(torch.zeros(1, 4), huge)
    assert ops.box_iou(huge.double(), huge.double()).item() == 1.0  # fine in float64


def test_gradient_of_large_boxes():
    """Sides of 1e10 px: union**2 overflowed float32 and zeroed the gradient; now it matches float64."""
    g = torch.Generator().manual_seed(5)
    a64, b64 = (random_boxes(n, generator=g) * 1e8 for n in (7, 6))
    grads = []
    for dt in (torch.float32, torch.float64):
        a, b = a64.to(dt).requires_grad_(), b64.to(dt).requires_grad_()
        ops.box_iou(a, b).sum().backward()
        grads.append((a.grad.double(), b.grad.double()))
    assert grads[1][0].abs().max() > 0
    for g32, g64 in zip(*grads):
        torch.testing.assert_close(g32, g64, rtol=1e-3, atol=1e-15)


def test_raw_op_refuses_huge_outputs():
    b = torch.tensor([[0.0, 0, 1, 1]]).expand(1 << 21, 4)
    with pytest.raises(
        RuntimeError,
        match=r"box_iou: the IoU matrix would have .* elements \(\[2097152, 2097152\]\), "
        r"more than the 2\^40",
    ):
        torch.ops.sniper.box_iou(b, b)
    with pytest.raises(RuntimeError, match="box_iou: `boxes2` must be a tensor, got None"):
        torch.ops.sniper.box_iou(b, None)
    with pytest.raises(ValueError, match="box_iou: `boxes2` is on meta but `boxes1` is on cpu"):
        torch.ops.sniper.box_iou(b[:3], b[:3].to("meta"))  # the fake kernel
