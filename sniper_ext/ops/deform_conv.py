"""Deformable convolution v1 and v2 (modulated), torchvision's signature and offset layout.

The sampling (``deform_im2col``) and its adjoint (``deform_col2im``) are C++/CUDA ops; the GEMM
with the weight goes through ``torch.matmul``, so the weight and bias gradients, every dtype's
matmul (bf16 included) and autocast come from PyTorch. The batch is processed in chunks that keep
each column buffer under ``MAX_COLUMN_ELEMENTS``, so there is no batch-size or 2^31-element limit.
"""

from __future__ import annotations

import torch

from ._checks import FLOAT_DTYPES, check_devices, check_numel, check_tensor
from ._geometry import Out, register_fake

__all__ = ["deform_conv2d", "MAX_COLUMN_ELEMENTS"]

#: Largest column buffer (elements) one chunk of the batch may use.
MAX_COLUMN_ELEMENTS = 1 << 26
#: Kernel sizes, strides, paddings, dilations and offset groups must be below this (as in the C++ checks),
#: so that no geometry arithmetic can overflow.
MAX_GEOMETRY = 1 << 31


def _is_int(x) -> bool:
    return not isinstance(x, bool) and hasattr(type(x), "__index__") and not isinstance(x, torch.Tensor)


def pair(op, name, v, minimum):
    """An int or a pair of ints in [minimum, 2**31) -> (h, w)."""
    if _is_int(v):
        v = (v, v)
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(x) for x in v)):
        raise TypeError(f"{op}: `{name}` must be an int or a pair of ints, got {v!r}")
    h, w = int(v[0]), int(v[1])
    if not (minimum <= h < MAX_GEOMETRY and minimum <= w < MAX_GEOMETRY):
        raise ValueError(f"{op}: `{name}` must be in [{minimum}, 2**31), got {v!r}")
    return h, w


def _pair(name, v):
    return pair("deform_conv2d", name, v, 0 if name == "padding" else 1)


def _autocast(device_type: str) -> bool:
    """Whether autocast is on for the device type (False for types without autocast, e.g. meta)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def output_size(h, w, kh, kw, sh, sw, ph, pw, dh, dw):
    """(out_h, out_w) of a convolution (<= 0 when the padded input is smaller than the dilated kernel)."""
    return (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1, (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1


def _check_geometry(op, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og):
    """The C++ checks of deform_im2col / deform_col2im (deform_conv_common.h): returns (out_h, out_w)."""
    check_devices(op, input=input, offset=offset, mask=mask)
    if input.dim() != 4:
        raise ValueError(f"{op}: `input` must have shape [N, C, H, W], got {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `input` must be a floating tensor, got {input.dtype}")
    for name, v, lo in (
        ("kernel_h", kh, 1),
        ("kernel_w", kw, 1),
        ("stride_h", sh, 1),
        ("stride_w", sw, 1),
        ("pad_h", ph, 0),
        ("pad_w", pw, 0),
        ("dilation_h", dh, 1),
        ("dilation_w", dw, 1),
        ("offset_groups", og, 1),
    ):
        if not lo <= v < MAX_GEOMETRY:
            raise ValueError(f"{op}: `{name}` must be in [{lo}, 2**31), got {v}")
    n, c, h, w = input.shape
    if c % og:
        raise ValueError(f"{op}: `offset_groups` ({og}) must divide the input channels ({c})")
    oh, ow = output_size(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{op}: the output would be empty (input {h}x{w} too small for the kernel)")
    check_numel(op, "the columns", (max(n, 1), max(c, 2 * og), kh * kw, oh * ow))
    if tuple(offset.shape) != (n, 2 * og * kh * kw, oh, ow):
        raise ValueError(
            f"{op}: `offset` must have shape [{n}, {2 * og * kh * kw}, {oh}, {ow}], got {tuple(offset.shape)}"
        )
    if offset.dtype != input.dtype:
        raise TypeError(f"{op}: `offset` must have the dtype of `input`")
    if mask is not None:
        if tuple(mask.shape) != (n, og * kh * kw, oh, ow):
            raise ValueError(f"{op}: `mask` must have shape [{n}, {og * kh * kw}, {oh}, {ow}], got {tuple(mask.shape)}")
        if mask.dtype != input.dtype:
            raise TypeError(f"{op}: `mask` must have the dtype of `input`")
    return oh, ow


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
    n, c, h, w = input.shape
    oc, cg, kh, kw = weight.shape
    if kh == 0 or kw == 0:
        raise ValueError(f"{op}: `weight` must have a kernel of at least 1x1, got shape {tuple(weight.shape)}")
    if c == 0:
        raise ValueError(f"{op}: `input` must have at least one channel, got shape {tuple(input.shape)}")
    if cg == 0 or c % cg:
        raise ValueError(f"{op}: `weight` has {cg} input channels per group, which does not divide C = {c}")
    groups = c // cg
    if oc % groups:
        raise ValueError(f"{op}: out channels ({oc}) must be divisible by the weight groups ({groups})")
    oh, ow = output_size(h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{op}: input {h}x{w} is too small for kernel {kh}x{kw} with this padding/dilation")
    check_numel(op, "the sampled columns of one sample", (c, kh, kw, oh, ow))
    check_numel(op, "the output", (n, oc, oh, ow))
    if offset.dim() != 4 or offset.shape[0] != n or offset.shape[2:] != (oh, ow) or offset.shape[1] % (2 * kh * kw):
        raise ValueError(
            f"{op}: `offset` must have shape [{n}, 2*offset_groups*{kh}*{kw}, {oh}, {ow}], got {tuple(offset.shape)}"
        )
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
    if _autocast(input.device.type):
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
    # A contiguous weight: the matmul then rounds alike whatever the layout of the given weight.
    w_mat = weight.contiguous().reshape(groups, oc // groups, cg * kh * kw)
    # A symbolic batch (torch.export with a dynamic batch size) is one chunk: a loop over it
    # would specialise the size.
    starts = [0] if isinstance(n, torch.SymInt) else range(0, max(n, 1), chunk)
    outs = []
    for s in starts:  # an empty batch still runs once (shapes, autograd)
        e = n if isinstance(n, torch.SymInt) else min(n, s + chunk)
        cols = torch.ops.sniper.deform_im2col(
            input[s:e], offset[s:e], None if mask is None else mask[s:e], kh, kw, sh, sw, ph, pw, dh, dw, og
        )
        out = torch.matmul(w_mat, cols.reshape(e - s, groups, cg * kh * kw, L))  # [n, g, oc/g, L]
        outs.append(out.reshape(e - s, oc, oh, ow))
    out = torch.cat(outs) if len(outs) != 1 else outs[0]
    if bias is not None:
        out = out + bias.reshape(1, oc, 1, 1)
    return out


def deform_im2col_geometry(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og) -> Out:
    """sniper::deform_im2col: input [N, C, H, W], offset [N, 2*og*kh*kw, OH, OW], mask None or
    [N, og*kh*kw, OH, OW] -> columns [N, C*kh*kw, OH*OW] in the input's dtype."""
    oh, ow = _check_geometry("deform_im2col", input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og)
    n, c = input.shape[:2]
    return Out((n, c * kh * kw, oh * ow), input.dtype)


def deform_col2im_geometry(
    grad_columns, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og, deterministic
) -> tuple[Out, Out, Out]:
    """sniper::deform_col2im: the columns' gradient [N, C*kh*kw, OH*OW] and deform_im2col's arguments ->
    the gradients of input, offset and mask (an empty [0] without a mask), in the input's dtype."""
    op = "deform_col2im"
    oh, ow = _check_geometry(op, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og)
    check_devices(op, input=input, grad_columns=grad_columns)
    n, c = input.shape[:2]
    if tuple(grad_columns.shape) != (n, c * kh * kw, oh * ow):
        raise ValueError(
            f"{op}: `grad_columns` must have shape [{n}, {c * kh * kw}, {oh * ow}], got {tuple(grad_columns.shape)}"
        )
    dt = input.dtype
    return (
        Out(tuple(input.shape), dt),
        Out(tuple(offset.shape), dt),
        Out(tuple(mask.shape) if mask is not None else (0,), dt),
    )


register_fake("deform_im2col", deform_im2col_geometry)
register_fake("deform_col2im", deform_col2im_geometry)


def _im2col_setup(ctx, inputs, output):
    input, offset, mask, *params = inputs
    ctx.params = params
    ctx.has_mask = mask is not None
    ctx.save_for_backward(input, offset, mask)


def _im2col_backward(ctx, grad_cols):
    input, offset, mask = ctx.saved_tensors
    gi, go, gm = torch.ops.sniper.deform_col2im(
        grad_cols.contiguous(), input, offset, mask, *ctx.params, torch.are_deterministic_algorithms_enabled()
    )
    return (gi, go, gm if ctx.has_mask else None) + (None,) * len(ctx.params)


torch.library.register_autograd("sniper::deform_im2col", _im2col_backward, setup_context=_im2col_setup)
