"""Python API of the compiled ops (``torch.ops.sniper.*``), with argument checks."""
from .boxes import box_iou
from .chips import greedy_chip_cover
from .nms import SOFT_NMS_METHODS, batched_nms, nms, soft_nms

__all__ = ["box_iou", "greedy_chip_cover", "nms", "batched_nms", "soft_nms", "SOFT_NMS_METHODS"]
