"""Deformable convolution v1 and v2 (modulated), torchvision's signature and offset layout.

The sampling (``deform_im2col``) and its adjoint (``deform_col2im``) are C++/CUDA ops; the GEMM
with the weight goes through ``torch.matmul``, so the weight and bias gradients, every dtype's
matmul (bf16 included) and autocast come from PyTorch. The batch is processed in chunks that keep
each column buffer under ``MAX_COLUMN_ELEMENTS``, so there is no batch-size or 2^31-element limit.
"""
from __future__ import annotations

import torch

from ._checks import FLOAT_DTYPES, check_tensor

__all__ = ["deform_conv2d", "MAX_COLUMN_ELEMENTS"]

#: Largest column buffer (elements) one chunk of the batch may use.
MAX_COLUMN_ELEMENTS = 1 << 26


def _pair(name, v):
    if isinstance(v, int):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"deform_conv2d: `{name}` must be an int or a pair of ints, got {v!r}")


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Deformable 2-D convolution (v1; v2 when ``mask`` is given), as ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``[N, C, H, W]``.
        offset: ``[N, 2·og·kh·kw, OH, OW]``; channel ``2·(g·kh·kw + k)`` is the y offset and the next
            the x offset of kernel tap ``k`` (row-major) for offset group ``g``; og = offset groups.
        weight: ``[OC, C / groups, kh, kw]`` (weight groups inferred from C).
        bias: ``[OC]`` or None. stride, padding, dilation: int or (h, w).
        mask: ``[N, og·kh·kw, OH, OW]`` modulation (v2) or None.

    float32, float64, float16 and bfloat16; under autocast the inputs take the autocast dtype.
    Backward is deterministic on the CPU, and on CUDA when ``torch.use_deterministic_algorithms``.
    """
    op = "deform_conv2d"
    for name, t in (("input", input), ("offset", offset), ("weight", weight)):
        check_tensor(op, name, t)
    if input.dim() != 4:
        raise ValueError(f"{op}: `input` must have shape [N, C, H, W], got {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{op}: `weight` must have shape [OC, C/groups, kh, kw], got {tuple(weight.shape)}")
    sh, sw = _pair("stride", stride)
    ph, pw = _pair("padding", padding)
    dh, dw = _pair("dilation", dilation)
    if min(sh, sw, dh, dw) <= 0 or min(ph, pw) < 0:
        raise ValueError(f"{op}: stride and dilation must be > 0, padding >= 0")
    n, c, h, w = input.shape
    oc, cg, kh, kw = weight.shape
    if cg == 0 or c % cg:
        raise ValueError(f"{op}: `weight` has {cg} input channels per group, which does not divide C = {c}")
    groups = c // cg
    if oc % groups:
        raise ValueError(f"{op}: out channels ({oc}) must be divisible by the weight groups ({groups})")
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{op}: input {h}x{w} is too small for kernel {kh}x{kw} with this padding/dilation")
    if offset.dim() != 4 or offset.shape[0] != n or offset.shape[2:] != (oh, ow) or offset.shape[1] % (2 * kh * kw):
        raise ValueError(f"{op}: `offset` must have shape [{n}, 2*offset_groups*{kh}*{kw}, {oh}, {ow}], "
                         f"got {tuple(offset.shape)}")
    og = offset.shape[1] // (2 * kh * kw)
    if og == 0 or c % og:
        raise ValueError(f"{op}: offset groups ({og}) must divide the input channels ({c})")
    if mask is not None:
        check_tensor(op, "mask", mask)
        if tuple(mask.shape) != (n, og * kh * kw, oh, ow):
            raise ValueError(f"{op}: `mask` must have shape [{n}, {og * kh * kw}, {oh}, {ow}], got {tuple(mask.shape)}")
    if bias is not None:
        check_tensor(op, "bias", bias)
        if tuple(bias.shape) != (oc,):
            raise ValueError(f"{op}: `bias` must have shape [{oc}], got {tuple(bias.shape)}")

    tensors = [input, offset, weight, mask, bias]
    if torch.is_autocast_enabled(input.device.type):
        dt = torch.get_autocast_dtype(input.device.type)
        tensors = [None if t is None else t.to(dt) for t in tensors]
    input, offset, weight, mask, bias = tensors
    for name, t in (("offset", offset), ("weight", weight), ("mask", mask), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != input.dtype:
            raise TypeError(f"{op}: `{name}` must have the dtype of `input` ({input.dtype}), got {t.dtype}")
        if t.device != input.device:
            raise ValueError(f"{op}: `{name}` is on {t.device} but `input` is on {input.device}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `input` must be float32, float64, float16 or bfloat16, got {input.dtype}")

    L = oh * ow
    per_sample = c * kh * kw * L
    chunk = max(1, MAX_COLUMN_ELEMENTS // max(per_sample, 1))
    w_mat = weight.reshape(groups, oc // groups, cg * kh * kw)
    outs = []
    for s in range(0, max(n, 1), chunk):  # an empty batch still runs once (shapes, autograd)
        e = min(n, s + chunk)
        cols = torch.ops.sniper.deform_im2col(input[s:e], offset[s:e], None if mask is None else mask[s:e],
                                              kh, kw, sh, sw, ph, pw, dh, dw, og)
        out = torch.matmul(w_mat, cols.reshape(e - s, groups, cg * kh * kw, L))  # [n, g, oc/g, L]
        outs.append(out.reshape(e - s, oc, oh, ow))
    out = torch.cat(outs) if len(outs) != 1 else outs[0]
    if bias is not None:
        out = out + bias.reshape(1, oc, 1, 1)
    return out


@torch.library.register_fake("sniper::deform_im2col")
def _im2col_fake(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og):
    n, c = input.shape[:2]
    return input.new_empty((n, c * kh * kw, offset.shape[2] * offset.shape[3]))


@torch.library.register_fake("sniper::deform_col2im")
def _col2im_fake(grad_columns, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og, deterministic):
    gm = mask.new_empty(mask.shape) if mask is not None else input.new_empty((0,))
    return input.new_empty(input.shape), offset.new_empty(offset.shape), gm


def _im2col_setup(ctx, inputs, output):
    input, offset, mask, *params = inputs
    ctx.params = params
    ctx.has_mask = mask is not None
    ctx.save_for_backward(input, offset, mask)


def _im2col_backward(ctx, grad_cols):
    input, offset, mask = ctx.saved_tensors
    gi, go, gm = torch.ops.sniper.deform_col2im(grad_cols.contiguous(), input, offset, mask, *ctx.params,
                                                torch.are_deterministic_algorithms_enabled())
    return (gi, go, gm if ctx.has_mask else None) + (None,) * len(ctx.params)


torch.library.register_autograd("sniper::deform_im2col", _im2col_backward, setup_context=_im2col_setup)
