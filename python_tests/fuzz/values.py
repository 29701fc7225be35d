"""Random valid arguments for fuzz cases and for the op specs' random calls: the argument record
(``Arg``: a value with the kind and role that the mutations of ``cases.py`` go by) and the random
building blocks (``Ctx``: boxes, scores, convolution geometry, RoI problems, anchors ...). The op specs
(``OpTester`` subclasses in ``python_tests/test_*.py``) build each op's valid calls from these
(``fuzz_args``), and ``cases.py`` mutates them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

import sniper_ext
from sniper_ext import modeling

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HAS_CUDA = torch.cuda.is_available() and sniper_ext._loader.library_paths().get("cuda") is not None


@dataclass
class Arg:
    """One argument of a call: its value, and what kind of value it is for the mutations."""

    name: str
    value: Any
    # tensor | int | opt_int | float | bool | pair | seq | str | dtype | device | generator | tensors | size | fixed
    kind: str
    role: str = "data"  # tensors: data | boxes | rois | index | state | wh | range | labels
    hi: int = 0  # role "index": valid values are in [0, hi)
    keyword: bool = False  # passed by keyword (wrappers' keyword-only arguments)


class Ctx:
    """Random valid values for one call, from `rng`: on CUDA half the time when there is a GPU, in a
    random floating dtype; tests of the ops against their references fix `device` and `dtype`."""

    def __init__(self, rng: random.Random, device: str | None = None, dtype: torch.dtype | None = None):
        self.rng = rng
        self.gen = torch.Generator().manual_seed(rng.getrandbits(62))
        self.device = device or ("cuda" if HAS_CUDA and rng.random() < 0.5 else "cpu")
        self.fixed_dtype = dtype

    def n(self, hi: int, p0: float = 0.15, lo: int = 1) -> int:
        return 0 if self.rng.random() < p0 else self.rng.randint(lo, hi)

    def dtype(self) -> torch.dtype:
        if self.fixed_dtype is not None:
            return self.fixed_dtype
        return self.rng.choices(FLOATS, weights=(5, 3, 1, 1))[0]

    def _to(self, t, dtype):
        return t.to(dtype=dtype, device=self.device)

    def randn(self, *shape, dtype, scale=1.0):
        return self._to(torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale, dtype)

    def rand(self, *shape, dtype, lo=0.0, hi=1.0):
        return self._to(lo + torch.rand(*shape, generator=self.gen, dtype=torch.float64) * (hi - lo), dtype)

    def ints(self, lo, hi, *shape, dtype=torch.int64):
        return self._to(torch.randint(lo, hi, shape, generator=self.gen), dtype)

    def boxes(self, *lead, dtype, canvas=100.0, max_size=40.0):
        """Valid xyxy boxes; sometimes with degenerate (zero width or height) and duplicate rows."""
        xy = torch.rand(*lead, 2, generator=self.gen, dtype=torch.float64) * canvas
        wh = 1 + torch.rand(*lead, 2, generator=self.gen, dtype=torch.float64) * (max_size - 1)
        b = torch.cat([xy, xy + wh], dim=-1)
        flat = b.view(-1, 4)
        if len(flat) > 1 and self.rng.random() < 0.2:
            for _ in range(self.rng.randint(1, 3)):
                i = self.rng.randrange(len(flat))
                if self.rng.random() < 0.5:
                    flat[i, self.rng.choice([2, 3])] = flat[i, self.rng.choice([0, 1])]  # may also invert: fixed below
                else:
                    flat[i] = flat[self.rng.randrange(len(flat))]
            flat[:, 2:] = torch.maximum(flat[:, 2:], flat[:, :2])
        return self._to(b, dtype)

    def uniform(self, lo, hi):
        return self.rng.uniform(lo, hi)


def tensor_arg(name, value, role="data", hi=0):
    return Arg(name, value, "tensor", role, hi)


def random_scores(ctx, n, dt):
    s = ctx.rand(n, dtype=dt)
    return (s * 4).round() / 4 if ctx.rng.random() < 0.3 else s  # ties


def small_anchors(ctx, dt):
    if ctx.rng.random() < 0.3:  # arbitrary anchors: some degenerate, some beyond the chip
        return ctx.boxes(ctx.n(60), dtype=dt, canvas=300, max_size=150) - 50
    h, w = ctx.rng.randint(0, 4) if ctx.rng.random() < 0.1 else ctx.rng.randint(1, 4), ctx.rng.randint(1, 4)
    scales = ctx.rng.sample([2, 4, 7, 10], ctx.rng.randint(1, 3))
    return modeling.make_anchors((h, w), stride=16, ratios=(0.5, 1, 2), scales=scales, dtype=dt, device=ctx.device)


def conv_geometry(ctx):
    kh, kw = ctx.rng.randint(1, 3), ctx.rng.randint(1, 3)
    sh, sw, ph, pw = ctx.rng.randint(1, 2), ctx.rng.randint(1, 2), ctx.rng.randint(0, 2), ctx.rng.randint(0, 2)
    dh, dw = ctx.rng.randint(1, 2), ctx.rng.randint(1, 2)
    h = max(ctx.rng.randint(1, 7), dh * (kh - 1) + 1 - 2 * ph)
    w = max(ctx.rng.randint(1, 7), dw * (kw - 1) + 1 - 2 * pw)
    if ctx.rng.random() < 0.1:  # an empty image side, padded to a non-empty output
        h, ph = 0, max(ph, (dh * (kh - 1) + 2) // 2)
    if ctx.rng.random() < 0.1:
        w, pw = 0, max(pw, (dw * (kw - 1) + 2) // 2)
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return dict(kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, h=h, w=w, oh=oh, ow=ow)


def roi_problem(ctx):
    dt = ctx.dtype()
    n, c = ctx.rng.randint(1, 2), ctx.rng.randint(1, 3)
    h, w = (0 if ctx.rng.random() < 0.05 else ctx.rng.randint(1, 10) for _ in range(2))  # sometimes empty
    scale = ctx.rng.choice([1.0, 0.5, 0.25])
    k = ctx.n(6)
    boxes = ctx.boxes(k, dtype=torch.float64, canvas=max(h, w, 1) / scale, max_size=max(h, w, 2) / scale)
    batch = torch.randint(0, n, (k, 1), generator=ctx.gen).double()
    rois = ctx._to(torch.cat([batch, boxes.cpu()], 1), dt)
    ph, pw = ctx.rng.randint(1, 4), ctx.rng.randint(1, 4)
    return dict(
        dt=dt,
        n=n,
        c=c,
        h=h,
        w=w,
        scale=scale,
        k=k,
        rois=rois,
        ph=ph,
        pw=pw,
        sampling=ctx.rng.randint(0, 2),
        input=ctx.randn(n, c, h, w, dtype=dt),
    )


def roi_offset(ctx, r):
    return ctx.randn(r["k"], 2, r["ph"], r["pw"], dtype=r["dt"], scale=0.2) if ctx.rng.random() < 0.6 else None


def roi_boxes_arg(ctx, r, name):
    if ctx.rng.random() < 0.3:  # a list of [L, 4] per image
        rois = r["rois"]
        per = [rois[rois[:, 0] == i][:, 1:] for i in range(r["n"])]
        return Arg(name, per, "tensors", "boxes")
    return tensor_arg(name, r["rois"], "rois", r["n"])


def output_size_arg(ctx, r, keyword=False):
    return Arg(
        "output_size",
        r["ph"] if r["ph"] == r["pw"] and ctx.rng.random() < 0.5 else (r["ph"], r["pw"]),
        "pair",
        keyword=keyword,
    )
