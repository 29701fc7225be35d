import pytest
import reference as ref
import torch
import torch.nn.functional as F
from common_utils import DEVICES, requires_cuda, tol
from fuzz.values import Arg, conv_geometry, tensor_arg
from op_tester import OpTester, Sample

from sniper_ext import nn as snn
from sniper_ext import ops
from sniper_ext.ops import deform_conv as dc_module


def _case(
    seed=0,
    n=2,
    c=4,
    h=7,
    w=6,
    oc=6,
    groups=2,
    kh=3,
    kw=2,
    stride=(2, 1),
    pad=(1, 0),
    dil=(1, 2),
    og=2,
    dtype=torch.float64,
    mask=True,
    scale=2.0,
):
    g = torch.Generator().manual_seed(seed)
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    off = torch.randn(n, 2 * og * kh * kw, oh, ow, generator=g, dtype=torch.float64) * scale
    wt = torch.randn(oc, c // groups, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(oc, generator=g, dtype=torch.float64)
    m = torch.rand(n, og * kh * kw, oh, ow, generator=g, dtype=torch.float64) if mask else None
    to = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return dict(
        input=to(x), offset=to(off), weight=to(wt), bias=to(b), stride=stride, padding=pad, dilation=dil, mask=to(m)
    )


def _ref(a):
    t = lambda v: None if v is None else v.tolist()  # noqa: E731
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    n, oc, (oh, ow) = a["input"].shape[0], a["weight"].shape[0], a["offset"].shape[2:]
    return torch.tensor(
        ref.deform_conv2d(
            t(a["input"]),
            t(a["offset"]),
            t(a["weight"]),
            t(a["bias"]),
            pair(a["stride"]),
            pair(a["padding"]),
            pair(a["dilation"]),
            t(a["mask"]),
        ),
        dtype=torch.float64,
    ).reshape(n, oc, oh, ow)


def _raw_params(a):
    """deform_im2col's (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    offset_groups) for deform_conv2d's arguments `a`."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    kh, kw = a["weight"].shape[2:]
    return (
        kh,
        kw,
        *pair(a["stride"]),
        *pair(a["padding"]),
        *pair(a["dilation"]),
        a["offset"].shape[1] // (2 * kh * kw),
    )


def im2col_fuzz_args(ctx, col2im):
    """A random valid call of deform_im2col (deform_col2im with `col2im`)."""
    dt = ctx.dtype()
    g = conv_geometry(ctx)
    og = ctx.rng.choice([1, 2])
    c = og * ctx.rng.randint(1, 2)
    n = ctx.n(2, p0=0.2)
    k = g["kh"] * g["kw"]
    mask = ctx.rand(n, og * k, g["oh"], g["ow"], dtype=dt) if ctx.rng.random() < 0.5 else None
    args = [
        tensor_arg("input", ctx.randn(n, c, g["h"], g["w"], dtype=dt)),
        tensor_arg("offset", ctx.randn(n, 2 * og * k, g["oh"], g["ow"], dtype=dt, scale=1.5)),
        tensor_arg("mask", mask),
    ]
    if col2im:
        args.insert(0, tensor_arg("grad_columns", ctx.randn(n, c * k, g["oh"] * g["ow"], dtype=dt)))
    args += [
        Arg(name, g[key], "int")
        for name, key in (
            ("kernel_h", "kh"),
            ("kernel_w", "kw"),
            ("stride_h", "sh"),
            ("stride_w", "sw"),
            ("pad_h", "ph"),
            ("pad_w", "pw"),
            ("dilation_h", "dh"),
            ("dilation_w", "dw"),
        )
    ]
    args.append(Arg("offset_groups", og, "int"))
    if col2im:
        args.append(Arg("deterministic", ctx.rng.random() < 0.5, "bool"))
    return args


def conv_fuzz_args(ctx):
    """A random valid call of ops.deform_conv2d."""
    dt = ctx.dtype()
    g = conv_geometry(ctx)
    groups, og = ctx.rng.choice([1, 1, 2]), ctx.rng.choice([1, 2])
    c = groups * og * ctx.rng.randint(1, 2)
    oc = groups * ctx.rng.randint(1, 3)
    n = ctx.n(2, p0=0.2)
    k = g["kh"] * g["kw"]
    mask = ctx.rand(n, og * k, g["oh"], g["ow"], dtype=dt) if ctx.rng.random() < 0.4 else None
    bias = ctx.randn(oc, dtype=dt) if ctx.rng.random() < 0.5 else None
    pair = lambda a, b: a if a == b and ctx.rng.random() < 0.5 else (a, b)  # noqa: E731
    return [
        tensor_arg("input", ctx.randn(n, c, g["h"], g["w"], dtype=dt)),
        tensor_arg("offset", ctx.randn(n, 2 * og * k, g["oh"], g["ow"], dtype=dt, scale=1.5)),
        tensor_arg("weight", ctx.randn(oc, c // groups, g["kh"], g["kw"], dtype=dt, scale=0.3)),
        tensor_arg("bias", bias),
        Arg("stride", pair(g["sh"], g["sw"]), "pair"),
        Arg("padding", pair(g["ph"], g["pw"]), "pair"),
        Arg("dilation", pair(g["dh"], g["dw"]), "pair"),
        tensor_arg("mask", mask),
    ]


GEOMETRIES = {
    "default": dict(),
    "1x3": dict(kh=1, kw=3, stride=(1, 2), pad=(0, 1), dil=(1, 1), og=1, groups=1),
    "groups3": dict(c=6, oc=3, groups=3, og=3, kh=2, kw=2, stride=(1, 1), pad=(2, 1), dil=(2, 1)),
}
_ARGS = ("input", "offset", "weight", "bias", "stride", "padding", "dilation", "mask")


class TestDeformConv2d(OpTester):
    """ops.deform_conv2d over sniper::deform_im2col (forward) and sniper::deform_col2im (backward)."""

    grad_args = (0, 1, 2, 3, 7)  # input, offset, weight, bias, mask
    fuzz_targets = ("ops.deform_conv2d", "raw.deform_im2col", "raw.deform_col2im")
    tolerances = {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1e-4, 1e-4),
        torch.float16: (2e-2, 2e-2),
        torch.bfloat16: (8e-2, 8e-2),
    }
    cuda_tolerances = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

    def fn(self, *args):
        return ops.deform_conv2d(*args)

    def expected_fn(self, *args):
        return _ref(dict(zip(_ARGS, args)))

    def forward_tol(self, dtype, want):
        rtol, atol = self.tolerances[dtype]
        return rtol, atol * want.abs().max().item() if dtype != torch.float64 else atol  # atol scales with |out|

    def cuda_tol(self, dtype):
        t = self.cuda_tolerances[dtype]
        return (t, t * 10), (t * 10, t * 100)

    def loss(self, out):
        return out.float().square().sum()

    def sample_inputs(self, device, dtype):
        for name, geometry in GEOMETRIES.items():
            for mask in (True, False):
                a = _case(mask=mask, **geometry)
                yield Sample(tuple(a[k] for k in _ARGS), name=f"{name}, mask={mask}").to(device, dtype)
        a = _case(**GEOMETRIES["1x3"])
        yield Sample(tuple(None if k == "bias" else a[k] for k in _ARGS), name="1x3, bias=None").to(device, dtype)

    def compile_inputs(self):
        keep = ("default, mask=True", "1x3, bias=None")
        return [s for s in self.sample_inputs("cpu", torch.float32) if s.name in keep]

    def backward_inputs(self, device):
        small = dict(n=1, c=4, h=5, w=5, oc=2, kh=2, kw=2, stride=(1, 1), pad=(1, 0), dil=(1, 1), og=2)
        for mask in (True, False):
            a = _case(mask=mask, **small)
            yield Sample(tuple(a[k] for k in _ARGS), name=f"small, mask={mask}").to(device)

    def raw_calls(self, sample):
        a = dict(zip(_ARGS, sample.args))
        x, off, m = a["input"], a["offset"], a["mask"]
        params = _raw_params(a)
        sn = torch.ops.sniper
        cols = sn.deform_im2col(x, off, m, *params)
        gcols = torch.randn(cols.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return [
            (sn.deform_im2col.default, (x, off, m) + params),
            (sn.deform_col2im.default, (gcols.to(cols), x, off, m) + params + (False,)),
        ]

    def fuzz_args(self, ctx, target):
        if target == "ops.deform_conv2d":
            return conv_fuzz_args(ctx)
        return im2col_fuzz_args(ctx, col2im=target == "raw.deform_col2im")

    def opcheck_calls(self, device, dtype):
        a = _case(n=1, c=4, h=5, w=5, oc=2, kh=2, kw=2, stride=(1, 1), pad=(1, 0), dil=(1, 1), og=2, dtype=dtype)
        x, off, m = (a[k].to(device) for k in ("input", "offset", "mask"))
        params = (2, 2, 1, 1, 1, 0, 1, 1, 2)
        sn = torch.ops.sniper
        cols = sn.deform_im2col(x, off, m, *params)
        return [
            (sn.deform_im2col.default, (x, off, m) + params),
            (sn.deform_im2col.default, (x, off, None) + params),
            (sn.deform_col2im.default, (torch.randn_like(cols), x, off, m) + params + (False,)),
        ]


def test_zero_offset_is_a_convolution():
    a = _case(scale=0.0, mask=False)
    want = F.conv2d(a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], groups=2)
    torch.testing.assert_close(ops.deform_conv2d(**a), want)


def test_zero_batch():
    a = _case(n=0)
    out = ops.deform_conv2d(**a)
    assert out.shape[0] == 0 and out.shape[1] == 6


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


# -- the image border: samples exactly at -1, 0, H-1, H (W likewise) ------------------------------


def test_offset_gradient_at_border_matches_torchvision():
    # Zero offsets, padding 1: the top-row taps of output (0, 0) sample y = -1 exactly, where the
    # value is 0 but, from the right, rises towards row 0. Values from torchvision 0.25's
    # deform_conv2d (d out[0, 0, 0, 0] / d offset[0, :, 0, 0]); by hand, channel 2 (y of tap
    # (0, 1), at (-1, 0)) is w[0, 1] * x[0, 0] = 0.4279 * -2.3104.
    x = torch.tensor(
        [
            -2.3104,
            -0.3733,
            -1.0608,
            0.9995,
            -0.884,
            -1.2755,
            -0.6232,
            -0.8664,
            -1.2956,
            0.7335,
            -1.3219,
            1.3148,
            -1.4875,
            -0.7136,
            0.52,
            -0.9529,
            -0.0917,
            1.0469,
            0.1543,
            -0.7499,
            -0.7234,
            0.0864,
            -1.7464,
            1.041,
            0.6539,
        ],
        dtype=torch.float64,
    ).reshape(1, 1, 5, 5)
    w = torch.tensor(
        [1.6059, 0.4279, -0.6776, 1.0422, -1.9513, 0.4186, 3.3214, 0.8764, 1.2345], dtype=torch.float64
    ).reshape(1, 1, 3, 3)
    torchvision_grad = [
        0.0,
        0.0,
        -0.98862016,
        0.0,
        0.25294808,
        0.0,
        0.0,
        -2.40789888,
        -2.01940037,
        -3.77986323,
        -0.10460814,
        -0.2877875,
        0.0,
        -4.2364457,
        -0.04066496,
        0.57167572,
        2.392461,
        -0.3002304,
    ]
    offset = torch.zeros(1, 18, 5, 5, dtype=torch.float64, requires_grad=True)
    out = ops.deform_conv2d(x, offset, w, padding=1)
    assert out[0, 0, 0, 0].item() == pytest.approx(2.46483154, abs=1e-12)
    out[0, 0, 0, 0].backward()
    torch.testing.assert_close(
        offset.grad[0, :, 0, 0], torch.tensor(torchvision_grad, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert offset.grad[0, :, 1:, :].abs().sum() == 0 and offset.grad[0, :, 0, 1:].abs().sum() == 0


def _border_points(h, w, exact_only):
    ys = [-2.0, -1.5, -1.0, -0.75, -0.5, 0.0, 0.5, 1.0, h - 1.0, h - 0.5, h - 0.25, float(h), h + 0.5]
    xs = [-1.5, -1.0, -0.5, 0.0, 0.25, w - 1.0, w - 0.5, float(w), w + 1.0]
    if not exact_only:  # just inside the border (float64 only)
        ys += [-1.0 + 2.0**-40, h - 2.0**-40]
        xs += [-1.0 + 2.0**-40, w - 2.0**-40]
    return [(y, x) for y in ys for x in xs]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_sampling_at_border_matches_reference(dtype):
    """The raw ops at points on and around the border against the plain-Python tent-kernel
    reference: the value, its right-hand derivatives (offset gradient), the mask gradient and
    the input gradient (the sample's pixel weights)."""
    h, w = 3, 4
    pts = _border_points(h, w, exact_only=dtype != torch.float64)
    pad = 7  # a 1x1 kernel with padding: output (h + 2 pad) x (w + 2 pad) positions, base (oy - pad, ox - pad)
    oh, ow = h + 2 * pad, w + 2 * pad
    assert len(pts) <= oh * ow
    gen = torch.Generator().manual_seed(3)
    plane = torch.randn(1, 1, h, w, generator=gen, dtype=torch.float64).to(dtype)
    offset = torch.zeros(1, 2, oh, ow, dtype=torch.float64)
    mask = (0.5 + torch.rand(1, 1, oh, ow, generator=gen, dtype=torch.float64)).to(dtype)
    for i, (y, x) in enumerate(pts):
        oy, ox = divmod(i, ow)
        offset[0, 0, oy, ox] = y - (oy - pad)
        offset[0, 1, oy, ox] = x - (ox - pad)
    offset = offset.to(dtype)
    params = (1, 1, 1, 1, pad, pad, 1, 1, 1)
    cols = torch.ops.sniper.deform_im2col(plane, offset, mask, *params)
    gcols = torch.randn(cols.shape, generator=gen, dtype=torch.float64).to(dtype)
    gi, go, gm = torch.ops.sniper.deform_col2im(gcols, plane, offset, mask, *params, False)
    P = plane[0, 0].double().tolist()
    want_gi = [[0.0] * w for _ in range(h)]
    for i in range(oh * ow):
        oy, ox = divmod(i, ow)
        y = (oy - pad) + offset[0, 0, oy, ox].double().item()
        x = (ox - pad) + offset[0, 1, oy, ox].double().item()
        m, g = mask[0, 0, oy, ox].double().item(), gcols[0, 0, i].double().item()
        v, dy, dx = ref.deform_sample_grad(P, y, x)
        for (r, c), wt in ref.deform_sample_weights(h, w, y, x).items():
            want_gi[r][c] += float(wt) * m * g
        t = tol(dtype)
        assert cols[0, 0, i].double().item() == pytest.approx(m * v, abs=t * 10), (y, x)
        assert gm[0, 0, oy, ox].double().item() == pytest.approx(g * v, abs=t * 10), (y, x)
        assert go[0, 0, oy, ox].double().item() == pytest.approx(g * m * dy, abs=t * 20), ("d/dy", y, x)
        assert go[0, 1, oy, ox].double().item() == pytest.approx(g * m * dx, abs=t * 20), ("d/dx", y, x)
    torch.testing.assert_close(
        gi[0, 0].double(), torch.tensor(want_gi, dtype=torch.float64), rtol=0, atol=tol(dtype) * 50
    )


def test_offset_gradient_at_border_is_one_sided_from_the_right():
    """At a kink (a sample exactly at -1, H-1, H, or any pixel) the offset gradient is the
    derivative from the right: forward differences (exact up to rounding, as the interpolant is
    linear in one coordinate up to the next integer) agree; central ones would average the sides."""
    h, w = 4, 5
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, h, w, generator=gen, dtype=torch.float64)
    wt = torch.randn(3, 2, 2, 2, generator=gen, dtype=torch.float64)
    oh, ow = h + 1, w + 1  # padding 1, 2x2 kernel, dilation 1
    targets = [-1.0, 0.0, h - 1.0, float(h), -1.0, 2.0]  # rows; columns use the same pattern on w
    off = torch.empty(1, 8, oh, ow, dtype=torch.float64)
    for k in range(4):
        ki, kj = divmod(k, 2)
        for oy in range(oh):
            for ox in range(ow):
                ty = targets[(oy + ox + k) % len(targets)]
                tx = [-1.0, 0.0, w - 1.0, float(w)][(oy * 3 + ox + k) % 4]
                off[0, 2 * k, oy, ox] = ty - (oy - 1 + ki)
                off[0, 2 * k + 1, oy, ox] = tx - (ox - 1 + kj)
    gout = torch.randn(1, 3, oh, ow, generator=gen, dtype=torch.float64)

    def f(o):
        return (ops.deform_conv2d(x, o, wt, padding=1) * gout).sum()

    o = off.clone().requires_grad_()
    f(o).backward()
    step = 0.25
    fd = torch.empty_like(off)
    base = f(off).item()
    for i in range(off.numel()):
        p = off.clone().view(-1)
        p[i] += step
        fd.view(-1)[i] = (f(p.view_as(off)).item() - base) / step
    torch.testing.assert_close(o.grad, fd, rtol=0, atol=1e-12)
    assert o.grad.abs().max() > 0.1


def test_gradcheck_at_border():
    """gradcheck (central differences) with samples exactly at -1, H-1 and H: every input but the
    offsets is smooth there (the output is linear in input, weight, bias and mask); the offsets
    are checked just off the kinks, on either side."""
    h, w = 4, 4
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, h, w, generator=gen, dtype=torch.float64)
    wt = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(2, generator=gen, dtype=torch.float64)
    m = torch.rand(1, 9, h, w, generator=gen, dtype=torch.float64)
    edges = torch.tensor([-1.0, float(h - 1), float(h)], dtype=torch.float64)
    # Padding 1, dilation 1: tap (ki, kj) of output (oy, ox) has base (oy - 1 + ki, ox - 1 + kj).
    oy = torch.arange(h, dtype=torch.float64)[:, None]
    ox = torch.arange(w, dtype=torch.float64)[None, :]
    exact = torch.empty(1, 18, h, w, dtype=torch.float64)
    for k in range(9):
        ki, kj = divmod(k, 3)
        exact[0, 2 * k] = edges[(k + oy.long() + ox.long()) % 3] - (oy - 1 + ki)
        exact[0, 2 * k + 1] = edges[(k + 2 * oy.long() + ox.long()) % 3] - (ox - 1 + kj)

    def f(xx, oo, ww, bb, mm):
        return ops.deform_conv2d(xx, oo, ww, bb, 1, 1, 1, mm)

    req = lambda t: t.clone().requires_grad_()  # noqa: E731
    assert torch.autograd.gradcheck(lambda xx, ww, bb, mm: f(xx, exact, ww, bb, mm), (req(x), req(wt), req(b), req(m)))
    for shift in (1e-3, -1e-3):
        assert torch.autograd.gradcheck(lambda oo: f(x, oo, wt, b, m), (req(exact + shift),))


def test_non_finite_pixel_stays_local():
    """Taps outside the image are never read: an inf pixel reaches only the outputs that weigh it
    in (as with torchvision and F.conv2d), not every sample beyond the border."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(1, 1, 6, 6, generator=gen, dtype=torch.float64)
    wt = torch.randn(1, 1, 3, 3, generator=gen, dtype=torch.float64)
    off = torch.zeros(1, 18, 6, 6, dtype=torch.float64)
    x_inf = x.clone()
    x_inf[0, 0, 0, 0] = float("inf")
    out = ops.deform_conv2d(x_inf, off, wt, padding=1)
    reach = torch.zeros(6, 6, dtype=torch.bool)
    reach[:2, :2] = True  # the outputs whose 3x3 window covers pixel (0, 0)
    assert torch.isinf(out[0, 0][reach]).all()
    x0 = x.clone()
    x0[0, 0, 0, 0] = 0.0
    torch.testing.assert_close(out[0, 0][~reach], ops.deform_conv2d(x0, off, wt, padding=1)[0, 0][~reach])
    # Backward: the offset gradient of outputs that do not reach the pixel stays finite.
    o = off.clone().requires_grad_()
    ops.deform_conv2d(x_inf, o, wt, padding=1)[0, 0][~reach].sum().backward()
    assert torch.isfinite(o.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw", [(0, 3), (3, 0), (0, 0)])
def test_empty_plane(device, hw):
    """An empty input plane with padding: every sample lies outside, output 0, gradients 0
    (the kernels used to read pixel 0 of the empty plane)."""
    h, w = hw
    x = torch.randn(2, 2, h, w, dtype=torch.float64, device=device, requires_grad=True)
    wt = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    oh, ow = h + 2, w + 2
    off = torch.randn(2, 18, oh, ow, dtype=torch.float64, device=device, requires_grad=True)
    m = torch.rand(2, 9, oh, ow, dtype=torch.float64, device=device, requires_grad=True)
    out = ops.deform_conv2d(x, off, wt, None, 1, 2, 1, m)
    assert out.shape == (2, 3, oh, ow)
    assert (out == 0).all()
    out.sum().backward()
    for t in (off, m, wt):
        assert (t.grad == 0).all()
    assert x.grad.shape == x.shape


# -- raw-op argument checks and empty work, the same on every device ------------------------------


def _col2im_args(device, c=4):
    """deform_col2im arguments: a 2x2 kernel, padding (1, 0), 2 offset groups on a 5x5 input."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, 5, 5, generator=gen)
    off = torch.randn(1, 16, 6, 4, generator=gen)
    m = torch.rand(1, 8, 6, 4, generator=gen)
    gcols = torch.randn(1, c * 4, 24, generator=gen)
    params = (2, 2, 1, 1, 1, 0, 1, 1, 2)
    return [t.to(device) for t in (gcols, x, off, m)], params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("deterministic", [False, True])
def test_col2im_without_channels_gives_zero_gradients(device, deterministic):
    (gcols, x, off, m), params = _col2im_args(device, c=0)
    for mask in (m, None):
        gi, go, gm = torch.ops.sniper.deform_col2im(gcols, x, off, mask, *params, deterministic)
        assert gi.shape == x.shape and go.shape == off.shape
        assert (go == 0).all()
        assert gm.shape == (m.shape if mask is not None else (0,)) and (gm == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_col2im_checks_grad_columns(device):
    (gcols, x, off, m), params = _col2im_args(device)
    with pytest.raises(RuntimeError, match=r"deform_col2im: `grad_columns` must have shape \[1, 16, 24\]"):
        torch.ops.sniper.deform_col2im(gcols[:, :-1], x, off, m, *params, False)
    with pytest.raises(RuntimeError, match="deform_col2im: `grad_columns` must be a floating tensor"):
        torch.ops.sniper.deform_col2im(gcols.to(torch.int32), x, off, m, *params, False)
    # A 2^16 x 2^16 plane (no channels; offsets broadcast, so nothing is allocated).
    big = torch.zeros(1, 0, 1 << 16, 1 << 16, device=device)
    off_big = torch.zeros(1, device=device).expand(1, 2, 1 << 16, 1 << 16)
    with pytest.raises(RuntimeError, match=r"deform_col2im: an input plane must have < 2\^31 pixels"):
        torch.ops.sniper.deform_col2im(
            torch.zeros(1, 0, 1 << 32, device=device), big, off_big, None, 1, 1, 1, 1, 0, 0, 1, 1, 1, False
        )


@requires_cuda
def test_col2im_checks_grad_columns_device():
    (gcols, x, off, m), params = _col2im_args("cpu")
    with pytest.raises(RuntimeError, match="deform_col2im: `input` and `grad_columns` must be on the same device"):
        torch.ops.sniper.deform_col2im(gcols.cuda(), x, off, m, *params, False)


@pytest.mark.parametrize("offsets", ["continuous", "integer", "border"])
def test_matches_torchvision(offsets):
    """Output and every gradient against torchvision.ops.deform_conv2d (when installed), with
    offsets that put samples between pixels, on pixels, and exactly on the border."""
    tv = pytest.importorskip("torchvision.ops")
    gen = torch.Generator().manual_seed({"continuous": 0, "integer": 1, "border": 2}[offsets])
    for geometry in (
        dict(),
        dict(kh=3, kw=3, stride=(1, 1), pad=(2, 2), dil=(2, 2), og=1),
        dict(h=4, w=3, kh=3, kw=3, stride=(1, 1), pad=(1, 1), dil=(1, 1), og=4, c=4, groups=1),
    ):
        for mask in (True, False):
            a = _case(mask=mask, **geometry)
            n, _, oh, ow = a["offset"].shape
            h, w = a["input"].shape[2:]
            if offsets == "integer":
                a["offset"] = torch.randint(-3, 4, a["offset"].shape, generator=gen).double()
            elif offsets == "border":
                kh, kw = a["weight"].shape[2:]
                (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
                ty = torch.tensor([-1.0, 0.0, h - 1.0, float(h), -0.5, h - 0.5])
                tx = torch.tensor([-1.0, 0.0, w - 1.0, float(w), -0.5, w - 0.5])
                oy = torch.arange(oh)[:, None] * sh - ph
                ox = torch.arange(ow)[None, :] * sw - pw
                for k in range(a["offset"].shape[1] // 2):
                    ki, kj = divmod(k % (kh * kw), kw)
                    a["offset"][:, 2 * k] = ty[torch.randint(0, 6, (n, oh, ow), generator=gen)] - (oy + ki * dh)
                    a["offset"][:, 2 * k + 1] = tx[torch.randint(0, 6, (n, oh, ow), generator=gen)] - (ox + kj * dw)
            names = [k for k in ("input", "offset", "weight", "bias", "mask") if a[k] is not None]
            gout = None
            results = []
            for f in (tv.deform_conv2d, ops.deform_conv2d):
                leaves = {k: a[k].clone().requires_grad_() for k in names}
                out = f(
                    leaves["input"],
                    leaves["offset"],
                    leaves["weight"],
                    leaves["bias"],
                    a["stride"],
                    a["padding"],
                    a["dilation"],
                    leaves.get("mask"),
                )
                gout = torch.randn(out.shape, generator=gen, dtype=out.dtype) if gout is None else gout
                out.backward(gout)
                results.append([out.detach()] + [leaves[k].grad for k in names])
            for name, want, got in zip(["output"] + names, *results):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f"{offsets} {name}")


# -- hostile arguments (found by python_tests/test_fuzz.py) ----------------------------------------


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
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
    ],
)
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
