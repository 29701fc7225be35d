"""Helpers and constants shared by the tests (``import common_utils``); pytest fixtures and hooks stay in
conftest.py. pytest's default import mode puts python_tests/ on sys.path (the first directory upward
without an __init__.py), so this imports the same way from python_tests/*.py and python_tests/cuda_sim/*.py."""

import pytest
import torch

import sniper_ext  # noqa: F401  (loads torch.ops.sniper)

# With a GPU visible the CUDA tests run, and fail (never skip) when the CUDA kernels are missing:
# importing sniper_ext already raised in that case unless SNIPER_EXT_ALLOW_CPU_ONLY=1.
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA kernels")


def random_boxes(n, *, generator=None, canvas=100.0, max_size=40.0, dtype=torch.float64, device="cpu"):
    """n random xyxy boxes inside [0, canvas] with sides in [1, max_size]."""
    g = generator or torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * canvas
    wh = 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * (max_size - 1)
    return torch.cat([xy, xy + wh], dim=1).to(dtype=dtype, device=device)


def tol(dtype):
    return {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]


# The mmcv Soft-NMS fixture (mmcv tests/test_ops/test_nms.py).
MMCV_BOXES = [[6.0, 3.0, 8.0, 7.0], [3.0, 6.0, 9.0, 11.0], [3.0, 7.0, 10.0, 12.0], [1.0, 4.0, 13.0, 7.0]]
MMCV_SCORES = [0.6, 0.9, 0.7, 0.2]
MMCV_EXPECTED = {
    "linear": ([1, 0, 2, 3], [0.9, 0.6, 0.29024392, 0.2]),
    "gaussian": ([1, 0, 2, 3], [0.9, 0.59630775, 0.35275510, 0.18650459]),
    "hard": ([1, 0, 3], [0.9, 0.6, 0.2]),
}
