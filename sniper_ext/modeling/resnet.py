"""ResNet backbones for the SNIPER detector (method §7), with torchvision's state-dict key names.

``ResNet(depth)`` builds ResNet-18/34/50/101/152 (BasicBlock or Bottleneck; the stride of a
Bottleneck is on its 3 × 3 conv, as torchvision's v1.5) without the classifier. Its parameters and
buffers are named exactly as torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, each block
``conv1/bn1/conv2/bn2(/conv3/bn3)`` and ``downsample.0/downsample.1``), so an ImageNet checkpoint
of torchvision loads with :func:`load_torchvision_weights`. SNIPER's options:

* ``freeze_at=2``: the stem (1) and layer1 (2) are frozen: no gradients, and their BatchNorms are
  :class:`FrozenBatchNorm2d` (the affine map of an eval-mode BatchNorm, fixed).
* ``norm="train"``: every other BatchNorm uses the statistics of the batch in ``train()`` (SNIPER's
  default); ``norm="frozen"`` makes them all :class:`FrozenBatchNorm2d`.
* ``res5_dilation=2``: layer4 keeps stride 16 (stride 1, its 3 × 3 convs dilated by 2).
* ``deformable_res5=True``: the 3 × 3 conv ``conv2`` of each layer4 block is a
  :class:`sniper_ext.nn.DeformConv2d` with ``offset_groups=4`` and a zero-initialised offset conv.
  Its ``weight`` takes the checkpoint's ``layer4.N.conv2.weight``; its offset conv
  (``layer4.N.conv2.conv_offset.{weight,bias}``) is the only key a torchvision file lacks.

``forward(x)`` returns ``{"res2": stride 4, "res3": 8, "res4": 16, "res5": 16 dilated, else 32}``
(restricted to ``out_features``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..nn import DeformConv2d

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

# depth -> (block kind, blocks per stage)
_ARCH: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_FEATURES = ("res2", "res3", "res4", "res5")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers, no gradients):
    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, in train() as in eval().
    Its state dict has BatchNorm2d's keys (``weight, bias, running_mean, running_var,
    num_batches_tracked``), so it loads the same checkpoints."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints older than PyTorch 0.4.1 (torchvision's original ImageNet files) lack it.
        state_dict.setdefault(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.running_mean is not None and bn.running_var is not None:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _norm(channels: int, frozen: bool) -> nn.Module:
    return FrozenBatchNorm2d(channels) if frozen else nn.BatchNorm2d(channels)


def _conv3x3(cin: int, cout: int, stride: int, dilation: int, deformable: bool, offset_groups: int) -> nn.Module:
    if deformable:
        return DeformConv2d(
            cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, offset_groups=offset_groups, bias=False
        )
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _downsample(cin: int, cout: int, stride: int, frozen_norm: bool) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(cout, frozen_norm))


class BasicBlock(nn.Module):
    """Two 3 × 3 convs (ResNet-18/34). With ``deformable``, only ``conv2`` is deformable."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        frozen_norm: bool = False,
        deformable: bool = False,
        offset_groups: int = 4,
    ):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation, False, offset_groups)
        self.bn1 = _norm(planes, frozen_norm)
        self.conv2 = _conv3x3(planes, planes, 1, dilation, deformable, offset_groups)
        self.bn2 = _norm(planes, frozen_norm)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes, stride, frozen_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1 × 1, 3 × 3 (strided, dilated, optionally deformable), 1 × 1 (ResNet-50/101/152, v1.5)."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        frozen_norm: bool = False,
        deformable: bool = False,
        offset_groups: int = 4,
    ):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _norm(planes, frozen_norm)
        self.conv2 = _conv3x3(planes, planes, stride, dilation, deformable, offset_groups)
        self.bn2 = _norm(planes, frozen_norm)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = _norm(cout, frozen_norm)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride, frozen_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet backbone without pooling and classifier (see the module docstring for options).

    ``out_channels`` and ``strides`` map each of ``res2..res5`` to its channels and stride."""

    def __init__(
        self,
        depth: int = 101,
        *,
        width: float = 1.0,
        norm: str = "train",
        freeze_at: int = 2,
        res5_dilation: int = 2,
        deformable_res5: bool = True,
        offset_groups: int = 4,
        out_features: Sequence[str] = _FEATURES,
    ):
        super().__init__()
        op = "ResNet"
        if depth not in _ARCH:
            raise ValueError(f"{op}: `depth` must be one of {sorted(_ARCH)}, got {depth!r}")
        if not (isinstance(width, (int, float)) and not isinstance(width, bool) and width > 0):
            raise ValueError(f"{op}: `width` must be a positive number, got {width!r}")
        if norm not in ("train", "frozen"):
            raise ValueError(f"{op}: `norm` must be 'train' or 'frozen', got {norm!r}")
        if not (isinstance(freeze_at, int) and 0 <= freeze_at <= 5):
            raise ValueError(
                f"{op}: `freeze_at` must be an int in [0, 5] (0: nothing, 1: the stem, 2: stem and layer1, ...), got {freeze_at!r}"
            )
        if res5_dilation not in (1, 2):
            raise ValueError(f"{op}: `res5_dilation` must be 1 (stride 32) or 2 (stride 16), got {res5_dilation!r}")
        out_features = tuple(out_features)
        if not out_features or any(f not in _FEATURES for f in out_features):
            raise ValueError(f"{op}: `out_features` must be a non-empty subset of {_FEATURES}, got {out_features!r}")
        kind, counts = _ARCH[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        stem = max(1, round(64 * width))
        planes = [max(1, round(p * width)) for p in (64, 128, 256, 512)]
        if deformable_res5 and planes[3] % offset_groups:
            raise ValueError(
                f"{op}: `offset_groups` ({offset_groups}) must divide res5's 3x3 channels ({planes[3]} at width {width})"
            )
        self.depth, self.width, self.norm, self.freeze_at = depth, width, norm, freeze_at
        self.res5_dilation, self.deformable_res5, self.out_features = res5_dilation, bool(deformable_res5), out_features

        frozen_all = norm == "frozen"
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(stem, frozen_all or freeze_at >= 1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        stride_so_far = 4
        for i, (n, p) in enumerate(zip(counts, planes)):
            last = i == 3
            dilation = res5_dilation if last else 1
            stride = 1 if i == 0 or (last and dilation > 1) else 2
            frozen_norm = frozen_all or freeze_at >= i + 2
            blocks = []
            for b in range(n):
                blocks.append(
                    block(
                        cin,
                        p,
                        stride if b == 0 else 1,
                        dilation,
                        frozen_norm,
                        deformable=last and bool(deformable_res5),
                        offset_groups=offset_groups,
                    )
                )
                cin = p * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            stride_so_far *= stride
            self.out_channels[f"res{i + 2}"] = cin
            self.strides[f"res{i + 2}"] = stride_so_far
        self._reset_parameters()
        self._freeze()

    def _reset_parameters(self) -> None:
        # torchvision's init; the offset convs of DeformConv2d keep their zero init.
        offset_convs = {id(m.conv_offset) for m in self.modules() if isinstance(m, DeformConv2d)}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, DeformConv2d)) and id(m) not in offset_convs:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        if self.freeze_at >= 1:
            mods += [self.conv1, self.bn1]
        mods += [getattr(self, f"layer{k - 1}") for k in range(2, self.freeze_at + 1)]
        return mods

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        for m in self._frozen_modules():  # their norms are FrozenBatchNorm2d anyway; keep them in eval
            m.train(False)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"ResNet: `x` must be a tensor of shape [N, 3, H, W], got {shape}")
        out: dict[str, torch.Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        last = max(_FEATURES.index(f) for f in self.out_features)
        for i in range(last + 1):
            x = getattr(self, f"layer{i + 1}")(x)
            name = _FEATURES[i]
            if name in self.out_features:
                out[name] = x
        return out


def resnet18(**kwargs) -> ResNet:
    return ResNet(18, **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """SNIPER's backbone with the defaults: frozen stem + layer1, batch-statistics BN, dilated
    deformable res5."""
    return ResNet(101, **kwargs)


def resnet18_tiny(**kwargs) -> ResNet:
    """ResNet-18 at 1/8 width (stem 8 channels, res5 64): the CPU-test preset."""
    kwargs.setdefault("width", 0.125)
    return ResNet(18, **kwargs)


class LoadResult(NamedTuple):
    """What :func:`load_torchvision_weights` did: ``loaded`` model keys, ``ignored`` file keys
    (the classifier ``fc.*``), ``not_in_file`` model keys left at their initial values (the
    deformable offset convs, and ``num_batches_tracked`` of checkpoints older than PyTorch 0.4.1)."""

    loaded: list[str]
    ignored: list[str]
    not_in_file: list[str]


def _first(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_torchvision_weights(
    model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]
) -> LoadResult:
    """Load a torchvision ResNet state dict (a file saved with ``torch.save``, or the mapping) into
    ``model``, strictly: every key of the file except ``fc.*`` must be in the model with the same
    shape, and every key of the model must be in the file except the deformable offset convs
    (``*.conv_offset.*``) and ``num_batches_tracked``. Raises ``ValueError`` naming the file and the
    first mismatching keys / shapes; loads nothing then."""
    op = "load_torchvision_weights"
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        name = os.fspath(path_or_state_dict)
        try:
            sd = torch.load(name, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - reported with the file's name
            raise ValueError(f"{op}: cannot read {name!r} as a torch checkpoint: {e}") from e
    else:
        name, sd = "<state dict>", path_or_state_dict
    if not isinstance(sd, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise ValueError(f"{op}: {name} is not a state dict (a mapping of str to tensors), got {type(sd).__name__}")
    own = model.state_dict()
    ignored = [k for k in sd if k.startswith("fc.")]
    wanted = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    unexpected = [k for k in wanted if k not in own]
    optional = [k for k in own if ".conv_offset." in k or k.endswith("num_batches_tracked")]
    missing = [k for k in own if k not in wanted and k not in optional]
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in wanted.items()
        if k in own and v.shape != own[k].shape
    ]
    if unexpected or missing or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model keys missing from the file ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} file keys not in the model ({_first(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_first(shapes, 3)})")
        hint = ""
        if isinstance(model, ResNet):
            hint = f" (model: ResNet-{model.depth} at width {model.width})"
        raise ValueError(f"{op}: {name} does not match the model{hint}: " + "; ".join(parts))
    result = model.load_state_dict(dict(wanted), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    not_in_file = [k for k in own if k not in wanted]
    return LoadResult(loaded=list(wanted), ignored=ignored, not_in_file=not_in_file)
