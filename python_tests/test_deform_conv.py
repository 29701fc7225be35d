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


# -- hostile arguments (found by python_tests/test_fuzz.py) ----------------------------------------

@pytest.mark.parametrize("kwargs, err, match", [
    (dict(groups=0), ValueError, r"DeformConv2d: `groups` must be an int in \[1, inf\], got 0"),
    (dict(kernel_size=0), ValueError, r"DeformConv2d: `kernel_size` must be in \[1, 2\*\*31\)"),
    (dict(kernel_size="3"), TypeError, "DeformConv2d: `kernel_size` must be an int or a pair of ints"),
    (dict(out_channels=0), ValueError, "DeformConv2d: `out_channels` must be an int"),
    (dict(in_channels=4.0), TypeError, "DeformConv2d: `in_channels` must be an int, got float"),
    (dict(groups=3), ValueError, r"DeformConv2d: `groups` \(3\) must divide"),
    (dict(offset_groups=3), ValueError, r"DeformConv2d: `offset_groups` \(3\) must divide `in_channels`"),
    (dict(padding=-1), ValueError, "DeformConv2d: `padding` must be in"),
    (dict(stride=(1, 0)), ValueError, "DeformConv2d: `stride` must be in"),
    (dict(dilation=(1, 2, 3)), TypeError, "DeformConv2d: `dilation` must be an int or a pair"),
])
def test_deform_conv_module_bad_arguments(kwargs, err, match):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(err, match=match):
        snn.DeformConv2d(**args)


def test_deform_conv_module_bad_input():
    m = snn.DeformConv2d(4, 6, 3, padding=1)
    with pytest.raises(ValueError, match=r"DeformConv2d: `input` must have shape \[N, 4, H, W\], got \(1, 3, 8, 8\)"):
        m(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match=r"DeformConv2d: `input` must have the parameters' dtype \(torch.float32\)"):
        m(torch.zeros(1, 4, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="DeformConv2d: `input` must be a floating tensor"):
        m(torch.zeros(1, 4, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="DeformConv2d: `input` must have non-empty spatial dimensions"):
        m(torch.zeros(1, 4, 8, 0))
    with pytest.raises(ValueError, match="DeformConv2d: input 1x1 is too small for kernel 3x3"):
        snn.DeformConv2d(4, 6, 3)(torch.zeros(1, 4, 1, 1))
    assert m(torch.zeros(0, 4, 5, 5)).shape == (0, 6, 5, 5)


def test_bad_geometry_and_huge_sizes_are_refused():
    a = _case()
    x, off = a["input"], a["offset"]
    with pytest.raises(ValueError, match="deform_conv2d: `input` must have at least one channel"):
        ops.deform_conv2d(x[:, :0], off, a["weight"])
    im2col = torch.ops.sniper.deform_im2col
    with pytest.raises(RuntimeError, match=r"deform_im2col: `kernel_h` must be in \[1, 2\^31\), got 1099511627776"):
        im2col(x, off, None, 2**40, 2, 2, 1, 1, 0, 1, 2, 2)
    with pytest.raises(RuntimeError, match=r"deform_im2col: `dilation_w` must be in \[1, 2\^31\)"):
        im2col(x, off, None, 3, 2, 2, 1, 1, 0, 1, 2**62, 2)
    # Padding 2**20 with stride-0 offsets: the columns (>= 2**42 elements) are refused before any allocation.
    pad = 1 << 20
    big = torch.zeros(1, 1, 1, 1, dtype=x.dtype).expand(2, 2, 7 + 2 * pad, 6 + 2 * pad)
    with pytest.raises(RuntimeError, match=r"deform_im2col: the columns would have .* more than the 2\^40"):
        im2col(x, big, None, 1, 1, 1, 1, pad, pad, 1, 1, 1)
    with pytest.raises(ValueError, match=r"deform_conv2d: the sampled columns of one sample would have"):
        ops.deform_conv2d(x, big, a["weight"][:, :, :1, :1], padding=pad)


def test_col2im_argument_errors():
    a = _case(mask=False)
    x, off = a["input"], a["offset"]
    args = (3, 2, 2, 1, 1, 0, 1, 2, 2)
    cols = torch.ops.sniper.deform_im2col(x, off, None, *args)
    col2im = torch.ops.sniper.deform_col2im
    with pytest.raises(RuntimeError, match="deform_col2im: `grad_columns` must be a tensor, got None"):
        col2im(None, x, off, None, *args, False)
    with pytest.raises(RuntimeError, match="deform_col2im: `grad_columns` must be a floating tensor, got int64"):
        col2im(cols.long(), x, off, None, *args, False)
    with pytest.raises(RuntimeError, match=r"deform_col2im: `grad_columns` must have shape \[2, 24, 16\]"):
        col2im(cols[:, 1:], x, off, None, *args, False)
    with pytest.raises(RuntimeError, match="deform_col2im: `offset` must be a tensor, got None"):
        col2im(cols, x, None, None, *args, False)
    with pytest.raises(RuntimeError, match=r"deform_col2im: `pad_h` must be in \[0, 2\^31\), got -1"):
        col2im(cols, x, off, None, 3, 2, 2, 1, -1, 0, 1, 2, 2, False)
    with pytest.raises(ValueError, match="deform_col2im: `grad_columns` is on meta but `input` is on cpu"):
        col2im(cols.to("meta"), x, off, None, *args, False)  # the fake kernel


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_nan_offsets_sample_zero(dtype):
    """A NaN sampling point reads nothing (it used to index memory with int64(floor(NaN)))."""
    a = _case(mask=False, dtype=dtype)
    off = a["offset"].clone()
    off[:, :, 0, 0] = float("nan")
    x, w = a["input"].clone().requires_grad_(), a["weight"].clone().requires_grad_()
    off.requires_grad_()
    y = ops.deform_conv2d(x, off, w, None, a["stride"], a["padding"], a["dilation"])
    y.float().sum().backward()
    for t in (y, x.grad, w.grad, off.grad):
        assert torch.isfinite(t).all()
    nan_free = off.detach().clone()
    nan_free[:, :, 0, 0] = 1e6  # far outside the image: also reads 0
    want = ops.deform_conv2d(a["input"], nan_free, a["weight"], None, a["stride"], a["padding"], a["dilation"])
    torch.testing.assert_close(y.detach(), want)


def test_meta_input_runs_the_fake_kernels():
    a = _case()
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in a.items()}
    assert ops.deform_conv2d(**meta).shape == ops.deform_conv2d(**a).shape


def test_empty_image_side():
    """An input with no pixels (H or W = 0, padded to a non-empty output) samples 0 everywhere; it
    used to read and write out of bounds (segfault)."""
    x = torch.randn(2, 3, 0, 4, dtype=torch.float64, requires_grad=True)
    off = torch.full((2, 2 * 3, 2, 6), 0.5, dtype=torch.float64, requires_grad=True)  # y in (-1, 0)
    w = torch.randn(5, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64)
    y = ops.deform_conv2d(x, off, w.repeat(1, 3, 1, 1)[:, :3], b, padding=1)
    assert y.shape == (2, 5, 2, 6)
    torch.testing.assert_close(y, b.reshape(1, 5, 1, 1).expand_as(y))
    y.sum().backward()
    assert x.grad.shape == x.shape and off.grad.abs().sum() == 0 and w.grad.abs().sum() == 0
