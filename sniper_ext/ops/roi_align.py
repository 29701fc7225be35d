"""RoIAlign (torchvision's semantics) and deformable RoI pooling (Deformable ConvNets v1)."""

from __future__ import annotations

import math
import operator

import torch

from ._checks import FLOAT_DTYPES, _compiling, _to_float, check_devices, check_numel, check_tensor, check_threshold
from ._geometry import Out, register_fake

__all__ = ["roi_align", "deform_roi_pool"]

# Bilinear samples per RoI (pooled_h * pooled_w * grid_h * grid_w) the kernels accept
# (kMaxRoiSamples in csrc/include/sniper/bilinear.h).
MAX_SAMPLES_PER_ROI = 1 << 24


MAX_BINS = 1 << 24  # output bins per RoI (each holds at least one sample: see MAX_SAMPLES_PER_ROI)


def _size(op, output_size):
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if not (
        isinstance(output_size, (tuple, list))
        and len(output_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in output_size)
    ):
        raise ValueError(f"{op}: `output_size` must be a positive int or (h, w), got {output_size!r}")
    if output_size[0] * output_size[1] > MAX_BINS:
        raise ValueError(f"{op}: `output_size` {tuple(output_size)} has more than {MAX_BINS} (2**24) bins per RoI")
    return int(output_size[0]), int(output_size[1])


def _rois(op, input, boxes):
    """Tensor[K, 5] (batch index, x1, y1, x2, y2), or a list of Tensor[L, 4] per image."""
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            check_tensor(op, f"boxes[{i}]", b)
            if b.dim() != 2 or b.shape[1] != 4:
                raise ValueError(f"{op}: `boxes[{i}]` must have shape [L, 4], got {tuple(b.shape)}")
            if b.device != input.device:
                raise ValueError(f"{op}: `boxes[{i}]` is on {b.device} but `input` is on {input.device}")
        if len(boxes) != input.shape[0]:
            raise ValueError(f"{op}: a list of boxes needs one tensor per image ({input.shape[0]}), got {len(boxes)}")
        idx = torch.cat(
            [torch.full((len(b), 1), i, dtype=input.dtype, device=input.device) for i, b in enumerate(boxes)]
        )
        boxes = torch.cat([idx, torch.cat(list(boxes)).to(input.dtype)], dim=1) if len(idx) else input.new_zeros((0, 5))
    check_tensor(op, "boxes", boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(
            f"{op}: `boxes` must be Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4], "
            f"got shape {tuple(boxes.shape)}"
        )
    if boxes.device != input.device:
        raise ValueError(f"{op}: `boxes` is on {boxes.device} but `input` is on {input.device}")
    boxes = boxes.to(input.dtype)
    if not _compiling() and boxes.numel():
        b = boxes[:, 0]
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"{op}: `boxes` must be finite")
        if bool(((b < 0) | (b >= input.shape[0]) | (b != b.floor())).any()):
            raise ValueError(f"{op}: `boxes`[:, 0] must be batch indices in [0, {input.shape[0]})")
    return boxes


def _scalars(op, spatial_scale, sampling_ratio, ph, pw, gamma=0.0):
    """spatial_scale finite > 0, sampling_ratio an int (<= 0: adaptive), gamma finite."""
    scale = check_threshold(op, "spatial_scale", spatial_scale, positive=True)
    try:
        sampling = max(operator.index(sampling_ratio), 0)
    except TypeError:
        raise TypeError(f"{op}: `sampling_ratio` must be an int, got {type(sampling_ratio).__name__}") from None
    if ph * pw * sampling * sampling > MAX_SAMPLES_PER_ROI:
        raise ValueError(
            f"{op}: `sampling_ratio` = {sampling} gives {ph}*{pw}*{sampling}*{sampling} bilinear samples "
            f"per RoI; at most {MAX_SAMPLES_PER_ROI} are supported"
        )
    gamma = _to_float(op, "gamma", gamma)  # a huge int is a ValueError, not an OverflowError
    if not math.isfinite(gamma):
        raise ValueError(f"{op}: `gamma` must be finite, got {gamma}")
    return scale, sampling, gamma


def _check_input(op, input):
    check_tensor(op, "input", input)
    if input.dim() != 4:
        raise ValueError(f"{op}: `input` must have shape [N, C, H, W], got {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `input` must be a floating tensor, got {input.dtype}")


def roi_align(
    input, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False
) -> torch.Tensor:
    """RoIAlign as ``torchvision.ops.roi_align``: ``[K, C, h, w]`` averages of bilinear samples
    (``sampling_ratio`` per bin side, or adaptive ceil(roi/bin) when <= 0); ``aligned=True``
    shifts boxes by -0.5 pixel. Differentiable w.r.t. ``input``."""
    op = "roi_align"
    _check_input(op, input)
    ph, pw = _size(op, output_size)
    scale, sampling, _ = _scalars(op, spatial_scale, sampling_ratio, ph, pw)
    rois = _rois(op, input, boxes)
    roi_align_geometry(input, rois, scale, ph, pw, sampling, bool(aligned))
    return torch.ops.sniper.roi_align(input, rois, scale, ph, pw, sampling, bool(aligned))


def deform_roi_pool(
    input, rois, offset, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1
) -> torch.Tensor:
    """Deformable RoI pooling (v1): RoIAlign-style bins (aligned), each bin (i, j) shifted by
    ``gamma * (roi_w * offset[k, 0, i, j], roi_h * offset[k, 1, i, j])``. ``offset`` is
    ``[K, 2, h, w]`` or None (plain pooling). Differentiable w.r.t. ``input`` and ``offset``."""
    op = "deform_roi_pool"
    _check_input(op, input)
    ph, pw = _size(op, output_size)
    scale, sampling, gamma = _scalars(op, spatial_scale, sampling_ratio, ph, pw, gamma)
    rois = _rois(op, input, rois)
    if offset is not None:
        check_tensor(op, "offset", offset)
        if tuple(offset.shape) != (rois.shape[0], 2, ph, pw):
            raise ValueError(
                f"{op}: `offset` must have shape [{rois.shape[0]}, 2, {ph}, {pw}], got {tuple(offset.shape)}"
            )
        offset = offset.to(input.dtype)
    deform_roi_pool_geometry(input, rois, offset, scale, ph, pw, sampling, gamma)
    return torch.ops.sniper.deform_roi_pool(input, rois, offset, scale, ph, pw, sampling, gamma)


# The geometry functions check what the C++ entry points check about shapes and devices (a meta tensor
# mixed with real ones reaches the fake kernels too, and must not yield an uninitialised "result").
def _check_shapes(op, features, name, rois, offset, ph, pw, input=None):
    tensors = {name: features, "rois": rois, "offset": offset}
    if input is not None:
        tensors["input"] = input
    check_devices(op, **tensors)
    if features.dim() != 4:
        raise ValueError(f"{op}: `{name}` must have shape [N, C, H, W], got {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"{op}: `rois` must have shape [K, 5] (batch index, x1, y1, x2, y2)")
    if offset is not None and tuple(offset.shape) != (rois.shape[0], 2, ph, pw):
        raise ValueError(f"{op}: `offset` must have shape [{rois.shape[0]}, 2, {ph}, {pw}]")


def roi_align_geometry(input, rois, scale, ph, pw, sampling, aligned) -> Out:
    """sniper::roi_align: input [N, C, H, W], rois [K, 5] -> [K, C, ph, pw] in the input's dtype."""
    _check_shapes("roi_align", input, "input", rois, None, ph, pw)
    return Out((rois.shape[0], input.shape[1], ph, pw), input.dtype)


def roi_align_backward_geometry(grad, rois, scale, ph, pw, n, c, h, w, sampling, aligned) -> Out:
    """sniper::roi_align_backward: grad [K, C, ph, pw], rois [K, 5] -> the input's gradient [n, c, h, w]."""
    op = "roi_align_backward"
    _check_shapes(op, grad, "grad", rois, None, ph, pw)
    check_numel(op, "the input gradient", (n, c, h, w))
    return Out((n, c, h, w), grad.dtype)


def deform_roi_pool_geometry(input, rois, offset, scale, ph, pw, sampling, gamma) -> Out:
    """sniper::deform_roi_pool: as roi_align, with offset None or [K, 2, ph, pw]."""
    _check_shapes("deform_roi_pool", input, "input", rois, offset, ph, pw)
    return Out((rois.shape[0], input.shape[1], ph, pw), input.dtype)


def deform_roi_pool_backward_geometry(grad, input, rois, offset, scale, ph, pw, sampling, gamma) -> tuple[Out, Out]:
    """sniper::deform_roi_pool_backward: -> the gradients of input and offset (an empty [0] without one)."""
    _check_shapes("deform_roi_pool_backward", grad, "grad", rois, offset, ph, pw, input=input)
    return Out(tuple(input.shape), input.dtype), Out(tuple(offset.shape) if offset is not None else (0,), grad.dtype)


register_fake("roi_align", roi_align_geometry)
register_fake("roi_align_backward", roi_align_backward_geometry)
register_fake("deform_roi_pool", deform_roi_pool_geometry)
register_fake("deform_roi_pool_backward", deform_roi_pool_backward_geometry)


def _alert_nondeterministic(op, grad):
    """Like PyTorch's own atomics-based backward kernels under use_deterministic_algorithms."""
    if grad.is_cuda and torch.are_deterministic_algorithms_enabled():
        msg = (
            f"{op} backward on CUDA accumulates with atomics and is not deterministic; "
            "run it on the CPU or call torch.use_deterministic_algorithms(True, warn_only=True)"
        )
        if torch.is_deterministic_algorithms_warn_only_enabled():
            import warnings

            warnings.warn(msg, stacklevel=3)
        else:
            raise RuntimeError(msg)


def _roi_align_setup(ctx, inputs, output):
    input, rois, *params = inputs
    ctx.params = params
    ctx.shape = tuple(input.shape)
    ctx.save_for_backward(rois)


def _roi_align_backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    _alert_nondeterministic("roi_align", grad)
    scale, ph, pw, sampling, aligned = ctx.params
    gi = torch.ops.sniper.roi_align_backward(grad.contiguous(), rois, scale, ph, pw, *ctx.shape, sampling, aligned)
    return gi, None, None, None, None, None, None


def _drp_setup(ctx, inputs, output):
    input, rois, offset, *params = inputs
    ctx.params = params
    ctx.has_offset = offset is not None
    ctx.save_for_backward(input, rois, offset)


def _drp_backward(ctx, grad):
    input, rois, offset = ctx.saved_tensors
    _alert_nondeterministic("deform_roi_pool", grad)
    gi, go = torch.ops.sniper.deform_roi_pool_backward(grad.contiguous(), input, rois, offset, *ctx.params)
    return gi, None, go if ctx.has_offset else None, None, None, None, None, None


torch.library.register_autograd("sniper::roi_align", _roi_align_backward, setup_context=_roi_align_setup)
torch.library.register_autograd("sniper::deform_roi_pool", _drp_backward, setup_context=_drp_setup)
