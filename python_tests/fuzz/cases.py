"""Fuzz cases for every sniper target: the raw ops (``raw.*``), the ``sniper_ext.ops`` wrappers (``ops.*``)
and the ``sniper_ext.nn`` modules (``nn.*``).

Case ``index`` of ``seed`` is built by ``make_case(seed, index)`` alone (so a child process, the parent and
a replay agree): target ``TARGET_NAMES[index % len(TARGET_NAMES)]``, a *valid* random call of it (small
sizes, often an empty dimension, every floating dtype), then zero to two *mutations*: generic ones chosen by
the kind of an argument (tensor: wrong dtype, rank, size, layout, device, None, a list; NaN/inf/huge/negative
values; out-of-range indices, inverted boxes ...; numbers: 0, -1, 2**62, NaN, inf, 1e300, a string ...),
or a target's own *specials* (huge outputs from cheap expanded inputs, 1e9-pixel canvases, overflowing
geometry ...). ``judge`` applies the acceptance rule of ``python_tests/test_fuzz.py``.
"""

from __future__ import annotations

import glob
import importlib
import math
import os
import random
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sniper_ext import modeling, ops
from sniper_ext import nn as snn

from .values import (
    FLOATS,
    HAS_CUDA,
    Arg,
    Ctx,
    conv_geometry,
    output_size_arg,
    roi_boxes_arg,
    roi_problem,
    small_anchors,
    tensor_arg,
)

_t = tensor_arg
OTHER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64)
ACCEPTED_ERRORS = (ValueError, TypeError, IndexError, RuntimeError)
BIG = 1 << 21  # rows of an expanded input whose *product* with another is a huge (>= 2**42) output


@dataclass
class Case:
    seed: int
    index: int
    target: str
    args: list[Arg]
    mutations: list[str] = field(default_factory=list)
    finite: bool = True  # every floating input finite and of moderate size -> outputs must be finite
    backward: bool = False

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.args)

    def describe(self) -> str:
        return (
            f"{self.target} {', '.join(f'{a.name}={_short(a.value)}' for a in self.args)}"
            + (" +backward" if self.backward else "")
            + (f" | mutations: {'; '.join(self.mutations)}" if self.mutations else "")
        )


def _short(v) -> str:
    if isinstance(v, torch.Tensor):
        s = f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}"
        if v.device.type != "cpu":
            s += f"@{v.device}"
        if v.dim() and any(st == 0 for st, n in zip(v.stride(), v.shape) if n > 1):
            s += "(expanded)"
        elif v.device.type != "meta" and 0 < v.numel() <= 8:
            s += str([round(x, 4) if isinstance(x, float) else x for x in v.flatten().tolist()])
        return s
    if isinstance(v, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in v):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, torch.Generator):
        return f"Generator({v.device})"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


# -- targets --------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    build: Callable[[Ctx], list[Arg]]
    call: Callable[[Case], Any]
    names: tuple[str, ...]  # an accepted error names one of these
    post: Callable[[Case, Any], str | None] | None = None
    specials: tuple[Callable[[Ctx, Case], str], ...] = ()
    grad: bool = False  # may run a backward pass
    roi: bool = False  # a RoI pooling target (see ROI_FUZZ_PENDING in test_fuzz.py)


TARGETS: dict[str, Target] = {}


def target(name, names=None, post=None, specials=(), grad=False, roi=False):
    def deco(build_and_call):
        build, call = build_and_call()
        TARGETS[name] = Target(name, build, call, names or (name.split(".", 1)[1],), post, tuple(specials), grad, roi)
        return build_and_call

    return deco


def _pos(case):
    return [a.value for a in case.args if not a.keyword]


def _kw(case):
    return {a.name: a.value for a in case.args if a.keyword}


def _raw(opname):
    return lambda case: getattr(torch.ops.sniper, opname)(*_pos(case))


def _wrapped(fn):
    return lambda case: fn(*_pos(case), **_kw(case))


def _with_grad(case, names):
    """Copies of the named floating, non-meta tensor arguments that require grad (for a backward pass)."""
    leaves = []
    for a in case.args:
        v = a.value
        if a.name in names and isinstance(v, torch.Tensor) and v.is_floating_point() and v.device.type != "meta":
            a.value = v.detach().requires_grad_(True)  # a leaf sharing the storage (inputs may be expanded)
            leaves.append(a.value)
    return leaves


def _grad_call(fn, names):
    def call(case):
        leaves = _with_grad(case, names) if case.backward else []
        out = fn(case)
        if not leaves:
            return out
        first = out[0] if isinstance(out, tuple) else out
        first.float().sum().backward()
        return (out, *[x.grad for x in leaves if x.grad is not None])

    return call


# Post-conditions: cheap invariants of a successful call (None: fine).


def _index_range(t, lo, hi, what):
    if t.numel() and (int(t.min()) < lo or int(t.max()) >= hi):
        return f"{what} outside [{lo}, {hi}): [{int(t.min())}, {int(t.max())}]"
    return None


def _post_keep(case, out):
    keep = out[0] if isinstance(out, tuple) else out
    n = case.arg("boxes").value.shape[0]
    if keep.dtype != torch.int64 or keep.dim() != 1:
        return f"keep must be int64 [K], got {keep.dtype} {tuple(keep.shape)}"
    if keep.device.type == "meta":
        return None
    if len(torch.unique(keep)) != len(keep):
        return "duplicate indices in keep"
    return _index_range(keep, 0, n, "keep")


def _post_fixed(case, out):
    """The fixed-capacity ops: rows of distinct kept indices in range (of their group with idxs), then -1
    (and 0.0 scores), counts in [0, capacity]."""
    keep, count = out[0], out[-1]
    if keep.device.type == "meta":
        return None
    n, cap = case.arg("boxes").value.shape[0], case.arg("capacity").value
    groups = count.numel()
    if keep.dtype != torch.int64 or tuple(keep.shape) != ((cap,) if count.dim() == 0 else (groups, cap)):
        return f"keep must be int64 of the static shape, got {keep.dtype} {tuple(keep.shape)}"
    count = count.reshape(groups).cpu()
    if count.numel() and (int(count.min()) < 0 or int(count.max()) > cap):
        return f"counts outside [0, {cap}]: {count.tolist()}"
    if keep.numel() == 0:
        return None if not count.any() else "counts above 0 with no room"
    rows = keep.reshape(groups, cap).cpu()
    slots = torch.arange(cap)[None, :] < count[:, None]
    kept = rows[slots]
    if not bool((rows[~slots] == -1).all()):
        return "keep is not -1 after the count"
    if len(out) == 3 and not bool((out[1].cpu().reshape(groups, cap)[~slots] == 0).all()):
        return "scores are not 0 after the count"
    if len(torch.unique(kept)) != len(kept):
        return "duplicate indices in keep"
    if case.has("idxs") and len(kept):
        ids = case.arg("idxs").value.cpu().long()
        if ids.shape == (n,) and not bool((ids[kept.clamp(0, n - 1)] == slots.nonzero()[:, 0]).all()):
            return "a kept index in the row of another group"
    return _index_range(kept, 0, n, "keep")


def _post_iou(case, out):
    n, m = case.args[0].value.shape[0], case.args[1].value.shape[0]
    iou = out[0] if isinstance(out, tuple) else out
    if tuple(iou.shape) != (n, m):
        return f"IoU shape {tuple(iou.shape)} != {(n, m)}"
    if not case.mutations and iou.device.type != "meta" and iou.numel() and not bool(((iou >= 0) & (iou <= 1)).all()):
        return "IoU outside [0, 1]"
    return None


def _post_cover(case, out):
    chips, chip_group, box_chip = out
    if chips.device.type == "meta":
        return None
    g = case.arg("canvas_wh").value.shape[0]
    return _index_range(chip_group, 0, g, "chip_group") or _index_range(box_chip, -1, len(chips), "box_chip")


def _post_focus(case, out):
    if not isinstance(out, torch.Tensor) or out.dtype != torch.int64 or out.dim() != 2 or out.shape[1] != 5:
        return f"chips must be int64 [N, 5], got {_short(out)}"
    if out.device.type == "meta" or len(out) == 0:
        return None
    prob = case.arg("prob").value
    b, h, w = (1, *prob.shape) if prob.dim() == 2 else prob.shape
    r = out.cpu()
    outside = (
        (r[:, 1] < 0) | (r[:, 2] < 0) | (r[:, 3] > w) | (r[:, 4] > h) | (r[:, 1] >= r[:, 3]) | (r[:, 2] >= r[:, 4])
    )
    if bool(outside.any()):
        return f"chip {r[outside][0].tolist()} outside its {h} x {w} map or empty"
    rows = r.tolist()
    if rows != sorted(rows, key=lambda c: (c[0], c[2], c[1], c[4], c[3])):
        return "chips not sorted by map, y1, x1, y2, x2"
    return _index_range(r[:, 0], 0, b, "map index")


def _focus_huge_map(ctx, case):
    prob = case.arg("prob").value
    dt = prob.dtype if isinstance(prob, torch.Tensor) and prob.is_floating_point() else torch.float32
    case.arg("prob").value = torch.zeros(1, 1, 1, dtype=dt, device=ctx.device).expand(1, 1 << 16, (1 << 15) + 1)
    if case.arg("sizes").value is not None:
        case.arg("sizes").value = torch.tensor([[1 << 16, (1 << 15) + 1]], device=ctx.device)
    return "prob expanded to 1 x 2**16 x (2**15 + 1) (a map of more than 2**31 cells)"


def _focus_huge_ints(ctx, case):
    which = ctx.rng.choice(["dilation", "min_size"])
    case.arg(which).value = ctx.rng.choice([2**62, 2**40, 2**31])
    return f"{which} = {case.arg(which).value}"


def _post_labels(case, out):
    labels, matched = out
    if labels.device.type == "meta":
        return None
    g = case.arg("gt_boxes").value.shape[1]
    return _index_range(labels.long(), -1, 2, "labels") or _index_range(matched, -1, g, "matched")


# Specials shared by several targets.


def _huge_boxes_pair(ctx, case):
    dt = case.args[0].value.dtype
    b = ctx.boxes(1, dtype=dt)
    case.args[0].value, case.args[1].value = b.expand(BIG, 4), b.expand(BIG, 4)
    return "boxes expanded to 2**21 x 2**21 (an IoU matrix of 2**42 elements)"


def _cover_giant_canvas(ctx, case):
    if case.arg("canvas_wh").value.shape[0] == 0:
        case.arg("canvas_wh").value = torch.ones(1, 2, dtype=torch.float64, device=ctx.device)
    case.arg("canvas_wh").value = torch.full_like(case.arg("canvas_wh").value, 1e9)
    return "canvas_wh = 1e9 x 1e9 (about 1e15 candidate chips per group)"


def _cover_tiny_stride(ctx, case):
    case.arg("canvas_wh").value = torch.full(
        (max(1, case.arg("canvas_wh").value.shape[0]), 2), 1e5, dtype=torch.float64, device=ctx.device
    )
    case.arg("chip_size").value, case.arg("stride").value = 1, 1
    return "canvas 1e5 x 1e5 with chip_size = stride = 1 (1e10 candidates)"


def _cover_huge_ints(ctx, case):
    which = ctx.rng.choice(["chip_size", "stride"])
    case.arg(which).value = ctx.rng.choice([2**62, 2**53 + 1, 2**31])
    return f"{which} = {case.arg(which).value}"


def _label_huge(ctx, case):
    dt = case.arg("anchors").value.dtype
    a = ctx.boxes(1, dtype=dt)
    case.arg("anchors").value = a.expand(BIG, 4)
    case.arg("gt_boxes").value = torch.zeros(1, 0, 4, dtype=dt, device=ctx.device).expand(BIG, 0, 4)
    case.arg("gt_state").value = torch.zeros(1, 0, dtype=torch.int8, device=ctx.device).expand(BIG, 0)
    case.arg("canvas_wh").value = torch.full((1, 2), 64.0, device=ctx.device).expand(BIG, 2)
    return "2**21 anchors x 2**21 chips (labels of 2**42 elements)"


def _post_anchors(case, out):
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != 4:
        return f"anchors must be [K, 4], got {_short(out)}"
    return None


def _anchors_huge(ctx, case):
    case.arg("feature_hw").value = ctx.rng.choice([(2**30, 2**30), (2**62, 1), (1, 2**40)])
    return f"feature_hw = {case.arg('feature_hw').value}"


def _anchors_extreme(ctx, case):
    which = ctx.rng.choice(["ratios", "scales"])
    case.arg(which).value = [ctx.rng.choice([1e-300, 1e300, 1e-30, 1e30])]
    return f"{which} = {case.arg(which).value} (anchors beyond the dtype's range)"


@target("modeling.make_anchors", post=_post_anchors, specials=(_anchors_huge, _anchors_extreme))
def _():
    def build(ctx):
        return [
            Arg("feature_hw", (ctx.rng.randint(0, 5), ctx.rng.randint(0, 5)), "pair"),
            Arg("stride", ctx.rng.choice([4, 8, 16, 32]), "int", keyword=True),
            Arg("base_size", ctx.rng.choice([8, 16.0, 24.5]), "float", keyword=True),
            Arg(
                "ratios",
                [ctx.rng.choice([0.25, 0.5, 1, 2, 3]) for _ in range(ctx.rng.randint(1, 3))],
                "seq",
                keyword=True,
            ),
            Arg(
                "scales",
                [ctx.rng.choice([1, 2, 4, 7.5, 16]) for _ in range(ctx.rng.randint(1, 3))],
                "seq",
                keyword=True,
            ),
            Arg("dtype", ctx.dtype(), "dtype", keyword=True),
            Arg("device", ctx.rng.choice([None, ctx.device]), "device", keyword=True),
        ]

    return build, _wrapped(modeling.make_anchors)


def _post_sample(case, out):
    labels = case.arg("labels").value
    if out.shape != labels.shape or out.dtype != labels.dtype:
        return f"output {_short(out)} must match labels {_short(labels)}"
    if out.device.type == "meta":
        return None
    o, lab = out.long(), labels.long()
    if bool(((o == 1) & (lab != 1)).any() | ((o == 0) & (lab != 0)).any() | ((o != -1) & (o != 0) & (o != 1)).any()):
        return "sampled labels are not a subset of the input labels"
    num = case.arg("num").value
    if isinstance(num, int) and o.numel() and int((o >= 0).sum(1).max()) > num:
        return f"more than num={num} labels kept"
    return None


def _sample_bad_labels(ctx, case):
    lab = case.arg("labels").value
    kind = ctx.rng.choice(["uint8", "bool", "values"])
    if kind == "uint8":
        case.arg("labels").value = lab.to(torch.uint8)  # -1 becomes 255
    elif kind == "bool":
        case.arg("labels").value = lab > 0
    else:
        case.arg("labels").value = lab * 3
    return f"labels as {kind}"


@target("modeling.sample_anchors", post=_post_sample, specials=(_sample_bad_labels,))
def _():
    def build(ctx):
        b, a = ctx.n(3), ctx.n(200)
        gen = torch.Generator(ctx.device).manual_seed(ctx.rng.randrange(1000)) if ctx.rng.random() < 0.5 else None
        return [
            _t("labels", ctx.ints(-1, 2, b, a, dtype=ctx.rng.choice([torch.int8, torch.int8, torch.int64])), "labels"),
            Arg("num", ctx.rng.randint(0, 64), "int"),
            Arg("positive_fraction", ctx.uniform(0, 1), "float"),
            Arg("generator", gen, "generator"),
        ]

    return build, _wrapped(modeling.sample_anchors)


def _weights(ctx):
    return [ctx.rng.choice([1.0, 1.0, 10.0, 5.0]) for _ in range(4)]


def _coder_degenerate(ctx, case):
    ref = case.args[0].value.clone()
    if ref.numel() == 0:
        ref = ctx.boxes(1, dtype=ref.dtype)
        case.args[1].value = (
            case.args[1].value.new_zeros((1, 4)) + 1 if case.args[1].value.shape[0] == 0 else case.args[1].value[:1]
        )
    kind = ctx.rng.choice(["zero-width", "inverted"])
    if kind == "zero-width":
        ref[0, 2] = ref[0, 0]
    else:
        ref[0, [0, 2]] = ref[0, [2, 0]]
    case.args[0].value = ref
    return f"ref[0] {kind}"


@target("modeling.encode_boxes", specials=(_coder_degenerate,))
def _():
    def build(ctx):
        dt = ctx.rng.choice([torch.float32, torch.float64])
        n = ctx.n(10)
        return [
            _t("ref", ctx.boxes(n, dtype=dt), "boxes"),
            _t("target", ctx.boxes(n, dtype=dt), "boxes"),
            Arg("weights", _weights(ctx), "seq"),
        ]

    return build, _wrapped(modeling.encode_boxes)


@target("modeling.decode_boxes", specials=(_coder_degenerate,))
def _():
    def build(ctx):
        dt = ctx.rng.choice([torch.float32, torch.float64])
        n = ctx.n(10)
        r = ctx.rng.random()
        clip = (
            None
            if r < 0.4
            else (ctx.uniform(10, 200), ctx.uniform(10, 200))
            if r < 0.7
            else ctx.rand(n, 2, dtype=dt, lo=10, hi=200)
        )
        return [
            _t("ref", ctx.boxes(n, dtype=dt), "boxes"),
            _t("deltas", ctx.randn(n, 4, dtype=dt)),
            Arg("weights", _weights(ctx), "seq"),
            Arg("clip_wh", clip, "tensor" if isinstance(clip, torch.Tensor) else "seq", "wh"),
        ]

    return build, _wrapped(modeling.decode_boxes)


def _post_props(case, out):
    boxes, scores, chip = out
    b = case.arg("objectness").value.shape[0]
    if boxes.device.type == "meta":
        return None
    return _index_range(chip, 0, max(b, 1), "chip")


@target("modeling.filter_proposals", post=_post_props)
def _():
    def build(ctx):
        dt = ctx.rng.choice([torch.float32, torch.float64])
        anchors = small_anchors(ctx, dt)
        a, b = anchors.shape[0], ctx.n(3)
        lo = ctx.rand(b, 1, dtype=torch.float64, lo=0, hi=20)
        hi = lo + ctx.rand(b, 1, dtype=torch.float64, lo=5, hi=300)
        if ctx.rng.random() < 0.3:
            hi = torch.full_like(hi, math.inf)
        pre = None if ctx.rng.random() < 0.5 else ctx.rng.randint(0, 100)
        return [
            _t("anchors", anchors, "boxes"),
            _t("objectness", ctx.randn(b, a, dtype=dt)),
            _t("deltas", ctx.randn(b, a, 4, dtype=dt, scale=ctx.rng.choice([0.3, 0.3, 3.0]))),
            _t("canvas_wh", ctx.rand(b, 2, dtype=dt, lo=64, hi=256), "wh"),
            _t("valid_range", torch.cat([lo, hi], 1).to(dt), "range"),
            Arg("min_size", ctx.uniform(0, 5), "float", keyword=True),
            Arg("nms_iou", ctx.uniform(0, 1), "float", keyword=True),
            Arg("post_nms_top_n", ctx.rng.randint(0, 50), "int", keyword=True),
            Arg("pre_nms_top_n", pre, "opt_int", keyword=True),
            Arg("weights", _weights(ctx), "seq", keyword=True),
        ]

    return build, _wrapped(modeling.filter_proposals)


def _post_targets(case, out):
    rois, roi_chip, labels, targets = out
    if rois.device.type == "meta":
        return None
    b = case.arg("gt_boxes").value.shape[0]
    if not (len(rois) == len(roi_chip) == len(labels) == len(targets)):
        return "outputs of different lengths"
    return _index_range(roi_chip, 0, max(b, 1), "roi_chip")


@target("modeling.proposal_targets", post=_post_targets)
def _():
    def build(ctx):
        dt = ctx.rng.choice([torch.float32, torch.float64])
        b, g = ctx.n(3), ctx.n(4)
        p = ctx.n(10) if b else 0
        lo = ctx.rand(b, 1, dtype=torch.float64, lo=0, hi=10)
        hi = lo + ctx.rand(b, 1, dtype=torch.float64, lo=10, hi=300)
        return [
            _t("proposals", ctx.boxes(p, dtype=dt), "boxes"),
            _t("proposal_chip", ctx.ints(0, max(b, 1), p), "index", b),
            _t("gt_boxes", ctx.boxes(b, g, dtype=dt), "boxes"),
            _t("gt_labels", ctx.ints(1, 6, b, g)),
            _t("gt_state", ctx.ints(-1, 2, b, g, dtype=torch.int8), "state"),
            _t("valid_range", torch.cat([lo, hi], 1).to(dt), "range"),
            Arg("fg_iou", ctx.uniform(0, 0.9), "float", keyword=True),
            Arg("weights", _weights(ctx), "seq", keyword=True),
        ]

    return build, _wrapped(modeling.proposal_targets)


# -- deformable convolution -------------------------------------------------------------------------


def _im2col_huge_padding(ctx, case):
    pad = 1 << 20
    inp = case.arg("input").value
    n, c = inp.shape[:2]
    og = case.arg("offset_groups").value
    for name in ("kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w"):
        case.arg(name).value = 1
    case.arg("pad_h").value = case.arg("pad_w").value = pad
    oh, ow = inp.shape[2] + 2 * pad, inp.shape[3] + 2 * pad
    case.arg("offset").value = torch.zeros(1, 1, 1, 1, dtype=inp.dtype, device=inp.device).expand(n, 2 * og, oh, ow)
    if case.arg("mask").value is not None:
        case.arg("mask").value = torch.ones(1, 1, 1, 1, dtype=inp.dtype, device=inp.device).expand(n, og, oh, ow)
    if case.has("grad_columns"):
        case.arg("grad_columns").value = torch.zeros(1, 1, 1, dtype=inp.dtype, device=inp.device).expand(n, c, oh * ow)
    return "padding 2**20 with expanded offsets (columns of >= 2**42 elements)"


def _im2col_overflow(ctx, case):
    name = ctx.rng.choice(["kernel_h", "kernel_w", "dilation_h", "dilation_w", "pad_h", "stride_w", "offset_groups"])
    case.arg(name).value = ctx.rng.choice([2**62, 2**63 - 1, 2**40, 2**31])
    return f"{name} = {case.arg(name).value} (int64 overflow in the geometry)"


def _conv_huge(ctx, case):
    inp = case.arg("input").value
    n, c = inp.shape[:2]
    w = case.arg("weight").value
    oc, cg = w.shape[:2]
    og, pad = 1, 1 << 20
    case.arg("weight").value = w[:, :, :1, :1].expand(oc, cg, 1, 1).contiguous()
    case.arg("stride").value, case.arg("dilation").value, case.arg("padding").value = 1, 1, pad
    oh, ow = inp.shape[2] + 2 * pad, inp.shape[3] + 2 * pad
    case.arg("offset").value = torch.zeros(1, 1, 1, 1, dtype=inp.dtype, device=inp.device).expand(n, 2 * og, oh, ow)
    case.arg("mask").value = None
    return "padding 2**20 with expanded offsets (columns of >= 2**42 elements)"


def _module_call(make, forward_args):
    """Builds the module from the keyword arguments, moves it to the input's dtype/device, calls it,
    and (with backward) also returns the gradients of the input and of every parameter."""

    def call(case):
        ctor = {a.name: a.value for a in case.args if a.keyword}
        inputs = [a.value for a in case.args if not a.keyword]
        m = make(**ctor)
        x = inputs[0]
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            m = m.to(device=x.device, dtype=x.dtype)
        leaves = _with_grad(case, forward_args[:1]) if case.backward else []
        inputs = [a.value for a in case.args if not a.keyword]
        out = m(*inputs)
        if not case.backward:
            return out
        out.float().sum().backward()
        return (out, *[t.grad for t in leaves], *[p.grad for p in m.parameters() if p.grad is not None])

    return call


@target("nn.DeformConv2d", names=("DeformConv2d", "deform_conv2d"), grad=True)
def _():
    def build(ctx):
        dt = ctx.dtype()
        g = conv_geometry(ctx)
        groups, og = ctx.rng.choice([1, 1, 2]), ctx.rng.choice([1, 2])
        c = groups * og * ctx.rng.randint(1, 2)
        size = lambda a, b: a if a == b and ctx.rng.random() < 0.5 else (a, b)  # noqa: E731
        kw = lambda name, v, kind="size": Arg(name, v, kind, keyword=True)  # noqa: E731
        return [
            _t("x", ctx.randn(ctx.n(2, p0=0.2), c, g["h"], g["w"], dtype=dt)),
            kw("in_channels", c),
            kw("out_channels", groups * ctx.rng.randint(1, 3)),
            kw("kernel_size", size(g["kh"], g["kw"]), "pair"),
            kw("stride", size(g["sh"], g["sw"]), "pair"),
            kw("padding", size(g["ph"], g["pw"]), "pair"),
            kw("dilation", size(g["dh"], g["dw"]), "pair"),
            kw("groups", groups),
            kw("offset_groups", og),
            kw("bias", ctx.rng.random() < 0.5, "bool"),
            kw("modulated", ctx.rng.random() < 0.4, "bool"),
        ]

    return build, _module_call(snn.DeformConv2d, ("x",))


# -- RoI pooling --------------------------------------------------------------------------------------


def _roi_huge(ctx, case):
    for name in ("pooled_h", "pooled_w", "output_size"):
        if case.has(name):
            case.arg(name).value = 1 << 30 if name != "output_size" else (1 << 30, 1 << 30)
    if case.has("offset"):
        case.arg("offset").value = None
    return "output size 2**30 x 2**30"


def _roi_sampling(ctx, case):
    name = "sampling_ratio"
    if case.has(name):
        case.arg(name).value = ctx.rng.choice([1 << 31, 1 << 40, 2**62])
    return f"sampling_ratio = {case.arg(name).value if case.has(name) else None}"


ROI_SPECIALS = (_roi_huge, _roi_sampling)


@target("nn.RoIAlign", names=("RoIAlign", "roi_align"), roi=True, specials=ROI_SPECIALS, grad=True)
def _():
    def build(ctx):
        r = roi_problem(ctx)
        return [
            _t("input", r["input"]),
            roi_boxes_arg(ctx, r, "rois"),
            output_size_arg(ctx, r, keyword=True),
            Arg("spatial_scale", r["scale"], "float", keyword=True),
            Arg("sampling_ratio", r["sampling"] - 1, "int", keyword=True),
            Arg("aligned", ctx.rng.random() < 0.5, "bool", keyword=True),
        ]

    return build, _module_call(snn.RoIAlign, ("input",))


@target("nn.DeformRoIPool", names=("DeformRoIPool", "deform_roi_pool"), roi=True, specials=ROI_SPECIALS, grad=True)
def _():
    def build(ctx):
        r = roi_problem(ctx)
        return [
            _t("input", r["input"]),
            roi_boxes_arg(ctx, r, "rois"),
            Arg("in_channels", r["c"], "size", keyword=True),
            output_size_arg(ctx, r, keyword=True),
            Arg("spatial_scale", r["scale"], "float", keyword=True),
            Arg("sampling_ratio", r["sampling"], "int", keyword=True),
            Arg("gamma", ctx.uniform(0, 0.5), "float", keyword=True),
            Arg("fc_channels", ctx.rng.randint(1, 8), "size", keyword=True),
        ]

    return build, _module_call(snn.DeformRoIPool, ("input",))


# -- the ops: valid calls from their specs -------------------------------------------------------------

#: The test modules with op specs (OpTester subclasses, whose ``fuzz_targets`` and ``fuzz_args`` build the
#: valid calls of the op targets): every python_tests/test_*.py that defines one.
SPEC_MODULES = tuple(
    sorted(
        name
        for name, text in (
            (os.path.basename(p)[:-3], open(p).read())
            for p in glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test_*.py"))
        )
        if re.search(r"^class Test\w*\(OpTester\):", text, re.M)
    )
)
_COVER_SPECIALS = (_cover_giant_canvas, _cover_tiny_stride, _cover_huge_ints)
_IM2COL_SPECIALS = (_im2col_huge_padding, _im2col_overflow)
_FOCUS_SPECIALS = (_focus_huge_map, _focus_huge_ints)
#: What the fuzz cases add to an op target (``raw.<op>``: torch.ops.sniper.<op>; ``ops.<op>``: the wrapper)
#: beyond its spec: post-conditions of a successful call, limit probes, and RoI pooling (see
#: ROI_FUZZ_PENDING). A backward pass differentiates the spec's grad_args.
OP_TARGETS: dict[str, dict] = {
    "raw.box_iou": dict(post=_post_iou, specials=(_huge_boxes_pair,)),
    "ops.box_iou": dict(post=_post_iou, specials=(_huge_boxes_pair,)),
    "raw.nms": dict(post=_post_keep),
    "ops.nms": dict(post=_post_keep),
    "raw.batched_nms": dict(post=_post_keep),
    "ops.batched_nms": dict(post=_post_keep),
    "raw.soft_nms": dict(post=_post_keep),
    "ops.soft_nms": dict(post=_post_keep),
    "raw.nms_fixed": dict(post=_post_fixed),
    "ops.nms_fixed": dict(post=_post_fixed),
    "raw.batched_nms_fixed": dict(post=_post_fixed),
    "ops.batched_nms_fixed": dict(post=_post_fixed),
    "raw.soft_nms_fixed": dict(post=_post_fixed),
    "ops.soft_nms_fixed": dict(post=_post_fixed),
    "raw.greedy_chip_cover": dict(post=_post_cover, specials=_COVER_SPECIALS),
    "ops.greedy_chip_cover": dict(post=_post_cover, specials=_COVER_SPECIALS),
    "raw.focus_chips": dict(post=_post_focus, specials=_FOCUS_SPECIALS),
    "ops.focus_chips": dict(post=_post_focus, specials=_FOCUS_SPECIALS),
    "raw.label_anchors": dict(post=_post_labels, specials=(_label_huge,)),
    "ops.label_anchors": dict(post=_post_labels, specials=(_label_huge,)),
    "raw.deform_im2col": dict(specials=_IM2COL_SPECIALS),
    "raw.deform_col2im": dict(specials=_IM2COL_SPECIALS),
    "ops.deform_conv2d": dict(specials=(_conv_huge,)),
    "raw.roi_align": dict(roi=True, specials=ROI_SPECIALS),
    "raw.roi_align_backward": dict(roi=True, specials=ROI_SPECIALS),
    "raw.deform_roi_pool": dict(roi=True, specials=ROI_SPECIALS),
    "raw.deform_roi_pool_backward": dict(roi=True, specials=ROI_SPECIALS),
    "ops.roi_align": dict(roi=True, specials=ROI_SPECIALS),
    "ops.deform_roi_pool": dict(roi=True, specials=ROI_SPECIALS),
}


def _add_op_targets():
    for module in SPEC_MODULES:
        importlib.import_module(module)
    from op_tester import SPECS

    specs = {name: spec() for spec in SPECS for name in spec.fuzz_targets}
    if not set(OP_TARGETS) <= set(specs):
        raise RuntimeError(f"OP_TARGETS names targets no op spec builds: {sorted(set(OP_TARGETS) - set(specs))}")
    for name, spec in specs.items():
        kind, op = name.split(".", 1)
        opts = OP_TARGETS.get(name, {})
        call = _raw(op) if kind == "raw" else _wrapped(getattr(ops, op))
        if kind == "ops" and spec.grad_args:
            # The names of the differentiable arguments, from a valid call.
            args = spec.fuzz_args(Ctx(random.Random(0), device="cpu"), name)
            call = _grad_call(call, tuple(args[i].name for i in spec.grad_args))
        TARGETS[name] = Target(
            name,
            lambda ctx, spec=spec, name=name: spec.fuzz_args(ctx, name),
            call,
            (op,),
            opts.get("post"),
            tuple(opts.get("specials", ())),
            kind == "ops" and bool(spec.grad_args),
            opts.get("roi", False),
        )


_add_op_targets()


# Targets that only test the harness (SNIPER_FUZZ_SELFTEST=1): a crash, a hang, a foreign exception,
# non-finite output, an unnamed error and an endless case generation must each be reported as a
# failure of exactly that case.
if os.environ.get("SNIPER_FUZZ_SELFTEST") == "1":

    def _selftest(name, fn):
        TARGETS[name] = Target(name, lambda ctx: [Arg("x", 1.0, "fixed")], fn, ("selftest",))

    _selftest("selftest.crash", lambda case: os.kill(os.getpid(), signal.SIGSEGV))
    _selftest("selftest.hang", lambda case: time.sleep(3600))
    _selftest("selftest.foreign", lambda case: 1 // 0)
    _selftest("selftest.nonfinite", lambda case: torch.tensor([0.0, math.inf]))
    _selftest("selftest.unnamed", lambda case: torch.zeros(2) + torch.zeros(3))
    # a case whose generation never ends: reported as that case's timeout, and the run goes on
    TARGETS["selftest.slowgen"] = Target(
        "selftest.slowgen", lambda ctx: (time.sleep(3600), [Arg("x", 1.0, "fixed")])[1], lambda case: 0, ("selftest",)
    )
    TARGETS = {k: v for k, v in TARGETS.items() if k.startswith("selftest.")}

TARGET_NAMES = sorted(TARGETS)


# -- mutations ------------------------------------------------------------------------------------


# No size in the "allocatable but huge" zone (2**31 ... 2**38 elements): such requests may legitimately
# run or allocate gigabytes. 2**40 and beyond must be refused up front.
INTS = (0, -1, -7, 1, 3, 1 << 40, 2**62, -(2**63), 2**63 - 1, 2**64, 1.5, True, None, "3", math.nan)
SIZES = (0, -1, -4, 1.5, None, "4", True, 3)
FLOATS_BAD = (
    math.nan,
    math.inf,
    -math.inf,
    -1.0,
    0.0,
    1e300,
    -1e300,
    5e-324,
    1e-300,
    2.0,
    100.0,
    None,
    "0.5",
    True,
    10**400,
)
PAIRS = (0, -1, (0, 1), (1, -1), (1, 2, 3), (), 1.5, (1.5, 2), None, "3", 1 << 40, (1 << 40, 1), [2, 2], (True, 1))
SEQS = (
    [],
    [math.nan],
    [0],
    [-1],
    [math.inf],
    [1e300],
    [1e-300],
    "abc",
    None,
    5,
    [[1, 2]],
    (1.0, 1.0, 1.0),
    [1, 2, 3, 4, 5],
    [10**400],
)
NONFINITE = ("nan", "inf", "-inf")


def _finfo_max(dtype):
    return torch.finfo(dtype).max if dtype.is_floating_point else None


def _pick_position(ctx, t):
    return ctx.rng.randrange(t.numel())


def _set_flat(t, i, value):
    t = t.contiguous().clone()
    t.view(-1)[i] = value
    return t


def mutate_tensor(ctx: Ctx, case: Case, a: Arg) -> str:
    t = a.value
    rng = ctx.rng
    if t is None:  # an optional tensor: give one of a wrong shape
        a.value = ctx.randn(3, dtype=ctx.dtype())
        return f"{a.name}: a [3] tensor instead of None"
    if not isinstance(t, torch.Tensor):  # already mutated into something else
        a.value = None
        return f"{a.name}: None"
    # An expanded huge input (also one with an empty dimension) is never materialised or grown.
    small = t.device.type != "meta" and math.prod(max(d, 1) for d in t.shape) <= 1 << 24
    floating = t.is_floating_point() and small
    opts = [("rank+", 1), ("dim0", 1), ("meta", 1), ("none", 1), ("0d", 0.5)]
    if small:
        opts += [("dtype", 3), ("rank-", 1), ("dim+1", 1.5), ("noncontig", 1), ("list", 0.5)]
    if floating:
        opts += [("nan", 2), ("inf", 1.5), ("huge", 1.5), ("neg", 1), ("zero", 1)]
    if a.role == "index":
        opts.append(("oob", 4))
    if a.role in ("state", "labels"):
        opts.append(("badvalue", 3))
    if a.role in ("boxes", "rois") and floating:
        opts += [("invert", 2), ("degenerate", 2)]
    if a.role == "wh" and floating:
        opts.append(("badwh", 3))
    if a.role == "range" and floating:
        opts.append(("badrange", 3))
    if a.role == "rois" and floating:
        opts.append(("badbatch", 3))
    if HAS_CUDA and small:
        opts.append(("otherdevice", 1))
    kind = rng.choices([o for o, _ in opts], weights=[w for _, w in opts])[0]
    n = t.numel() if small else 0
    what = kind
    if kind == "dtype":
        new = rng.choice([d for d in FLOATS + OTHER_DTYPES if d != t.dtype])
        a.value = t.to(new)
        what = f"dtype {new}"
    elif kind == "rank+":
        a.value = t.unsqueeze(rng.randint(0, t.dim()))
    elif kind == "rank-":
        a.value = t.flatten(-2, -1) if t.dim() >= 2 else t.reshape(-1)[:1].reshape(()) if t.numel() else t.new_zeros(())
    elif kind == "dim0" and t.dim():
        d = rng.randrange(t.dim())
        a.value = t.narrow(d, 0, 0)
        what = f"dim {d} -> 0"
    elif kind == "dim+1" and t.dim():
        d = rng.randrange(t.dim())
        extra = (
            t.narrow(d, 0, 1) if t.shape[d] else t.new_zeros(tuple(1 if i == d else s for i, s in enumerate(t.shape)))
        )
        a.value = torch.cat([t, extra], d)
        what = f"dim {d} + 1"
    elif kind == "noncontig" and t.dim() and t.device.type != "meta":
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        a.value = big[..., ::2]
    elif kind == "meta":
        a.value = t.to("meta")
    elif kind == "otherdevice":
        a.value = t.to("cpu" if t.is_cuda else "cuda")
    elif kind == "none":
        a.value = None
    elif kind == "list" and t.device.type != "meta" and t.numel() <= 64:
        a.value = t.tolist()
    elif kind == "0d":
        a.value = torch.ones((), dtype=t.dtype, device=t.device)
    elif kind in NONFINITE and n:
        i = _pick_position(ctx, t)
        a.value = _set_flat(t, i, float(kind))
        case.finite = False
        what = f"{kind} at flat index {i}"
    elif kind == "huge" and n:
        v = min(rng.choice([1e15, 1e30, 1e300]), _finfo_max(t.dtype)) * rng.choice([1, -1])
        a.value = _set_flat(t, _pick_position(ctx, t), v)
        case.finite = False
        what = f"huge value {v:g}"
    elif kind == "neg" and n:
        a.value = -t
    elif kind == "zero" and small:
        a.value = torch.zeros_like(t)
    elif kind == "oob" and n:
        info = (
            torch.iinfo(t.dtype)
            if t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
            else None
        )
        v = rng.choice([-1, a.hi, a.hi + 5, 2**62, -(2**62)])
        if info:
            v = max(min(v, info.max), info.min)
        a.value = _set_flat(t, _pick_position(ctx, t), v)
        what = f"index {v}"
    elif kind == "badvalue" and n:
        v = rng.choice([2, -2, 127, -128])
        a.value = _set_flat(t, _pick_position(ctx, t), v)
        what = f"value {v}"
    elif kind in ("invert", "degenerate") and n and t.dim() and t.shape[-1] >= 4:
        x = t.clone()
        rows = x.reshape(-1, x.shape[-1])
        r = rng.randrange(rows.shape[0])
        o = x.shape[-1] - 4
        if kind == "invert":
            rows[r, [o, o + 2]] = rows[r, [o + 2, o]] - 1
        else:
            rows[r, o + 2] = rows[r, o]
        a.value = x
        what = f"{kind} box {r}"
    elif kind == "badwh" and n:
        v = rng.choice([0.0, -5.0, 1e9, 1e-30, 1e30])
        a.value = _set_flat(t, _pick_position(ctx, t), v)
        case.finite = case.finite and abs(v) < 1e9
        what = f"canvas value {v:g}"
    elif kind == "badrange" and t.dim() == 2 and t.shape[0] and t.shape[1] == 2:
        x = t.clone()
        r = rng.randrange(x.shape[0])
        sub = rng.choice(["lo>hi", "neg", "nan-hi", "inf-lo"])
        if sub == "lo>hi":
            x[r] = torch.tensor([50.0, 10.0], dtype=x.dtype)
        elif sub == "neg":
            x[r, 0] = -5
        elif sub == "nan-hi":
            x[r, 1] = math.nan
            case.finite = False
        else:
            x[r, 0] = math.inf
            case.finite = False
        a.value = x
        what = f"valid_range {sub}"
    elif kind == "badbatch" and n:
        x = t.clone()
        r = rng.randrange(x.shape[0]) if x.dim() == 2 else 0
        v = rng.choice([-1.0, float(a.hi), 0.5, 1e10])
        if x.dim() == 2:
            x[r, 0] = v
        a.value = x
        what = f"batch index {v:g}"
    else:
        what = f"{kind} (no effect on {_short(t)})"
    return f"{a.name}: {what}"


def mutate(ctx: Ctx, case: Case) -> str:
    rng = ctx.rng
    args = [a for a in case.args if a.kind != "fixed"]
    if not args:
        return "none"
    a = rng.choice(args)
    if a.kind == "tensor":
        return mutate_tensor(ctx, case, a)
    if a.kind == "tensors":
        if a.value and rng.random() < 0.7:
            i = rng.randrange(len(a.value))
            sub = Arg(f"{a.name}[{i}]", a.value[i], "tensor", "boxes")
            what = mutate_tensor(ctx, case, sub)
            a.value = list(a.value)
            a.value[i] = sub.value
            return what
        a.value = list(a.value) + [ctx.boxes(1, dtype=ctx.dtype())] if rng.random() < 0.5 else list(a.value)[:-1]
        return f"{a.name}: list length {len(a.value)}"
    choices = {
        "int": INTS,
        "opt_int": INTS,
        "float": FLOATS_BAD,
        "pair": PAIRS,
        "seq": SEQS,
        "size": SIZES,
        "bool": (None, 2, "yes", 0.5),
        "str": ("", "GAUSSIAN", None, 1, "hard "),
        "dtype": (torch.int64, torch.bool, "float32", None, torch.complex64),
        "device": ("meta", "bogus", 5, torch.device("meta")) + (("cuda",) if HAS_CUDA else ()),
        "generator": (object(), "gen", 5),
    }[a.kind]
    v = rng.choice(choices)
    if a.kind == "float" and isinstance(v, float) and not math.isfinite(v):
        case.finite = False
    if (
        isinstance(v, float)
        and abs(v) >= 1e300
        or (
            isinstance(v, (list, tuple))
            and any(
                isinstance(x, float) and (not math.isfinite(x) or abs(x) >= 1e300 or 0 < abs(x) <= 1e-300) for x in v
            )
        )
    ):
        case.finite = False
    a.value = v
    return f"{a.name} = {_short(v)}"


def make_case(seed: int, index: int) -> Case:
    """Case ``index`` of run ``seed``: deterministic, so parent, child and replays agree."""
    rng = random.Random(f"sniper-fuzz:{seed}:{index}")
    name = TARGET_NAMES[index % len(TARGET_NAMES)]
    t = TARGETS[name]
    ctx = Ctx(rng)
    case = Case(seed, index, name, t.build(ctx))
    case.backward = t.grad and rng.random() < 0.5
    k = rng.choices((0, 1, 2), weights=(2, 5.5, 2.5))[0]
    if t.specials and rng.random() < 0.15:
        case.mutations.append("special: " + rng.choice(t.specials)(ctx, case))
        case.finite = False  # specials probe limits; their outputs are not held to finiteness
        k = min(k, 1)
    for _ in range(k):
        case.mutations.append(mutate(ctx, case))
    return case


# -- the acceptance rule ------------------------------------------------------------------------------


_CHECK_PREFIX = re.compile(r"^\S+, \S+:\d+, ")  # "function, file:line, " of STD_TORCH_CHECK


def names_target(message: str, names) -> bool:
    """True when the message starts with ``<name>:`` (our checks; after the C++ check's location prefix)
    or names ``sniper::<name>`` (the dispatcher's own errors about the op: schema mismatches, no tensor
    argument, meta tensors for data-dependent outputs), for one of the target's names."""
    msg = _CHECK_PREFIX.sub("", message.lstrip())
    return any(msg.startswith(f"{n}:") or re.search(rf"\bsniper::{re.escape(n)}(?![A-Za-z0-9_])", msg) for n in names)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for x in out:
            yield from _tensors(x)


def judge(case: Case, out=None, exc: BaseException | None = None) -> tuple[str, str]:
    """("ok" | "error" | "fail", detail) for one call's outcome."""
    t = TARGETS[case.target]
    if exc is not None:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {msg[:300]}"
        if isinstance(exc, ACCEPTED_ERRORS) and names_target(str(exc), t.names):
            return "error", detail
        why = (
            "exception type not accepted"
            if not isinstance(exc, ACCEPTED_ERRORS)
            else f"message does not start with {' or '.join(repr(n + ':') for n in t.names)}"
        )
        return "fail", f"{why}: {detail}"
    if case.finite:
        for i, x in enumerate(_tensors(out)):
            if (
                (x.is_floating_point() or x.is_complex())
                and x.device.type != "meta"
                and x.numel()
                and not bool(torch.isfinite(x).all())
            ):
                return "fail", f"non-finite values in output tensor #{i} from finite inputs: {_short(x)}"
    if t.post is not None:
        try:
            bad = t.post(case, out)
        except Exception as e:  # noqa: BLE001 - a malformed output
            bad = f"malformed output ({type(e).__name__}: {e})"
        if bad:
            return "fail", f"post-condition: {bad}"
    return "ok", ""
