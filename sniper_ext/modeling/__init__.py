"""Detector building blocks over the ops and modules of sniper_ext (method §7): for now the
ResNet backbone with torchvision's state-dict names, dilated deformable res5 and frozen stages."""

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

__all__ = [
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
