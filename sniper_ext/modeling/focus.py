"""AutoFocus's FocusPixels (method §11): the head that predicts, on the stride-16 feature grid,
where small objects are, its training labels and its loss, batched over the chips of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FocusHead", "focus_labels", "focus_losses"]


class FocusHead(nn.Module):
    """conv 3×3 → C, ReLU, conv 1×1 → C, ReLU, conv 1×1 → 2 on the RPN's features.

    ``forward(x [B, Cin, H, W])`` returns logits ``[B, 2, H, W]`` (class 1: a FocusPixel);
    :meth:`probability` the FocusPixel probability ``[B, H, W]``."""

    def __init__(self, in_channels: int, channels: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.logits = nn.Conv2d(channels, 2, 1)
        for m in (self.conv1, self.conv2, self.logits):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(F.relu(self.conv2(F.relu(self.conv1(x)))))

    @staticmethod
    def probability(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=1)[:, 1]


def focus_labels(
    gt_boxes: torch.Tensor,
    gt_state: torch.Tensor,
    canvas_wh: torch.Tensor,
    grid: tuple[int, int],
    *,
    stride: int = 16,
    focus_range: tuple = (5.0, 64.0),
    ignore_below: float = 90.0,
) -> torch.Tensor:
    """FocusPixel labels int8 ``[B, H, W]`` of a batch of chips, one tensor expression for all.

    A box (``gt_boxes [B, G, 4]`` in chip pixels, ``gt_state`` >= 0; -1 rows are padding) covers
    the cells ``floor(x1/s) <= x < ceil(x2/s)`` (the cells it overlaps), likewise in y. A cell is
    1 where it overlaps a box with ``lo < sqrt(area) < hi``; else -1 (ignored) where it overlaps
    one with ``sqrt(area) <= lo`` or ``hi <= sqrt(area) < ignore_below``, or lies wholly outside
    the chip's canvas ``canvas_wh [B, 2]`` (padding); else 0. Positive wins over ignored."""
    b, g = gt_state.shape
    fh, fw = int(grid[0]), int(grid[1])
    dev = gt_boxes.device
    lo, hi = float(focus_range[0]), float(focus_range[1])
    boxes = gt_boxes.float().reshape(b, g, 4)
    real = gt_state.reshape(b, g) >= 0
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    size = torch.sqrt(w * h)
    nonempty = real & (w > 0) & (h > 0)
    pos = nonempty & (size > lo) & (size < hi)
    ign = nonempty & ((size <= lo) | ((size >= hi) & (size < ignore_below)))
    x0 = torch.floor(boxes[..., 0] / stride)
    x1 = torch.ceil(boxes[..., 2] / stride)
    y0 = torch.floor(boxes[..., 1] / stride)
    y1 = torch.ceil(boxes[..., 3] / stride)
    cx = torch.arange(fw, device=dev, dtype=torch.float32)
    cy = torch.arange(fh, device=dev, dtype=torch.float32)
    in_x = ((cx >= x0[..., None]) & (cx < x1[..., None])).float()  # [B, G, W]
    in_y = ((cy >= y0[..., None]) & (cy < y1[..., None])).float()  # [B, G, H]
    # [B, H, G] @ [B, G, W]: does any box of the kind cover the cell
    pos_map = torch.bmm((in_y * pos[..., None]).transpose(1, 2), in_x) > 0
    ign_map = torch.bmm((in_y * ign[..., None]).transpose(1, 2), in_x) > 0
    cw = canvas_wh.float().reshape(b, 2)
    outside = (cx[None, None, :] * stride >= cw[:, 0, None, None]) | (
        cy[None, :, None] * stride >= cw[:, 1, None, None]
    )
    labels = torch.zeros(b, fh, fw, dtype=torch.int8, device=dev)
    labels[ign_map | outside] = -1
    labels[pos_map & ~outside] = 1
    return labels


def focus_losses(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"focus_cls"}``: 2-way cross-entropy averaged over the non-ignored cells (0 if there is
    none), and the detached accuracies on the positive and negative cells (``acc_focus_pos``,
    ``acc_focus_neg``; NaN where a batch has no such cell)."""
    scores = logits.float().permute(0, 2, 3, 1).reshape(-1, 2)
    lab = labels.reshape(-1).long()
    keep = lab >= 0
    if bool(keep.any()):
        loss = F.cross_entropy(scores[keep], lab[keep])
    else:
        loss = scores.sum() * 0.0
    with torch.no_grad():
        pred = scores.argmax(dim=1)
        pos, neg = lab == 1, lab == 0
        nan = torch.tensor(float("nan"), device=scores.device)
        acc_pos = (pred[pos] == 1).float().mean() if bool(pos.any()) else nan
        acc_neg = (pred[neg] == 0).float().mean() if bool(neg.any()) else nan
    return {"focus_cls": loss, "acc_focus_pos": acc_pos.cpu(), "acc_focus_neg": acc_neg.cpu()}
