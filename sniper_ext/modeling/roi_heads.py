"""The R-CNN head (method §6–§7): channel reduction, deformable RoI pooling (or RoIAlign), two FC
layers, a C+1-way classifier and one class-agnostic box regressor; and its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import DeformRoIPool, RoIAlign

__all__ = ["RCNNHead", "rcnn_losses"]


class RCNNHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        reduce_channels: int = 256,
        pooler: str = "deform_roi_pool",
        output_size: int = 7,
        sampling_ratio: int = 2,
        spatial_scale: float = 1.0 / 16,
        fc_channels: int = 1024,
    ):
        super().__init__()
        if pooler not in ("deform_roi_pool", "roi_align"):
            raise ValueError(f"RCNNHead: `pooler` must be 'deform_roi_pool' or 'roi_align', got {pooler!r}")
        self.num_classes = num_classes
        self.reduce = nn.Conv2d(in_channels, reduce_channels, 1)
        self.pooler: nn.Module
        if pooler == "deform_roi_pool":
            self.pooler = DeformRoIPool(
                reduce_channels, output_size, spatial_scale, sampling_ratio, gamma=0.1, fc_channels=fc_channels
            )
        else:
            self.pooler = RoIAlign(output_size, spatial_scale, sampling_ratio, aligned=True)
        self.fc1 = nn.Linear(reduce_channels * output_size * output_size, fc_channels)
        self.fc2 = nn.Linear(fc_channels, fc_channels)
        self.cls = nn.Linear(fc_channels, num_classes + 1)
        self.box = nn.Linear(fc_channels, 4)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        for m in (self.cls, self.box):
            nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``rois [R, 5]`` (chip, x1, y1, x2, y2) in chip pixels -> ``(logits [R, C+1], deltas [R, 4])``."""
        x = F.relu(self.reduce(features))
        x = self.pooler(x, rois.to(x.dtype)).flatten(1)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.cls(x), self.box(x)


def rcnn_losses(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    roi_chip: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    b: int,
) -> dict[str, torch.Tensor]:
    """Cross-entropy over every RoI and smooth-L1 (β = 1) on the foreground RoIs, each RoI weighted
    1 / (B · RoIs of its chip): the mean over chips of each chip's mean, so a batch split over
    processes averages to the same loss. (No fg/bg sampling, method §6.)"""
    if len(labels) == 0:
        zero = logits.float().sum() * 0.0 + deltas.float().sum() * 0.0
        return {"rcnn_cls": zero, "rcnn_box": zero}
    counts = torch.bincount(roi_chip, minlength=b).clamp(min=1).to(torch.float32)
    w = 1.0 / (counts[roi_chip] * b)
    cls = (F.cross_entropy(logits.float(), labels, reduction="none") * w).sum()
    fg = labels > 0
    box_each = F.smooth_l1_loss(deltas.float(), targets.float(), beta=1.0, reduction="none").sum(dim=1)
    box = (box_each * w * fg).sum()
    return {"rcnn_cls": cls, "rcnn_box": box}
