import pytest
import torch
import torch.nn.functional as F
from conftest import requires_cuda

import reference as ref
from sniper_ext import nn as snn
from sniper_ext import ops
from sniper_ext.ops import deform_conv as dc_module


def _case(seed=0, n=2, c=4, h=7, w=6, oc=6, groups=2, kh=3, kw=2, stride=(2, 1), pad=(1, 0), dil=(1, 2), og=2,
          dtype=torch.float64, mask=True, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    off = torch.randn(n, 2 * og * kh * kw, oh, ow, generator=g, dtype=torch.float64) * scale
    wt = torch.randn(oc, c // groups, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(oc, generator=g, dtype=torch.float64)
    m = torch.rand(n, og * kh * kw, oh, ow, generator=g, dtype=torch.float64) if mask else None
    to = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return dict(input=to(x), offset=to(off), weight=to(wt), bias=to(b), stride=stride, padding=pad, dilation=dil,
                mask=to(m))


def _ref(a):
    t = lambda v: None if v is None else v.tolist()  # noqa: E731
    return torch.tensor(ref.deform_conv2d(t(a["input"]), t(a["offset"]), t(a["weight"]), t(a["bias"]), a["stride"],
                                          a["padding"], a["dilation"], t(a["mask"])), dtype=torch.float64)


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("geometry", [
    dict(),
    dict(kh=1, kw=3, stride=(1, 2), pad=(0, 1), dil=(1, 1), og=1, groups=1),
    dict(c=6, oc=3, groups=3, og=3, kh=2, kw=2, stride=(1, 1), pad=(2, 1), dil=(2, 1)),
])
def test_matches_definition(mask, geometry):
    a = _case(mask=mask, **geometry)
    torch.testing.assert_close(ops.deform_conv2d(**a), _ref(a), rtol=1e-12, atol=1e-12)


def test_zero_offset_is_a_convolution():
    a = _case(scale=0.0, mask=False)
    want = F.conv2d(a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], groups=2)
    torch.testing.assert_close(ops.deform_conv2d(**a), want)


def test_zero_batch():
    a = _case(n=0)
    out = ops.deform_conv2d(**a)
    assert out.shape[0] == 0 and out.shape[1] == 6


def test_gradcheck_every_input():
    a = _case(n=1, c=4, h=5, w=5, oc=2, kh=2, kw=2, stride=(1, 1), pad=(1, 0), dil=(1, 1), og=2)
    names = ["input", "offset", "weight", "bias", "mask"]
    leaves = [a[k].clone().requires_grad_() for k in names]

    def f(x, o, w, b, m):
        return ops.deform_conv2d(x, o, w, b, a["stride"], a["padding"], a["dilation"], m)

    assert torch.autograd.gradcheck(f, leaves)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-2), (torch.bfloat16, 8e-2), (torch.float32, 1e-4)])
def test_low_precision_against_float64(dtype, tol):
    a = _case(dtype=dtype)
    want = ops.deform_conv2d(**{k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in a.items()})
    got = ops.deform_conv2d(**a)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())
    leaves = {k: a[k].clone().requires_grad_() for k in ("input", "offset", "weight", "mask")}
    ops.deform_conv2d(**{**a, **leaves}).float().square().sum().backward()
    assert all(v.grad.dtype == dtype and torch.isfinite(v.grad.float()).all() for v in leaves.values())


def test_autocast_bfloat16():
    a = _case(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.deform_conv2d(**a)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ops.deform_conv2d(**a), rtol=8e-2, atol=0.3)


def test_chunked_batch_matches(monkeypatch):
    a = _case(n=5)
    leaves = {k: a[k].clone().requires_grad_() for k in ("input", "offset", "weight", "mask")}
    full = ops.deform_conv2d(**{**a, **leaves})
    full.sum().backward()
    grads = {k: v.grad.clone() for k, v in leaves.items()}
    monkeypatch.setattr(dc_module, "MAX_COLUMN_ELEMENTS", 1)  # one sample per chunk
    leaves2 = {k: a[k].clone().requires_grad_() for k in leaves}
    chunked = ops.deform_conv2d(**{**a, **leaves2})
    chunked.sum().backward()
    torch.testing.assert_close(chunked, full)
    for k in leaves:
        torch.testing.assert_close(leaves2[k].grad, grads[k])


def test_deterministic_backward():
    a = _case(n=2, scale=0.7)
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            x = a["input"].clone().requires_grad_()
            ops.deform_conv2d(**{**a, "input": x}).sum().backward()
            grads.append(x.grad)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(grads[0], grads[1])


def test_opcheck_and_compile():
    a = _case(n=1, c=4, h=5, w=5, oc=2, kh=2, kw=2, stride=(1, 1), pad=(1, 0), dil=(1, 1), og=2, dtype=torch.float32)
    params = (2, 2, 1, 1, 1, 0, 1, 1, 2)
    torch.library.opcheck(torch.ops.sniper.deform_im2col.default, (a["input"], a["offset"], a["mask"]) + params)
    torch.library.opcheck(torch.ops.sniper.deform_im2col.default, (a["input"], a["offset"], None) + params)
    cols = torch.ops.sniper.deform_im2col(a["input"], a["offset"], a["mask"], *params)
    torch.library.opcheck(torch.ops.sniper.deform_col2im.default,
                          (torch.randn_like(cols), a["input"], a["offset"], a["mask"]) + params + (False,))
    torch._dynamo.reset()
    f = torch.compile(lambda x, o, w, m: ops.deform_conv2d(x, o, w, None, 1, (1, 0), 1, m), fullgraph=True)
    torch.testing.assert_close(f(a["input"], a["offset"], a["weight"], a["mask"]),
                               ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, 1, (1, 0), 1, a["mask"]))


def test_bad_input():
    a = _case()
    with pytest.raises(ValueError, match=r"`offset` must have shape"):
        ops.deform_conv2d(**{**a, "offset": a["offset"][:, :-1]})
    with pytest.raises(ValueError, match=r"`mask` must have shape"):
        ops.deform_conv2d(**{**a, "mask": a["mask"][:, :1]})
    with pytest.raises(TypeError, match="`weight` must have the dtype of `input`"):
        ops.deform_conv2d(**{**a, "weight": a["weight"].float()})
    with pytest.raises(ValueError, match="does not divide"):
        ops.deform_conv2d(**{**a, "weight": a["weight"][:, :1].repeat(1, 3, 1, 1)})
    with pytest.raises(TypeError, match="`stride` must be an int or a pair"):
        ops.deform_conv2d(**{**a, "stride": (1, 2, 3)})
    with pytest.raises(ValueError, match="too small"):
        ops.deform_conv2d(a["input"][:, :, :1, :1], a["offset"], a["weight"], padding=0)


def test_deform_conv_module():
    m = snn.DeformConv2d(4, 6, 3, padding=2, dilation=2, groups=2, offset_groups=2).double()
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    want = F.conv2d(x, m.weight, m.bias, 1, 2, 2, groups=2)
    torch.testing.assert_close(m(x), want)  # zero-initialised offsets: a plain convolution
    mv2 = snn.DeformConv2d(4, 6, 3, padding=1, modulated=True).double()
    torch.testing.assert_close(mv2(x), F.conv2d(x, mv2.weight * 0.5, mv2.bias, 1, 1))  # sigmoid(0) = 0.5
    mv2(x).square().sum().backward()
    assert mv2.conv_offset.weight.grad.abs().sum() > 0


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_matches_cpu(dtype, deterministic):
    a = _case(n=3, c=8, h=12, w=11, oc=8, og=4, dtype=dtype)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    names = ("input", "offset", "weight", "bias", "mask")
    cpu = {k: a[k].clone().requires_grad_() for k in names}
    gpu = {k: a[k].cuda().requires_grad_() for k in names}
    oc_ = ops.deform_conv2d(**{**a, **cpu})
    torch.use_deterministic_algorithms(deterministic)
    try:
        og_ = ops.deform_conv2d(**{**a, **gpu})
        og_.float().square().sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    oc_.float().square().sum().backward()
    torch.testing.assert_close(og_.cpu().double(), oc_.double(), rtol=tol, atol=tol * 10)
    for k in names:
        torch.testing.assert_close(gpu[k].grad.cpu().double(), cpu[k].grad.double(), rtol=tol * 10, atol=tol * 100)


def test_matches_plain_pytorch_baseline():
    from sniper_ext.baselines import deform_conv2d_torch

    a = _case(scale=3.0)
    torch.testing.assert_close(deform_conv2d_torch(**a), ops.deform_conv2d(**a))
