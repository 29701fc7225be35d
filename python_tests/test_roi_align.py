import pytest
import reference as ref
import torch
from common_utils import requires_cuda
from fuzz.values import Arg, output_size_arg, roi_boxes_arg, roi_offset, roi_problem, tensor_arg
from op_tester import OpTester, Sample

from sniper_ext import nn as snn
from sniper_ext import ops


def _linear_image():
    """f(y, x) = 8y + x on an 8x8 image: bilinear sampling of it is exact."""
    y, x = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    return (8 * y + x)[None, None].double()


def test_hand_computed_values():
    img = _linear_image()
    roi = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    # Unaligned: 2x2 bins of 2 px, samples at 0.5 and 1.5 -> bin means (1, 1), (1, 3), (3, 1), (3, 3).
    out = ops.roi_align(img, roi, 2, spatial_scale=1.0, sampling_ratio=2, aligned=False)
    assert out[0, 0].tolist() == [[9.0, 11.0], [25.0, 27.0]]
    # Aligned: shifted by half a pixel -> means (0.5, 0.5) ... (2.5, 2.5).
    out = ops.roi_align(img, roi, 2, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    assert out[0, 0].tolist() == [[4.5, 6.5], [20.5, 22.5]]
    # Spatial scale halves the box; a constant offset of 0.25 * roi size / gamma shifts every bin.
    out = ops.roi_align(img, roi * torch.tensor([1, 2, 2, 2, 2.0]), 2, spatial_scale=0.5, sampling_ratio=2)
    assert out[0, 0].tolist() == [[9.0, 11.0], [25.0, 27.0]]
    off = torch.full((1, 2, 2, 2), 0.25, dtype=torch.float64)
    out = ops.deform_roi_pool(img, roi, off, 2, 1.0, 2, gamma=1.0)  # shift by 1 px in x and y
    assert out[0, 0].tolist() == [[13.5, 15.5], [29.5, 31.5]]


def _random(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    xy = torch.rand(6, 2, generator=g, dtype=torch.float64) * torch.tensor([20.0, 16.0])
    wh = torch.rand(6, 2, generator=g, dtype=torch.float64) * 14
    b = torch.randint(0, 2, (6, 1), generator=g).double()
    rois = torch.cat([b, xy - 2, xy + wh], 1)  # some start outside the image
    rois[5, 3:] = rois[5, 1:3] + 0.2  # a tiny RoI
    off = torch.randn(6, 2, 3, 2, generator=g, dtype=torch.float64) * 0.4
    return x.to(dtype), rois.to(dtype), off.to(dtype)


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _sample_tensors(seed, device, dtype):
    x, rois, off = _random(seed)
    if dtype in LOW_PRECISION:
        rois = rois.round()  # RoI corners exact in the dtype: the comparison is about the sampling
    return x.to(device, dtype), rois.to(device, dtype), off.to(device, dtype)


def _rois_of(rois):
    """A [K, 5] RoI tensor from the wrappers' `boxes` (the tensor itself, or a list of [L, 4] per image)."""
    if isinstance(rois, torch.Tensor):
        return rois
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1) for i, b in enumerate(rois)])


def _pooled(x, rois, output_size, spatial_scale, sampling_ratio, aligned, offset=None, gamma=0.1):
    """The reference's RoI pooling, [K, C, ph, pw], for the wrappers' arguments."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    rois = _rois_of(rois).to(x.dtype)
    off = None if offset is None else offset.tolist()
    out = ref.roi_pool(x.tolist(), rois.tolist(), ph, pw, spatial_scale, sampling_ratio, aligned, off, gamma)
    return torch.tensor(out, dtype=torch.float64).reshape(len(rois), x.shape[1], ph, pw)


def _raw_size(output_size):
    return (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)


def roi_fuzz_args(ctx, target):
    """A random valid call of one of the RoI pooling fuzz targets (raw ops and wrappers)."""
    r = roi_problem(ctx)
    rois = tensor_arg("rois", r["rois"], "rois", r["n"])
    raw_size = [Arg("pooled_h", r["ph"], "int"), Arg("pooled_w", r["pw"], "int")]
    if target == "raw.roi_align":
        return [
            tensor_arg("input", r["input"]),
            rois,
            Arg("spatial_scale", r["scale"], "float"),
            *raw_size,
            Arg("sampling_ratio", r["sampling"], "int"),
            Arg("aligned", ctx.rng.random() < 0.5, "bool"),
        ]
    if target == "raw.roi_align_backward":
        return [
            tensor_arg("grad", ctx.randn(r["k"], r["c"], r["ph"], r["pw"], dtype=r["dt"])),
            rois,
            Arg("spatial_scale", r["scale"], "float"),
            *raw_size,
            Arg("batch", r["n"], "int"),
            Arg("channels", r["c"], "int"),
            Arg("height", r["h"], "int"),
            Arg("width", r["w"], "int"),
            Arg("sampling_ratio", r["sampling"], "int"),
            Arg("aligned", ctx.rng.random() < 0.5, "bool"),
        ]
    if target == "raw.deform_roi_pool":
        return [
            tensor_arg("input", r["input"]),
            rois,
            tensor_arg("offset", roi_offset(ctx, r)),
            Arg("spatial_scale", r["scale"], "float"),
            *raw_size,
            Arg("sampling_ratio", r["sampling"], "int"),
            Arg("gamma", ctx.uniform(0, 0.5), "float"),
        ]
    if target == "raw.deform_roi_pool_backward":
        return [
            tensor_arg("grad", ctx.randn(r["k"], r["c"], r["ph"], r["pw"], dtype=r["dt"])),
            tensor_arg("input", r["input"]),
            rois,
            tensor_arg("offset", roi_offset(ctx, r)),
            Arg("spatial_scale", r["scale"], "float"),
            *raw_size,
            Arg("sampling_ratio", r["sampling"], "int"),
            Arg("gamma", ctx.uniform(0, 0.5), "float"),
        ]
    if target == "ops.roi_align":
        return [
            tensor_arg("input", r["input"]),
            roi_boxes_arg(ctx, r, "boxes"),
            output_size_arg(ctx, r),
            Arg("spatial_scale", r["scale"], "float"),
            Arg("sampling_ratio", r["sampling"] - 1, "int"),
            Arg("aligned", ctx.rng.random() < 0.5, "bool"),
        ]
    assert target == "ops.deform_roi_pool", target
    return [
        tensor_arg("input", r["input"]),
        roi_boxes_arg(ctx, r, "rois"),
        tensor_arg("offset", roi_offset(ctx, r)),
        output_size_arg(ctx, r),
        Arg("spatial_scale", r["scale"], "float"),
        Arg("sampling_ratio", r["sampling"], "int"),
        Arg("gamma", ctx.uniform(0, 0.5), "float"),
    ]


class TestRoIAlign(OpTester):
    """sniper::roi_align (and roi_align_backward) through ops.roi_align."""

    fuzz_targets = ("ops.roi_align", "raw.roi_align", "raw.roi_align_backward")

    def fn(self, x, rois, output_size, spatial_scale, sampling_ratio, aligned):
        return ops.roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)

    def expected_fn(self, x, rois, output_size, spatial_scale, sampling_ratio, aligned):
        return _pooled(x, rois, output_size, spatial_scale, sampling_ratio, aligned)

    def raw_calls(self, sample):
        x, rois, output_size, scale, sampling, aligned = sample.args
        (ph, pw), sampling = _raw_size(output_size), max(sampling, 0)
        grad = torch.ones(len(rois), x.shape[1], ph, pw, dtype=x.dtype, device=x.device)
        sn = torch.ops.sniper
        return [
            (sn.roi_align.default, (x, rois, scale, ph, pw, sampling, aligned)),
            (sn.roi_align_backward.default, (grad, rois, scale, ph, pw, *x.shape, sampling, aligned)),
        ]

    def fuzz_args(self, ctx, target):
        return roi_fuzz_args(ctx, target)

    def sample_inputs(self, device, dtype):
        x, rois, _ = _sample_tensors(0, device, dtype)
        for aligned in (False, True):
            for sampling in (0, 2):
                yield Sample((x, rois, (3, 2), 0.5, sampling, aligned), name=f"aligned={aligned}, sampling={sampling}")
        yield Sample((x, rois[:0], 2, 0.5, 2, True), name="no RoIs")
        yield Sample((x[:1].expand(2, -1, -1, -1), rois, (3, 2), 0.5, 2, False), name="expanded feature maps")

    def backward_inputs(self, device):
        return [s for s in self.sample_inputs(device, torch.float64) if s.name.startswith("aligned=")]

    def opcheck_calls(self, device, dtype):
        x, rois, _ = _sample_tensors(5, device, dtype)
        g = torch.randn(6, 3, 3, 2, dtype=dtype, device=device)
        sn = torch.ops.sniper
        return [
            (sn.roi_align.default, (x, rois, 0.5, 3, 2, 2, True)),
            (sn.roi_align.default, (x, rois, 0.5, 3, 2, 0, False)),
            (sn.roi_align_backward.default, (g, rois, 0.5, 3, 2, 2, 3, 9, 11, 2, True)),
        ]


class TestDeformRoIPool(OpTester):
    """sniper::deform_roi_pool (and deform_roi_pool_backward) through ops.deform_roi_pool."""

    grad_args = (0, 2)
    cuda_grad_tol_factor = 10
    fuzz_targets = ("ops.deform_roi_pool", "raw.deform_roi_pool", "raw.deform_roi_pool_backward")

    def fn(self, x, rois, offset, output_size, spatial_scale, sampling_ratio, gamma):
        return ops.deform_roi_pool(x, rois, offset, output_size, spatial_scale, sampling_ratio, gamma=gamma)

    def expected_fn(self, x, rois, offset, output_size, spatial_scale, sampling_ratio, gamma):
        return _pooled(x, rois, output_size, spatial_scale, sampling_ratio, True, offset, gamma)

    def raw_calls(self, sample):
        x, rois, offset, output_size, scale, sampling, gamma = sample.args
        ph, pw = _raw_size(output_size)
        grad = torch.ones(len(rois), x.shape[1], ph, pw, dtype=x.dtype, device=x.device)
        sn = torch.ops.sniper
        return [
            (sn.deform_roi_pool.default, (x, rois, offset, scale, ph, pw, sampling, gamma)),
            (sn.deform_roi_pool_backward.default, (grad, x, rois, offset, scale, ph, pw, sampling, gamma)),
        ]

    def fuzz_args(self, ctx, target):
        return roi_fuzz_args(ctx, target)

    def loss(self, out):
        return out.float().square().sum()

    def sample_inputs(self, device, dtype):
        x, rois, off = _sample_tensors(1, device, dtype)
        for sampling in (0, 2, 3):
            yield Sample((x, rois, off, (3, 2), 0.5, sampling, 0.1), name=f"sampling={sampling}")
        yield Sample((x, rois, None, (3, 2), 0.5, 2, 0.1), name="offset=None")
        yield Sample((x, rois, off, (3, 2), 0.5, 2, 1.0), name="gamma=1")
        yield Sample((x, rois[:0], off[:0], (3, 2), 0.5, 2, 0.1), name="no RoIs")
        yield Sample((x, rois, off[:1].expand_as(off), (3, 2), 0.5, 0, 0.1), name="expanded offsets")

    def backward_inputs(self, device):
        keep = ("sampling=0", "sampling=2", "offset=None")
        return [s for s in self.sample_inputs(device, torch.float64) if s.name in keep]

    def opcheck_calls(self, device, dtype):
        x, rois, off = _sample_tensors(5, device, dtype)
        g = torch.randn(6, 3, 3, 2, dtype=dtype, device=device)
        sn = torch.ops.sniper
        return [
            (sn.deform_roi_pool.default, (x, rois, off, 0.5, 3, 2, 2, 0.1)),
            (sn.deform_roi_pool.default, (x, rois, None, 0.5, 3, 2, 0, 0.1)),
            (sn.deform_roi_pool_backward.default, (g, x, rois, off, 0.5, 3, 2, 2, 0.1)),
        ]

    def test_without_offset_is_aligned_roi_align(self):
        x, rois, _ = _random(1)
        for sampling in (0, 3):
            plain = ops.deform_roi_pool(x, rois, None, (3, 2), 0.5, sampling)
            torch.testing.assert_close(plain, ops.roi_align(x, rois, (3, 2), 0.5, sampling, aligned=True))


def test_list_of_boxes_and_empty():
    x, rois, _ = _random(3)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.argsort(rois[:, 0], stable=True)
    torch.testing.assert_close(ops.roi_align(x, per_image, 2, 0.5), ops.roi_align(x, rois[order], 2, 0.5))
    assert ops.roi_align(x, rois[:0], 2).shape == (0, 3, 2, 2)
    assert ops.deform_roi_pool(x, rois[:0], None, 2).shape == (0, 3, 2, 2)


def test_bad_input():
    x, rois, off = _random(6)
    with pytest.raises(ValueError, match=r"batch indices in \[0, 2\)"):
        ops.roi_align(x, rois + torch.tensor([5.0, 0, 0, 0, 0], dtype=torch.float64), 2)
    with pytest.raises(ValueError, match=r"`boxes` must be Tensor\[K, 5\]"):
        ops.roi_align(x, rois[:, :4], 2)
    with pytest.raises(ValueError, match=r"`offset` must have shape \[6, 2, 2, 2\]"):
        ops.deform_roi_pool(x, rois, off, 2)
    with pytest.raises(ValueError, match="`output_size`"):
        ops.roi_align(x, rois, 0)
    with pytest.raises(RuntimeError, match=r"`rois`\[0, 0\] = \d+ is not a batch index in \[0, 2\)"):
        torch.ops.sniper.roi_align(x, rois + torch.tensor([7.0, 0, 0, 0, 0], dtype=torch.float64), 1.0, 2, 2, 0, False)


def test_deform_roi_pool_module():
    x, rois, _ = _random(7, torch.float32)
    m = snn.DeformRoIPool(3, output_size=(3, 2), spatial_scale=0.5, sampling_ratio=2, fc_channels=16)
    out = m(x, rois)
    torch.testing.assert_close(out, ops.roi_align(x, rois, (3, 2), 0.5, 2, aligned=True))  # zero-initialised offsets
    out.square().sum().backward()
    assert m.offset_fc[-1].weight.grad.abs().sum() > 0  # the offsets learn
    torch.testing.assert_close(snn.RoIAlign((3, 2), 0.5, 2)(x, rois), ops.roi_align(x, rois, (3, 2), 0.5, 2))


@pytest.mark.parametrize("aligned", [False, True])
def test_matches_plain_pytorch_baseline(aligned):
    from sniper_ext.baselines import roi_pool_torch

    x, rois, off = _random(9)
    torch.testing.assert_close(
        roi_pool_torch(x, rois, 3, 2, 0.5, 2, aligned), ops.roi_align(x, rois, (3, 2), 0.5, 2, aligned)
    )
    torch.testing.assert_close(
        roi_pool_torch(x, rois, 3, 2, 0.5, 2, True, off), ops.deform_roi_pool(x, rois, off, (3, 2), 0.5, 2)
    )


@requires_cuda
def test_cuda_backward_alerts_when_determinism_is_required():
    x, rois, _ = _random(10, torch.float32)
    xg = x.cuda().requires_grad_()
    out = ops.roi_align(xg, rois.cuda(), 2, 0.5, 2)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="not deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


def test_cpu_backward_is_deterministic():
    x, rois, off = _random(11)
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            xs = x.clone().requires_grad_()
            ops.deform_roi_pool(xs, rois, off, (3, 2), 0.5, 2).square().sum().backward()
            grads.append(xs.grad)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(grads[0], grads[1])


# ---- Robustness: the raw ops skip the Python checks, so the C++ checks and kernels must be safe alone. ----


def _isolated(code, timeout=120):
    """Runs `code` in a fresh interpreter (a crash or a hang fails the test, not pytest); returns stdout."""
    import os
    import subprocess
    import sys
    import textwrap

    import sniper_ext

    here = os.path.dirname(os.path.dirname(os.path.abspath(sniper_ext.__file__)))  # the same sniper_ext as ours
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here] + [p for p in sys.path if p]))
    prelude = "import torch\nimport sniper_ext\nfrom sniper_ext import ops, nn as snn\nsn = torch.ops.sniper\n"
    try:
        r = subprocess.run(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout} s")
    assert r.returncode == 0, f"exit status {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_empty_feature_map_gives_zeros():
    # Every sample lies outside a map of height or width 0: bins are 0, gradients 0 (torchvision segfaults).
    out = _isolated("""
        for shape in [(1, 3, 0, 4), (1, 3, 4, 0), (2, 3, 0, 0)]:
            for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                x = torch.randn(shape).to(dt).requires_grad_()
                rois = torch.tensor([[0.0, 1, 1, 2, 2], [0, -3, -3, 9, 9]], dtype=dt)
                off = torch.randn(2, 2, 2, 3, dtype=dt).requires_grad_()
                for sr in (0, 2):
                    r = ops.roi_align(x, rois, (2, 3), 1.0, sr, aligned=False)
                    d = ops.deform_roi_pool(x, rois, off, (2, 3), 1.0, sr)
                    assert r.shape == d.shape == (2, 3, 2, 3) and not r.any() and not d.any()
                    (r.sum() + d.sum()).backward()
                    assert x.grad.shape == x.shape and not off.grad.any()
                    assert not sn.roi_align(x.detach(), rois, 1.0, 2, 3, sr, True).any()
                    assert not sn.deform_roi_pool(x.detach(), rois, off.detach(), 1.0, 2, 3, sr, 0.1).any()
                    g = torch.ones(2, 3, 2, 3, dtype=dt)
                    assert sn.roi_align_backward(g, rois, 1.0, 2, 3, *shape, sr, False).shape == shape
                    gi, go = sn.deform_roi_pool_backward(g, x.detach(), rois, off.detach(), 1.0, 2, 3, sr, 0.1)
                    assert gi.shape == shape and go.shape == off.shape and not go.any()
        x = torch.randn(1, 3, 0, 5)
        assert not snn.DeformRoIPool(3, 2, 1.0, fc_channels=4)(x, torch.tensor([[0.0, 0, 0, 3, 3]])).any()
        assert not snn.RoIAlign(2)(x, torch.tensor([[0.0, 0, 0, 3, 3]])).any()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_raw_ops_reject_non_finite_rois():
    # Before: y1 = NaN, y2 = -inf on a map of height 1 corrupted the heap in the raw backward ops.
    out = _isolated("""
        x = torch.randn(1, 2, 1, 5, dtype=torch.float64)
        for v in ([0.0, 1, float("nan"), 2, float("-inf")], [0.0, float("inf"), 0, 2, 2], [0.0, 0, 0, float("nan"), 1]):
            rois = torch.tensor([v], dtype=torch.float64)
            g = torch.ones(1, 2, 2, 2, dtype=torch.float64)
            calls = [lambda: sn.roi_align_backward(g, rois, 1.0, 2, 2, 1, 2, 1, 5, 0, False),
                     lambda: sn.roi_align_backward(g, rois, 1.0, 2, 2, 1, 2, 1, 5, 2, True),
                     lambda: sn.deform_roi_pool_backward(g, x, rois, torch.zeros(1, 2, 2, 2, dtype=torch.float64),
                                                         1.0, 2, 2, 3, 0.1),
                     lambda: sn.roi_align(x, rois, 1.0, 2, 2, 2, False),
                     lambda: sn.deform_roi_pool(x, rois, None, 1.0, 2, 2, 0, 0.1)]
            for call in calls:
                try:
                    call()
                except RuntimeError as e:
                    assert "`rois`[0] = (" in str(e) and "must have finite coordinates" in str(e), str(e)
                else:
                    raise AssertionError("accepted " + repr(v))
        print("ok")
    """)
    assert out.strip() == "ok"
    x, rois, _ = _random(12)
    rois[2, 4] = float("nan")
    with pytest.raises(ValueError, match="`boxes` must be finite"):
        ops.roi_align(x, rois, 2)


def test_huge_sample_grids_are_rejected_quickly():
    # Before: these ran for minutes. At most MAX_SAMPLES_PER_ROI bilinear samples per RoI.
    out = _isolated("""
        import time
        from sniper_ext.ops.roi_align import MAX_SAMPLES_PER_ROI
        assert MAX_SAMPLES_PER_ROI == 1 << 24
        x = torch.randn(1, 4, 8, 8)
        roi = torch.tensor([[0.0, 1, 1, 5, 5]])
        t = time.perf_counter()
        for sr in (1 << 20, 1 << 40, 586):
            for call in (lambda: sn.roi_align(x, roi, 1.0, 7, 7, sr, False),
                         lambda: sn.roi_align_backward(torch.ones(1, 4, 7, 7), roi, 1.0, 7, 7, 1, 4, 8, 8, sr, False),
                         lambda: sn.deform_roi_pool(x, roi, None, 1.0, 7, 7, sr, 0.1),
                         lambda: sn.roi_align(x, roi[:0], 1.0, 7, 7, sr, False)):
                try:
                    call()
                except RuntimeError as e:
                    assert "`sampling_ratio` = %d gives 7*7*%d*%d" % (sr, sr, sr) in str(e), str(e)
                else:
                    raise AssertionError(sr)
            try:
                ops.roi_align(x, roi, 7, 1.0, sr)
            except ValueError as e:
                assert "roi_align: `sampling_ratio` = %d" % sr in str(e)
            else:
                raise AssertionError(sr)
        assert sn.roi_align(x, roi, 1.0, 7, 7, 585, False).shape == (1, 4, 7, 7)  # 7*7*585*585 < 2^24
        for big, name in ((1e15, "roi_align"), (1e8, "roi_align_backward"), (1e30, "deform_roi_pool")):
            r = torch.tensor([[0.0, 0, 0, big, big]])
            call = {"roi_align": lambda: sn.roi_align(x, r, 1.0, 7, 7, 0, True),
                    "roi_align_backward": lambda: sn.roi_align_backward(torch.ones(1, 4, 7, 7), r, 1.0, 7, 7, 1, 4,
                                                                        8, 8, 0, True),
                    "deform_roi_pool": lambda: sn.deform_roi_pool(x, r, None, 1.0, 7, 7, 0, 0.1)}[name]
            try:
                call()
            except RuntimeError as e:
                assert name + ": `rois`[0] spans " in str(e) and "adaptive sampling" in str(e), str(e)
            else:
                raise AssertionError(big)
            # A fixed sampling ratio bounds the work however large the box.
            assert sn.roi_align(x, r, 1.0, 7, 7, 2, True).shape == (1, 4, 7, 7)
        assert time.perf_counter() - t < 30
        print("ok")
    """)
    assert out.strip() == "ok"


def test_scalars_are_checked():
    x, rois, off = _random(13)
    sn = torch.ops.sniper
    for bad in (float("nan"), -0.5, 0.0, float("inf")):
        with pytest.raises(ValueError, match=r"roi_align: `spatial_scale` must be a finite number > 0"):
            ops.roi_align(x, rois, 2, spatial_scale=bad)
        with pytest.raises(ValueError, match=r"DeformRoIPool: `spatial_scale` must be (a finite number|> 0)"):
            snn.DeformRoIPool(3, 2, spatial_scale=bad, fc_channels=4)  # refused when built
        with pytest.raises(RuntimeError, match=r"roi_align: `spatial_scale` must be a positive finite number"):
            sn.roi_align(x, rois, bad, 2, 2, 0, False)
        with pytest.raises(RuntimeError, match=r"roi_align_backward: `spatial_scale` must be a positive finite"):
            sn.roi_align_backward(torch.ones(6, 3, 2, 2, dtype=torch.float64), rois, bad, 2, 2, 2, 3, 9, 11, 0, False)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"deform_roi_pool: `gamma` must be finite"):
            ops.deform_roi_pool(x, rois, off[:, :, :2, :2], 2, 0.5, gamma=bad)
        with pytest.raises(RuntimeError, match=r"deform_roi_pool: `gamma` must be finite"):
            sn.deform_roi_pool(x, rois, None, 0.5, 2, 2, 0, bad)
        with pytest.raises(RuntimeError, match=r"deform_roi_pool_backward: `gamma` must be finite"):
            sn.deform_roi_pool_backward(torch.ones(6, 3, 2, 2, dtype=torch.float64), x, rois, None, 0.5, 2, 2, 0, bad)
    with pytest.raises(TypeError, match=r"roi_align: `sampling_ratio` must be an int"):
        ops.roi_align(x, rois, 2, 0.5, 2.5)
    with pytest.raises(RuntimeError, match=r"roi_align_backward: the input sizes must be >= 0"):
        sn.roi_align_backward(torch.ones(6, 3, 2, 2, dtype=torch.float64), rois, 0.5, 2, 2, -2, 3, 9, 11, 0, False)
    # A negative ratio means adaptive, as in torchvision.
    torch.testing.assert_close(ops.roi_align(x, rois, 2, 0.5, -1), ops.roi_align(x, rois, 2, 0.5, 0))


def test_backward_checks_input():
    x, rois, _ = _random(14)
    g = torch.ones(6, 3, 2, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"deform_roi_pool_backward: `input` must have the dtype of `grad`"):
        torch.ops.sniper.deform_roi_pool_backward(g, x.half(), rois, None, 0.5, 2, 2, 0, 0.1)
    with pytest.raises(RuntimeError, match=r"deform_roi_pool_backward: `input` must have shape \[N, C, H, W\]"):
        torch.ops.sniper.deform_roi_pool_backward(g, x[0], rois, None, 0.5, 2, 2, 0, 0.1)
    with pytest.raises(RuntimeError, match=r"deform_roi_pool_backward: `grad` must have shape \[6, 4, 2, 2\]"):
        torch.ops.sniper.deform_roi_pool_backward(g, torch.cat([x, x[:, :1]], 1), rois, None, 0.5, 2, 2, 0, 0.1)


def test_deform_roi_pool_module_checks_channels():
    x, rois, _ = _random(15, torch.float32)
    m = snn.DeformRoIPool(4, output_size=2, spatial_scale=0.5, fc_channels=8)
    with pytest.raises(
        ValueError,
        match=r"DeformRoIPool: `input` has 3 channels but the module was built with "
        r"in_channels=4",
    ):
        m(x, rois)


def test_bins_split_across_tap_tables_match_definition():
    # One bin of 100 x 100 adaptive samples (more than one forward tap table), 9 channels (a block of 8
    # and a remainder), and a RoI with no samples.
    g = torch.Generator().manual_seed(16)
    x = torch.randn(1, 9, 12, 10, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0.0, -40, -30, 60, 70], [0, 3, 3, 3, 3], [0, 2, 1, 9, 5]], dtype=torch.float64)
    got = ops.roi_align(x, rois, 1, 1.0, 0, aligned=True)
    want = ref.roi_pool(x.tolist(), rois.tolist(), 1, 1, 1.0, 0, True)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    for threads in (1, 2):  # channel groups per RoI when RoIs are few: the same values
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            assert torch.equal(ops.roi_align(x, rois, 1, 1.0, 0, aligned=True), got)
        finally:
            torch.set_num_threads(old)


def test_backward_across_tap_table_chunks():
    # 3 RoIs x 300 x 300 samples: more than one input-gradient table chunk (2^18 taps), split inside a RoI.
    from sniper_ext.baselines import roi_pool_torch

    g = torch.Generator().manual_seed(17)
    x = torch.randn(2, 10, 6, 7, generator=g, dtype=torch.float64)
    rois = torch.tensor([[1.0, -2, 0, 5, 4], [0, 1, 1, 6, 5], [1, 0.5, 2, 3, 3.5]], dtype=torch.float64)
    gy = torch.randn(3, 10, 1, 1, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_()
    ops.roi_align(a, rois, 1, 1.0, 300, aligned=True).backward(gy)
    b = x.clone().requires_grad_()
    roi_pool_torch(b, rois, 1, 1, 1.0, 300, True).backward(gy)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@requires_cuda
def test_cuda_checks_match_cpu():
    x, rois, _ = _random(18, torch.float32)
    sn = torch.ops.sniper
    bad = rois + torch.tensor([7.0, 0, 0, 0, 0])
    msgs = []
    for dev in ("cpu", "cuda"):
        with pytest.raises(RuntimeError, match=r"`rois`\[0, 0\] = \d+ is not a batch index in \[0, 2\)") as e:
            sn.roi_align(x.to(dev), bad.to(dev), 1.0, 2, 2, 0, False)
        msgs.append(str(e.value)[str(e.value).index("roi_align: ") :].splitlines()[0])  # past "func, file:line, "
        g = torch.ones(6, 3, 2, 2, device=dev)
        with pytest.raises(RuntimeError, match=r"deform_roi_pool_backward: `rois`\[0, 0\] = \d+ is not a batch"):
            sn.deform_roi_pool_backward(g, x.to(dev), bad.to(dev), None, 1.0, 2, 2, 0, 0.1)
    assert msgs[0] == msgs[1]
    with pytest.raises(RuntimeError, match=r"deform_roi_pool_backward: `grad` and `input` must be on the same device"):
        sn.deform_roi_pool_backward(torch.ones(6, 3, 2, 2, device="cuda"), x, rois.cuda(), None, 1.0, 2, 2, 0, 0.1)
    xe = torch.randn(1, 3, 0, 4, device="cuda")
    r = torch.tensor([[0.0, 1, 1, 3, 2]], device="cuda")
    assert not sn.roi_align(xe, r, 1.0, 2, 2, 2, False).any()
    assert (
        sn.roi_align_backward(torch.ones(1, 3, 2, 2, device="cuda"), r, 1.0, 2, 2, 1, 3, 0, 4, 2, False).shape
        == xe.shape
    )
    gi, go = sn.deform_roi_pool_backward(
        torch.ones(1, 3, 2, 2, device="cuda"), xe, r, torch.ones(1, 2, 2, 2, device="cuda"), 1.0, 2, 2, 0, 0.1
    )
    assert gi.shape == xe.shape and not go.any()


def test_non_finite_offsets_sample_outside():
    # A sample at a NaN or infinite position counts as outside the map (before: a NaN position was cast to
    # int64 and indexed the feature map far out of bounds).
    out = _isolated("""
        g = torch.Generator().manual_seed(19)
        x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
        rois = torch.tensor([[0.0, 1, 1, 8, 7], [1, 0, 2, 10, 8]], dtype=torch.float64)
        off = (torch.randn(2, 2, 3, 2, generator=g, dtype=torch.float64) * 0.2)
        bad = off.clone()
        bad[0, 0, 0, 0], bad[1, 1, 2, 1], bad[1, 0, 1, 0] = float("nan"), float("inf"), float("-inf")
        for sr in (0, 2):
            want = ops.deform_roi_pool(x, rois, off, (3, 2), 1.0, sr)
            o = bad.clone().requires_grad_()
            got = ops.deform_roi_pool(x, rois, o, (3, 2), 1.0, sr)
            hit = torch.zeros_like(want, dtype=torch.bool)
            hit[0, :, 0, 0] = hit[1, :, 2, 1] = hit[1, :, 1, 0] = True
            assert not got[hit].any() and torch.equal(got[~hit], want[~hit])
            got.sum().backward()
            assert torch.isfinite(o.grad).all() and o.grad[0, :, 0, 0].eq(0).all() and o.grad[1, :, 2, 1].eq(0).all()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_compile_fullgraph():
    x, rois, off = _random(20, torch.float32)
    torch._dynamo.reset()

    def f(x, rois, off):
        return (
            ops.roi_align(x, rois, (3, 2), 0.5, -1, False).sum()
            + ops.deform_roi_pool(x, rois, off, (3, 2), 0.5, 2, 0.1).square().sum()
        )

    xs, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    os_, oc = off.clone().requires_grad_(), off.clone().requires_grad_()
    a = f(xs, rois, os_)
    b = torch.compile(f, fullgraph=True, backend="aot_eager")(xc, rois, oc)
    torch.testing.assert_close(b, a)
    a.backward()
    b.backward()
    torch.testing.assert_close(xc.grad, xs.grad)
    torch.testing.assert_close(oc.grad, os_.grad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=0), "DeformRoIPool: `in_channels` must be an int in"),
        (dict(in_channels="4"), "DeformRoIPool: `in_channels` must be an int"),
        (dict(fc_channels=-4), "DeformRoIPool: `fc_channels` must be an int in"),
        (dict(output_size=None), "DeformRoIPool: `output_size` must be a positive int or"),
        (dict(output_size=()), "DeformRoIPool: `output_size` must be a positive int or"),
        (dict(output_size=1.5), "DeformRoIPool: `output_size` must be a positive int or"),
        (dict(output_size=(2**30, 2**30)), "DeformRoIPool: `output_size` .* bins per RoI"),
        (dict(output_size=(4096, 4096), fc_channels=2**20), "DeformRoIPool: the offset FC would have"),
        (dict(gamma=float("nan")), "DeformRoIPool: `gamma` must be a finite number"),
        (dict(sampling_ratio=-1), "DeformRoIPool: `sampling_ratio` must be an int in"),
    ],
)
def test_deform_roi_pool_module_checks_its_arguments(kwargs, match):
    args = dict(in_channels=3, output_size=2, fc_channels=4) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        snn.DeformRoIPool(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(output_size=0), "RoIAlign: `output_size` must be a positive int or"),
        (dict(output_size=2, spatial_scale=float("inf")), "RoIAlign: `spatial_scale` must be a finite number"),
        (dict(output_size=2, sampling_ratio=-2), "RoIAlign: `sampling_ratio` must be an int in"),
        (dict(output_size=2, aligned=None), "RoIAlign: `aligned` must be a bool"),
    ],
)
def test_roi_align_module_checks_its_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        snn.RoIAlign(**kwargs)
