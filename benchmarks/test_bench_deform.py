"""Deformable convolution and RoI pooling, forward and forward+backward, beside plain PyTorch
(grid_sample + matmul; vectorised gathers) on the CPU, torchvision's roi_align on the CPU when
importable, and on a GPU beside torchvision's deform_conv2d / roi_align and a plain conv2d of the
same shape (the practical floor)."""

import pytest
import torch
import torch.nn.functional as F
from bench_utils import HAS_CUDA, QUICK, cuda_sync

from sniper_ext import ops
from sniper_ext.baselines import deform_conv2d_torch, roi_pool_torch

try:
    import torchvision
except Exception:  # noqa: BLE001 - not importable on the CPU machines
    torchvision = None

# (N, C, H, W), 3x3, dilation 2, padding 2, 4 offset groups. res5 is SNIPER's (16 chips of 512).
SHAPES = {"small": (2, 64, 32, 32), "res5": (16, 512, 32, 32)}
CPU_SHAPES = ["small"] if QUICK else ["small", "res5"]


def conv_inputs(shape, device, dtype, seed=0):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    off = torch.randn(n, 2 * 4 * 9, h, w, generator=g) * 2
    mask = torch.rand(n, 4 * 9, h, w, generator=g)
    weight = torch.randn(c, c, 3, 3, generator=g) * 0.02
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (x, off, weight, mask)]


def _impls():
    impls = [("sniper", "cpu", torch.float32), ("torch", "cpu", torch.float32)]
    if HAS_CUDA:
        impls += [
            ("sniper-cuda", "cuda", torch.float32),
            ("sniper-cuda-bf16", "cuda", torch.bfloat16),
            ("conv2d-cuda", "cuda", torch.float32),
        ]
        if torchvision is not None:
            impls.append(("torchvision-cuda", "cuda", torch.float32))
    return impls


def _conv_fn(impl):
    if impl.startswith("sniper"):
        return lambda x, o, w, m: ops.deform_conv2d(x, o, w, None, 1, 2, 2, m)
    if impl == "torch":
        return lambda x, o, w, m: deform_conv2d_torch(x, o, w, None, 1, 2, 2, m)
    if impl.startswith("torchvision"):
        return lambda x, o, w, m: torchvision.ops.deform_conv2d(x, o, w, None, 1, 2, 2, m)
    return lambda x, o, w, m: F.conv2d(x, w, None, 1, 2, 2)


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
@pytest.mark.parametrize("impl, device, dtype", _impls(), ids=[i[0] for i in _impls()])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_deform_conv2d(benchmark, shape, impl, device, dtype, pass_):
    if device == "cpu" and shape not in CPU_SHAPES:
        pytest.skip("res5 on the CPU only in full runs")
    x, o, w, m = conv_inputs(SHAPES[shape], device, dtype)
    fn = _conv_fn(impl)
    benchmark.group = f"deform_conv2d {shape} {tuple(SHAPES[shape])} {pass_}"
    benchmark.extra_info["impl"] = impl

    def run():
        if pass_ == "forward":
            with torch.no_grad():
                out = fn(x, o, w, m)
        else:
            out = fn(x, o, w, m)
            out.float().sum().backward()
        cuda_sync()
        return out

    heavy = device == "cpu" and shape == "res5"
    benchmark.pedantic(run, rounds=1 if heavy else 5, iterations=1, warmup_rounds=0 if heavy else 1)


ROIS, ROI_CHANNELS = (128, 32) if QUICK else (1024, 256)


def roi_inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(4, ROI_CHANNELS, 64, 64, generator=g)
    xy = torch.rand(ROIS, 2, generator=g) * 900
    wh = 16 + torch.rand(ROIS, 2, generator=g) * 300
    rois = torch.cat([torch.randint(0, 4, (ROIS, 1), generator=g).float(), xy, xy + wh], 1)
    off = torch.randn(ROIS, 2, 7, 7, generator=g) * 0.1
    return feat.to(device).requires_grad_(), rois.to(device), off.to(device).requires_grad_()


ROI_IMPLS = (
    ["sniper", "torch"]
    + (["torchvision"] if torchvision is not None else [])
    + (["sniper-cuda"] if HAS_CUDA else [])
    + (["torchvision-cuda"] if HAS_CUDA and torchvision is not None else [])
)


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
@pytest.mark.parametrize("op", ["roi_align", "deform_roi_pool"])
@pytest.mark.parametrize("impl", ROI_IMPLS)
def test_roi_pooling(benchmark, op, impl, pass_):
    if impl.startswith("torchvision") and op != "roi_align":
        pytest.skip("torchvision has no deformable RoI pooling")
    device = "cuda" if impl.endswith("cuda") else "cpu"
    feat, rois, off = roi_inputs(device)
    benchmark.group = f"{op} {ROIS} RoIs 7x7 on [4, {ROI_CHANNELS}, 64, 64] {pass_}"
    benchmark.extra_info["impl"] = impl
    if op == "roi_align":
        fns = {
            "sniper": lambda: ops.roi_align(feat, rois, 7, 1 / 16, 2, True),
            "torch": lambda: roi_pool_torch(feat, rois, 7, 7, 1 / 16, 2, True),
            "torchvision": lambda: torchvision.ops.roi_align(feat, rois, 7, 1 / 16, 2, True),
        }
    else:
        fns = {
            "sniper": lambda: ops.deform_roi_pool(feat, rois, off, 7, 1 / 16, 2, 0.1),
            "torch": lambda: roi_pool_torch(feat, rois, 7, 7, 1 / 16, 2, True, off, 0.1),
        }
    fn = fns[impl.replace("-cuda", "")]

    def run():
        if pass_ == "forward":
            with torch.no_grad():
                fn()
        else:
            fn().sum().backward()
        cuda_sync()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
