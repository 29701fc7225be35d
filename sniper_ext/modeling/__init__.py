"""The SNIPER detector (method §5–§7), kept apart from the compiled ops of :mod:`sniper_ext.ops`:
the ResNet backbone (torchvision's state-dict names, dilated deformable res5, frozen stages), anchor
generation and sampling, box coding, proposal filtering and R-CNN targets, the RPN and R-CNN heads
AutoFocus's FocusPixel head and labels, and the detector that joins them."""

from .anchors import keyed_uniform, make_anchors, sample_anchors
from .box_coder import decode_boxes, encode_boxes
from .detector import SniperRCNN, build_model
from .focus import FocusHead, focus_labels, focus_losses
from .proposals import filter_proposals, proposal_targets
from .resnet import (
    BasicBlock,
    Bottleneck,
    FrozenBatchNorm2d,
    LoadResult,
    ResNet,
    load_torchvision_weights,
    resnet18,
    resnet18_tiny,
    resnet50,
    resnet101,
)
from .roi_heads import RCNNHead, rcnn_losses
from .rpn import RPNHead, rpn_losses

__all__ = [
    "SniperRCNN",
    "build_model",
    "RPNHead",
    "rpn_losses",
    "RCNNHead",
    "rcnn_losses",
    "FocusHead",
    "focus_labels",
    "focus_losses",
    "keyed_uniform",
    "make_anchors",
    "sample_anchors",
    "encode_boxes",
    "decode_boxes",
    "filter_proposals",
    "proposal_targets",
    "BasicBlock",
    "Bottleneck",
    "FrozenBatchNorm2d",
    "LoadResult",
    "ResNet",
    "load_torchvision_weights",
    "resnet18",
    "resnet18_tiny",
    "resnet50",
    "resnet101",
]
