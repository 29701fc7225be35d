"""Modules over the ops: DeformConv2d (with its own offset/mask conv), DeformRoIPool (learned
offsets from a first plain pooling pass) and RoIAlign."""

from __future__ import annotations

import math

import torch
from torch import nn

from .ops import deform_conv2d, deform_roi_pool, roi_align
from .ops._checks import FLOAT_DTYPES, MAX_ELEMENTS, check_int, check_number, check_tensor
from .ops.deform_conv import _autocast, output_size
from .ops.deform_conv import pair as _checked_pair
from .ops.roi_align import _size as _roi_size

__all__ = ["DeformConv2d", "DeformRoIPool", "RoIAlign"]


class DeformConv2d(nn.Module):
    """Deformable convolution with its own zero-initialised offset conv (so it starts as a plain
    convolution), drop-in for ``nn.Conv2d``. ``modulated=True`` also predicts a mask (v2), through
    a sigmoid; SNIPER's res5 uses ``DeformConv2d(512, 512, 3, padding=2, dilation=2, offset_groups=4)``."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        offset_groups=1,
        bias=True,
        modulated=False,
    ):
        super().__init__()
        op = "DeformConv2d"
        in_channels = check_int(op, "in_channels", in_channels, minimum=1)
        out_channels = check_int(op, "out_channels", out_channels, minimum=1)
        groups = check_int(op, "groups", groups, minimum=1)
        offset_groups = check_int(op, "offset_groups", offset_groups, minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{op}: `groups` ({groups}) must divide `in_channels` ({in_channels}) and "
                f"`out_channels` ({out_channels})"
            )
        if in_channels % offset_groups:
            raise ValueError(f"{op}: `offset_groups` ({offset_groups}) must divide `in_channels` ({in_channels})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _checked_pair(op, "kernel_size", kernel_size, 1)
        self.stride = _checked_pair(op, "stride", stride, 1)
        self.padding = _checked_pair(op, "padding", padding, 0)
        self.dilation = _checked_pair(op, "dilation", dilation, 1)
        self.offset_groups, self.modulated = offset_groups, bool(modulated)
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = offset_groups * kh * kw
        self.conv_offset = nn.Conv2d(
            in_channels,
            (3 if modulated else 2) * taps,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        if self.conv_offset.bias is not None:
            nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        self._check_input(x)
        o = self.conv_offset(x)
        taps = self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        offset, mask = (o[:, : 2 * taps], torch.sigmoid(o[:, 2 * taps :])) if self.modulated else (o, None)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def _check_input(self, x):
        """Errors of the offset conv and of deform_conv2d, up front and in the module's terms."""
        op = "DeformConv2d"
        check_tensor(op, "input", x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{op}: `input` must have shape [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: `input` must be a floating tensor, got {x.dtype}")
        if x.device != self.weight.device:
            raise ValueError(f"{op}: `input` is on {x.device} but the module is on {self.weight.device}")
        if x.dtype != self.weight.dtype and not _autocast(x.device.type):
            raise TypeError(
                f"{op}: `input` must have the parameters' dtype ({self.weight.dtype}), got {x.dtype}; "
                "convert the module with .to(dtype) or use autocast"
            )
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        h, w = x.shape[2:]
        if h == 0 or w == 0:
            raise ValueError(f"{op}: `input` must have non-empty spatial dimensions, got {tuple(x.shape)}")
        if min(output_size(h, w, kh, kw, sh, sw, ph, pw, dh, dw)) <= 0:
            raise ValueError(
                f"{op}: input {h}x{w} is too small for kernel {kh}x{kw} with padding {self.padding} "
                f"and dilation {self.dilation}"
            )


class DeformRoIPool(nn.Module):
    """Deformable RoI pooling whose offsets an FC stack learns from a first, plain pooling pass
    (Deformable ConvNets v1, as SNIPER's R-CNN head uses). The last FC is zero-initialised, so the
    module starts as plain (aligned) RoI pooling."""

    def __init__(self, in_channels, output_size=7, spatial_scale=1 / 16, sampling_ratio=0, gamma=0.1, fc_channels=1024):
        super().__init__()
        op = "DeformRoIPool"
        self.in_channels = check_int(op, "in_channels", in_channels, minimum=1)
        self.output_size = _roi_size(op, output_size)
        self.spatial_scale = check_number(op, "spatial_scale", spatial_scale, positive=True)
        self.sampling_ratio = check_int(op, "sampling_ratio", sampling_ratio, minimum=0)
        self.gamma = check_number(op, "gamma", gamma)
        fc_channels = check_int(op, "fc_channels", fc_channels, minimum=1)
        ph, pw = self.output_size
        # The first FC's weight is [fc_channels, in_channels * ph * pw].
        if self.in_channels * ph * pw * fc_channels > MAX_ELEMENTS:
            raise ValueError(
                f"{op}: the offset FC would have {self.in_channels * ph * pw * fc_channels} weights "
                f"(in_channels * output bins * fc_channels), more than {MAX_ELEMENTS} (2**40)"
            )
        self.offset_fc = nn.Sequential(
            nn.Linear(in_channels * ph * pw, fc_channels),
            nn.ReLU(inplace=True),
            nn.Linear(fc_channels, fc_channels),
            nn.ReLU(inplace=True),
            nn.Linear(fc_channels, 2 * ph * pw),
        )
        last = self.offset_fc[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, input, rois):
        # The offset FC sees in_channels * ph * pw features: say so here rather than in a matmul error.
        if isinstance(input, torch.Tensor) and input.dim() == 4 and input.shape[1] != self.in_channels:
            raise ValueError(
                f"DeformRoIPool: `input` has {input.shape[1]} channels but the module was built "
                f"with in_channels={self.in_channels}"
            )
        plain = deform_roi_pool(
            input, rois, None, self.output_size, self.spatial_scale, self.sampling_ratio, self.gamma
        )
        offset = self.offset_fc(plain.flatten(1)).view(-1, 2, *self.output_size)
        return deform_roi_pool(
            input, rois, offset, self.output_size, self.spatial_scale, self.sampling_ratio, self.gamma
        )


class RoIAlign(nn.Module):
    """Module form of :func:`sniper_ext.ops.roi_align`."""

    def __init__(self, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        super().__init__()
        op = "RoIAlign"
        self.output_size = _roi_size(op, output_size)
        self.spatial_scale = check_number(op, "spatial_scale", spatial_scale, positive=True)
        self.sampling_ratio = check_int(op, "sampling_ratio", sampling_ratio, minimum=-1)
        if not isinstance(aligned, bool):
            raise TypeError(f"{op}: `aligned` must be a bool, got {type(aligned).__name__}")
        self.aligned = aligned

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)
