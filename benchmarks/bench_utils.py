"""Shared benchmark helpers (``from bench_utils import ...``); the pytest hooks stay in conftest.py.

SNIPER_BENCH_QUICK=1 shrinks the workloads (for CI smoke runs)."""

from __future__ import annotations

import os

import torch

import sniper_ext  # noqa: F401

QUICK = os.environ.get("SNIPER_BENCH_QUICK", "0") == "1"
HAS_CUDA = torch.cuda.is_available() and sniper_ext._loader.library_paths()["cuda"] is not None


def cuda_sync():
    if HAS_CUDA:
        torch.cuda.synchronize()


def synthetic_detections(images, classes, per_class, seed=0, canvas=800.0):
    """Detector-like output: per (image, class), boxes clustered around a few objects."""
    g = torch.Generator().manual_seed(seed)
    groups = images * classes
    n = groups * per_class
    centres = torch.rand(groups, 4, 2, generator=g) * canvas
    pick = torch.randint(0, 4, (n,), generator=g)
    gid = torch.arange(groups).repeat_interleave(per_class)
    c = centres[gid, pick] + torch.randn(n, 2, generator=g) * 8
    wh = 20 + torch.rand(n, 2, generator=g) * 120
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1)
    return boxes, torch.rand(n, generator=g), gid
