"""Python API of the compiled ops (``torch.ops.sniper.*``), with argument checks."""

from .anchors import decode_boxes, encode_boxes, label_anchors, make_anchors, sample_anchors
from .box_iou import box_iou
from .deform_conv import deform_conv2d
from .greedy_chip_cover import greedy_chip_cover
from .nms import SOFT_NMS_METHODS, batched_nms, nms, soft_nms
from .proposals import filter_proposals, proposal_targets
from .roi_align import deform_roi_pool, roi_align

__all__ = [
    "make_anchors",
    "label_anchors",
    "sample_anchors",
    "encode_boxes",
    "decode_boxes",
    "filter_proposals",
    "proposal_targets",
    "deform_conv2d",
    "roi_align",
    "deform_roi_pool",
    "box_iou",
    "greedy_chip_cover",
    "nms",
    "batched_nms",
    "soft_nms",
    "SOFT_NMS_METHODS",
]
