import pytest
import torch
from conftest import requires_cuda

import reference as ref
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


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling", [0, 2])
def test_roi_align_matches_definition(aligned, sampling):
    x, rois, _ = _random(0)
    got = ops.roi_align(x, rois, (3, 2), 0.5, sampling, aligned)
    want = ref.roi_pool(x.tolist(), rois.tolist(), 3, 2, 0.5, sampling, aligned)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sampling", [0, 3])
def test_deform_roi_pool_matches_definition(sampling):
    x, rois, off = _random(1)
    got = ops.deform_roi_pool(x, rois, off, (3, 2), 0.5, sampling, gamma=0.1)
    want = ref.roi_pool(x.tolist(), rois.tolist(), 3, 2, 0.5, sampling, True, off.tolist(), 0.1)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    plain = ops.deform_roi_pool(x, rois, None, (3, 2), 0.5, sampling)
    torch.testing.assert_close(plain, ops.roi_align(x, rois, (3, 2), 0.5, sampling, aligned=True))


def test_gradcheck():
    x, rois, off = _random(2)
    xs, os_ = x.clone().requires_grad_(), off.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ops.roi_align(a, rois, (3, 2), 0.5, 2, False), (xs,))
    assert torch.autograd.gradcheck(lambda a: ops.roi_align(a, rois, (3, 2), 0.5, 0, True), (xs,))
    assert torch.autograd.gradcheck(lambda a, o: ops.deform_roi_pool(a, rois, o, (3, 2), 0.5, 2, 0.1), (xs, os_))


def test_list_of_boxes_and_empty():
    x, rois, _ = _random(3)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.argsort(rois[:, 0], stable=True)
    torch.testing.assert_close(ops.roi_align(x, per_image, 2, 0.5), ops.roi_align(x, rois[order], 2, 0.5))
    assert ops.roi_align(x, rois[:0], 2).shape == (0, 3, 2, 2)
    assert ops.deform_roi_pool(x, rois[:0], None, 2).shape == (0, 3, 2, 2)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_dtypes(dtype, tol):
    x, rois, off = _random(4)
    x, rois = x.to(dtype), rois.round().to(dtype)
    got = ops.deform_roi_pool(x, rois, off.to(dtype), (3, 2), 0.5, 2)
    want = ops.deform_roi_pool(x.double(), rois.double(), off.to(dtype).double(), (3, 2), 0.5, 2)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 4)


def test_opcheck():
    x, rois, off = _random(5, torch.float32)
    sn = torch.ops.sniper
    torch.library.opcheck(sn.roi_align.default, (x, rois, 0.5, 3, 2, 2, True))
    torch.library.opcheck(sn.deform_roi_pool.default, (x, rois, off, 0.5, 3, 2, 2, 0.1))
    torch.library.opcheck(sn.deform_roi_pool.default, (x, rois, None, 0.5, 3, 2, 0, 0.1))
    g = torch.randn(6, 3, 3, 2)
    torch.library.opcheck(sn.roi_align_backward.default, (g, rois, 0.5, 3, 2, 2, 3, 9, 11, 2, True))
    torch.library.opcheck(sn.deform_roi_pool_backward.default, (g, x, rois, off, 0.5, 3, 2, 2, 0.1))


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


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    x, rois, off = _random(8, dtype)
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    for aligned in (False, True):
        xc, xg = x.clone().requires_grad_(), x.cuda().requires_grad_()
        a = ops.roi_align(xc, rois, (3, 2), 0.5, 2, aligned)
        b = ops.roi_align(xg, rois.cuda(), (3, 2), 0.5, 2, aligned)
        torch.testing.assert_close(b.cpu(), a, rtol=tol, atol=tol)
        a.float().sum().backward()
        b.float().sum().backward()
        torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=tol, atol=tol)
    oc, og_ = off.clone().requires_grad_(), off.cuda().requires_grad_()
    a = ops.deform_roi_pool(x, rois, oc, (3, 2), 0.5, 2)
    b = ops.deform_roi_pool(x.cuda(), rois.cuda(), og_, (3, 2), 0.5, 2)
    torch.testing.assert_close(b.cpu(), a, rtol=tol, atol=tol)
    a.float().square().sum().backward()
    b.float().square().sum().backward()
    torch.testing.assert_close(og_.grad.cpu(), oc.grad, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("aligned", [False, True])
def test_matches_plain_pytorch_baseline(aligned):
    from sniper_ext.baselines import roi_pool_torch

    x, rois, off = _random(9)
    torch.testing.assert_close(roi_pool_torch(x, rois, 3, 2, 0.5, 2, aligned), ops.roi_align(x, rois, (3, 2), 0.5, 2, aligned))
    torch.testing.assert_close(roi_pool_torch(x, rois, 3, 2, 0.5, 2, True, off), ops.deform_roi_pool(x, rois, off, (3, 2), 0.5, 2))


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
