"""The RPN (method §5): its head, its targets and its loss, batched over the chips of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import label_anchors
from .anchors import sample_anchors
from .box_coder import _encode

__all__ = ["RPNHead", "rpn_losses"]


class RPNHead(nn.Module):
    """3×3 conv + ReLU, then 1×1 convs to one objectness logit and 4 deltas per anchor.

    ``forward(x [B, C, H, W])`` returns ``objectness [B, H·W·A]`` and ``deltas [B, H·W·A, 4]`` in the
    row order of :func:`~sniper_ext.modeling.make_anchors` (cell-major, anchor inner)."""

    def __init__(self, in_channels: int, channels: int, num_anchors: int):
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for m in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.conv(x))
        b, _, fh, fw = h.shape
        a = self.num_anchors
        obj = self.objectness(h).permute(0, 2, 3, 1).reshape(b, fh * fw * a)
        deltas = self.deltas(h).view(b, a, 4, fh, fw).permute(0, 3, 4, 1, 2).reshape(b, fh * fw * a, 4)
        return obj, deltas


def rpn_losses(
    anchors: torch.Tensor,
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    batch: dict,
    cfg,
) -> dict[str, torch.Tensor]:
    """Labels the anchors of every chip in one op call (valid GT positives, invalid-GT ignores),
    samples ``cfg.rpn_batch_per_chip`` per chip with the chip's key, and returns
    ``{"rpn_cls", "rpn_box"}``: binary cross-entropy and smooth-L1 (β = 1/9), each summed and divided
    by B · rpn_batch_per_chip, so that a batch split over processes averages to the same loss."""
    gt_boxes = batch["gt_boxes"].to(anchors.dtype)
    labels, matched = label_anchors(
        anchors,
        gt_boxes,
        batch["gt_state"],
        batch["canvas_wh"].to(anchors.dtype),
        pos_iou=cfg.rpn_pos_iou,
        neg_iou=cfg.rpn_neg_iou,
        invalid_iou=cfg.rpn_invalid_iou,
        allowed_border=cfg.rpn_allowed_border,
    )
    labels = sample_anchors(labels, cfg.rpn_batch_per_chip, cfg.rpn_positive_fraction, keys=batch["seed"])
    b = labels.shape[0]
    norm = float(b * cfg.rpn_batch_per_chip)
    sampled = labels >= 0
    obj = objectness.float()
    cls = F.binary_cross_entropy_with_logits(obj[sampled], labels[sampled].float(), reduction="sum") / norm
    pos = labels == 1
    if bool(pos.any()):
        ci, ai = pos.nonzero(as_tuple=True)
        target = _encode(anchors[ai], gt_boxes[ci, matched[ci, ai]], (1.0, 1.0, 1.0, 1.0))
        box = F.smooth_l1_loss(deltas.float()[ci, ai], target.float(), beta=1.0 / 9, reduction="sum") / norm
    else:
        box = deltas.float().sum() * 0.0
    return {"rpn_cls": cls, "rpn_box": box}
