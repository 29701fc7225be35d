"""SNIPER's Faster R-CNN (method §7): a ResNet with dilated deformable res5, concat(res4, res5)
features at stride 16, the RPN and the R-CNN head; training losses batched over chips, and
detection over a batch of images."""

from __future__ import annotations

import torch
from torch import nn

from .anchors import make_anchors
from .box_coder import _decode
from .focus import FocusHead, focus_labels, focus_losses
from .proposals import filter_proposals, proposal_targets
from .resnet import ResNet
from .roi_heads import RCNNHead, rcnn_losses
from .rpn import RPNHead, rpn_losses

__all__ = ["SniperRCNN", "build_model"]

_BATCH_KEYS = ("images", "gt_boxes", "gt_labels", "gt_state", "canvas_wh", "valid_range", "seed")


class SniperRCNN(nn.Module):
    """The detector. ``forward(batch)`` returns the training losses of a batch of chips (the dict
    of ``sniper_ext.data.collate_chips``); ``detect(images, image_wh)`` runs it on images."""

    def __init__(self, cfg, pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(
            cfg.depth,
            width=cfg.width,
            norm=cfg.norm,
            freeze_at=cfg.freeze_at,
            res5_dilation=2,
            deformable_res5=cfg.deformable_res5,
            offset_groups=cfg.offset_groups,
            out_features=("res4", "res5"),
        )
        channels = self.backbone.out_channels["res4"] + self.backbone.out_channels["res5"]
        self.num_anchors = len(cfg.anchor_ratios) * len(cfg.anchor_scales)
        self.rpn = RPNHead(channels, cfg.rpn_channels, self.num_anchors)
        self.rcnn = RCNNHead(
            channels,
            cfg.num_classes,
            reduce_channels=cfg.rcnn_reduce_channels,
            pooler=cfg.roi_pooler,
            output_size=cfg.roi_output_size,
            sampling_ratio=cfg.roi_sampling_ratio,
            spatial_scale=1.0 / cfg.anchor_stride,
            fc_channels=cfg.fc_channels,
        )
        #: AutoFocus's FocusPixel head (method §11), with ``cfg.focus_head``
        self.focus = FocusHead(channels, cfg.focus_channels) if getattr(cfg, "focus_head", False) else None
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1) * 255, persistent=False)
        self._anchor_cache: dict = {}
        self.box_weights = tuple(1.0 / s for s in cfg.rcnn_bbox_stds)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def anchors(self, fh: int, fw: int, device) -> torch.Tensor:
        key = (fh, fw, str(device))
        if key not in self._anchor_cache:
            c = self.cfg
            self._anchor_cache[key] = make_anchors(
                (fh, fw), c.anchor_stride, c.anchor_base, c.anchor_ratios, c.anchor_scales, device=device
            )
        return self._anchor_cache[key]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) ``[B, 3, H, W]`` RGB -> concat(res4, res5) ``[B, C4+C5, H/16, W/16]``."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"SniperRCNN: `images` must be a tensor [B, 3, H, W], got {got}")
        mean, std = self.pixel_mean, self.pixel_std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        x = (images.float() - mean) / std
        f = self.backbone(x)
        return torch.cat([f["res4"], f["res5"]], dim=1)

    # -- training ---------------------------------------------------------------------------

    def targets(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor, batch: dict):
        """The training step between the heads, batched over the chips (one call of each target
        function, no per-chip loop): the RPN losses of the heads' outputs (``objectness``
        ``[B, A]``, ``deltas`` ``[B, A, 4]`` over ``anchors``), and the R-CNN RoIs of the filtered
        proposals with their chip, class label and regression target. Returns ``(rpn losses,
        rois [R, 4], roi_chip [R], labels [R], targets [R, 4])``."""
        c = self.cfg
        losses = rpn_losses(anchors, objectness, deltas, batch, c)
        canvas = batch["canvas_wh"].float()
        valid_range = batch["valid_range"].float()
        props, _, chip = filter_proposals(
            anchors,
            objectness.detach().float(),
            deltas.detach().float(),
            canvas,
            valid_range,
            min_size=c.proposal_min_size,
            nms_iou=c.proposal_nms_iou,
            post_nms_top_n=c.proposal_post_nms_top_n,
            pre_nms_top_n=c.proposal_pre_nms_top_n,
        )
        rois, roi_chip, labels, targets = proposal_targets(
            props,
            chip,
            batch["gt_boxes"].float(),
            batch["gt_labels"],
            batch["gt_state"],
            valid_range,
            fg_iou=c.rcnn_fg_iou,
            weights=self.box_weights,
        )
        return losses, rois, roi_chip, labels, targets

    def forward(self, batch: dict, rpn_only: bool = False) -> dict[str, torch.Tensor]:
        """Losses ``rpn_cls``, ``rpn_box`` (and ``rcnn_cls``, ``rcnn_box`` unless ``rpn_only``;
        ``focus_cls`` with the FocusPixel head, in both stages) and their sum ``loss``, plus detached
        counters (``num_rois``, ``num_fg``) and the FocusPixel accuracies (``acc_focus_pos``,
        ``acc_focus_neg``)."""
        missing = [k for k in _BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"SniperRCNN: the batch lacks {', '.join(missing)}")
        feats = self.features(batch["images"])
        obj, deltas = self.rpn(feats)
        anchors = self.anchors(feats.shape[2], feats.shape[3], feats.device)
        if rpn_only:
            losses = rpn_losses(anchors, obj, deltas, batch, self.cfg)
        else:
            losses, rois, roi_chip, labels, targets = self.targets(anchors, obj, deltas, batch)
            logits, box = self.rcnn(feats, torch.cat([roi_chip[:, None].to(rois.dtype), rois], dim=1))
            losses.update(rcnn_losses(logits, box, roi_chip, labels, targets, feats.shape[0]))
            losses["num_rois"] = torch.tensor(float(len(labels)))
            losses["num_fg"] = (labels > 0).sum().float().cpu()
        if self.focus is not None:
            c = self.cfg
            flabels = focus_labels(
                batch["gt_boxes"],
                batch["gt_state"],
                batch["canvas_wh"],
                (feats.shape[2], feats.shape[3]),
                stride=c.anchor_stride,
                focus_range=c.focus_range,
                ignore_below=c.focus_ignore_below,
            )
            f = focus_losses(self.focus(feats), flabels)
            f["focus_cls"] = f["focus_cls"] * c.focus_loss_weight
            losses.update(f)
        parts = [v for k, v in losses.items() if k.startswith(("rpn_", "rcnn_", "focus_"))]
        losses["loss"] = torch.stack(parts).sum()
        return losses

    # -- inference ----------------------------------------------------------------------------

    @torch.no_grad()
    def detect(
        self,
        images: torch.Tensor,
        image_wh: torch.Tensor,
        *,
        proposals_per_image: int = 300,
        pre_nms_top_n: int | None = 6000,
        rpn_only: bool = False,
        focus: bool = False,
    ) -> list[dict]:
        """Runs on a padded batch; ``image_wh [B, 2]`` is each image's content size in the batch's
        pixels. Per image: ``{"proposals" [P, 4], "objectness" [P]}`` with ``rpn_only``, else
        ``{"boxes" [R, 4], "scores" [R, C+1]}`` (softmax; column 0 background), boxes clipped to
        the image, in the batch's pixels. With ``focus`` (needs the FocusPixel head) each also has
        ``"focus"``: the FocusPixel probability ``[H/16, W/16]`` over the whole padded batch grid."""
        c = self.cfg
        if focus and self.focus is None:
            raise ValueError("SniperRCNN.detect: focus=True needs a model with the FocusPixel head (model.focus_head)")
        feats = self.features(images)
        fmap = FocusHead.probability(self.focus(feats)) if focus and self.focus is not None else None
        obj, deltas = self.rpn(feats)
        b = feats.shape[0]
        anchors = self.anchors(feats.shape[2], feats.shape[3], feats.device)
        wh = image_wh.to(device=feats.device, dtype=torch.float32)
        unbounded = torch.tensor([[0.0, float("inf")]], device=feats.device).expand(b, 2)
        props, scores, chip = filter_proposals(
            anchors,
            obj.float(),
            deltas.float(),
            wh,
            unbounded,
            min_size=c.proposal_min_size,
            nms_iou=c.proposal_nms_iou,
            post_nms_top_n=proposals_per_image,
            pre_nms_top_n=pre_nms_top_n,
        )
        bounds = torch.searchsorted(chip, torch.arange(b + 1, device=chip.device)).tolist()
        if rpn_only:
            out = [
                {"proposals": props[bounds[i] : bounds[i + 1]], "objectness": scores[bounds[i] : bounds[i + 1]]}
                for i in range(b)
            ]
        else:
            logits, box = self.rcnn(feats, torch.cat([chip[:, None].to(props.dtype), props], dim=1))
            probs = logits.float().softmax(dim=1)
            boxes = _decode(props, box.float(), self.box_weights, clip_wh=wh[chip])
            out = [
                {"boxes": boxes[bounds[i] : bounds[i + 1]], "scores": probs[bounds[i] : bounds[i + 1]]}
                for i in range(b)
            ]
        if fmap is not None:
            for i in range(b):
                out[i]["focus"] = fmap[i]
        return out


def build_model(cfg, data_cfg=None) -> SniperRCNN:
    """The detector of a :class:`~sniper_ext.config.TrainConfig`'s ``model`` section."""
    if data_cfg is None:
        return SniperRCNN(cfg)
    return SniperRCNN(cfg, data_cfg.pixel_mean, data_cfg.pixel_std)
