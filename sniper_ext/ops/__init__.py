"""Python API of the compiled ops (``torch.ops.sniper.*``), with argument checks. The training
target code built on them (anchors, box coding, proposals) lives in :mod:`sniper_ext.modeling`."""

from .box_iou import box_iou
from .deform_conv import deform_conv2d
from .focus_chips import focus_chips
from .greedy_chip_cover import greedy_chip_cover
from .label_anchors import label_anchors
from .nms import SOFT_NMS_METHODS, batched_nms, batched_nms_fixed, nms, nms_fixed, soft_nms, soft_nms_fixed
from .roi_align import deform_roi_pool, roi_align

__all__ = [
    "label_anchors",
    "deform_conv2d",
    "roi_align",
    "deform_roi_pool",
    "box_iou",
    "greedy_chip_cover",
    "focus_chips",
    "nms",
    "batched_nms",
    "soft_nms",
    "nms_fixed",
    "batched_nms_fixed",
    "soft_nms_fixed",
    "SOFT_NMS_METHODS",
]
