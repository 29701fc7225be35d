"""The detector as one static-shape program (method §9 end to end): every inference resolution's
backbone, RPN, proposals and R-CNN head, the valid-range filtering and the per-class Soft-NMS merge,
with fixed-capacity outputs and no host synchronisation, so that ``torch.export`` takes it whole
(dynamic batch and image sizes) and AOTInductor compiles it.

It computes what :class:`~sniper_ext.inference.MultiScaleInference` computes on the same padded
batches, in the same order (so ties break alike): the RPN's proposals through
``sniper::batched_nms_fixed`` (one group per image, capacity ``proposals_per_scale``) instead of a
data-dependent ``batched_nms``; the (box, class) candidates of every scale through
``sniper::soft_nms_fixed`` (one group per image x class, capacity ``detections_per_image``)
instead of ``soft_nms``; the per-image top N by a sort of fixed size. Padded slots carry the
index -1 and are masked, never read back on the host.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import InferenceConfig
from ..inference.merge import in_valid_range
from ..modeling.anchors import anchor_shape, grid_anchors
from ..modeling.box_coder import _decode
from ..modeling.proposals import proposal_candidates
from ..ops.nms import SOFT_NMS_METHODS

__all__ = ["ExportableDetector", "PRE_NMS_TOP_N", "input_names", "output_names"]

#: RPN boxes per image before NMS: ``SniperRCNN.detect``'s default, used by every inference command
PRE_NMS_TOP_N = 6000


def input_names(num_scales: int) -> list:
    """The program's flat inputs: ``orig_wh`` then ``images_r``, ``image_wh_r``, ``scale_r`` per
    resolution r."""
    names = ["orig_wh"]
    for r in range(num_scales):
        names += [f"images_{r}", f"image_wh_{r}", f"scale_{r}"]
    return names


def output_names() -> list:
    return ["boxes", "scores", "labels", "count"]


class ExportableDetector(nn.Module):
    """A trained :class:`~sniper_ext.modeling.SniperRCNN` at the resolutions of ``config`` (an
    :class:`~sniper_ext.config.InferenceConfig`; one resolution with range [0, inf) is
    single-scale inference), as one module with tensor inputs and fixed-size outputs.

    ``forward(orig_wh, images_0, image_wh_0, scale_0, images_1, ...)``:

    * ``orig_wh`` float32 ``[B, 2]``: each image's original (width, height);
    * per resolution r: ``images_r`` uint8 ``[B, 3, H_r, W_r]`` RGB, each image resized by
      ``scale_r`` (float32 ``[B]``) to ``image_wh_r`` (float32 ``[B, 2]``, its content size) and
      padded (bottom/right) to the batch's size, a multiple of ``config.size_divisibility``.

    Returns ``(boxes [B, D, 4] float32 in original pixels, scores [B, D], labels [B, D] int64
    1..C, count [B] int64)`` with D = ``config.detections_per_image``: image b's detections are
    the first ``count[b]`` rows, by score descending; the rest are zeros (labels -1).
    """

    def __init__(self, model, config: InferenceConfig, *, pre_nms_top_n: int = PRE_NMS_TOP_N):
        super().__init__()
        if config.nms_method not in SOFT_NMS_METHODS:
            raise ValueError(f"ExportableDetector: unknown nms_method {config.nms_method!r}")
        if len(config.resolutions) != len(config.valid_ranges) or not config.resolutions:
            raise ValueError("ExportableDetector: one valid range per resolution, at least one resolution")
        self.model = model
        self.config = config
        c = model.cfg
        self.num_scales = len(config.resolutions)
        self.num_classes = int(model.num_classes)
        self.pre_nms_top_n = int(pre_nms_top_n)
        self.register_buffer(
            "anchor_shape", anchor_shape(c.anchor_base, c.anchor_ratios, c.anchor_scales), persistent=False
        )

    # -- one resolution ---------------------------------------------------------------------------

    def proposals(self, feats, obj, deltas, wh):
        """``filter_proposals`` of ``SniperRCNN.detect`` with a fixed capacity: ``(boxes [B, P, 4],
        valid [B, P])``, each image's proposals by score descending, P = ``proposals_per_scale``;
        invalid slots hold image 0's first box."""
        c = self.model.cfg
        b = feats.shape[0]
        shape = self.anchor_shape
        assert isinstance(shape, torch.Tensor)
        anchors = grid_anchors(shape, feats.shape[2], feats.shape[3], float(c.anchor_stride)).to(torch.float32)
        unbounded = torch.tensor([[0.0, math.inf]], device=feats.device).expand(b, 2)  # as detect's
        boxes, scores, keep = proposal_candidates(
            anchors,
            obj.float(),
            deltas.float(),
            wh,
            unbounded,
            float(c.proposal_min_size),
            self.pre_nms_top_n,
            (1.0, 1.0, 1.0, 1.0),
        )
        chip = torch.arange(b, device=feats.device)[:, None].expand_as(keep)
        idxs = torch.where(keep, chip, torch.full_like(chip, -1)).reshape(-1)
        flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
        kept, _ = torch.ops.sniper.batched_nms_fixed(
            flat_boxes, flat_scores, idxs, float(c.proposal_nms_iou), b, int(self.config.proposals_per_scale)
        )
        return flat_boxes[kept.clamp(min=0)], kept >= 0

    def scale_candidates(self, r: int, images, image_wh, scale, orig_wh):
        """Resolution r's (box, class) candidates: ``(boxes [B, P*C, 4] original pixels, scores
        [B, P*C], labels [B, P*C], ok [B, P*C])`` in the order of ``MultiScaleInference``
        (proposal by score, then class)."""
        m = self.model
        wh = image_wh.to(torch.float32)
        feats = m.features(images)
        obj, deltas = m.rpn(feats)
        props, valid = self.proposals(feats, obj, deltas, wh)
        b, p = props.shape[:2]
        chip = torch.arange(b, device=props.device)[:, None].expand(b, p).reshape(-1)
        flat = props.reshape(-1, 4)
        logits, box = m.rcnn(feats, torch.cat([chip[:, None].to(flat.dtype), flat], dim=1))
        probs = logits.float().softmax(dim=1)
        boxes = _decode(flat, box.float(), m.box_weights, clip_wh=wh[chip])
        boxes = boxes / scale.to(torch.float32)[chip][:, None]
        lim = orig_wh.to(torch.float32)[chip].repeat(1, 2)
        boxes = torch.minimum(boxes.clamp(min=0), lim)
        lo, hi = self.config.valid_ranges[r]
        in_range = in_valid_range(boxes, lo, hi) & valid.reshape(-1)
        cls = probs[:, 1:]  # [B*P, C]
        ncls = cls.shape[1]
        ok = in_range[:, None] & (cls > float(self.config.score_threshold))
        labels = torch.arange(1, ncls + 1, device=cls.device)[None].expand(b * p, ncls)
        return (
            boxes[:, None, :].expand(b * p, ncls, 4).reshape(b, p * ncls, 4),
            cls.reshape(b, p * ncls),
            labels.reshape(b, p * ncls),
            ok.reshape(b, p * ncls),
        )

    # -- the merge ---------------------------------------------------------------------------------

    def merge(self, boxes, scores, labels, ok):
        """``merge_detections`` with fixed capacity: Soft-NMS per image x class over all scales'
        candidates ``[B, M, ...]``, then each image's top D by decayed score (ties: the earlier
        candidate)."""
        icfg = self.config
        b, mcount = scores.shape
        ncls = self.num_classes
        dcap = int(icfg.detections_per_image)
        image = torch.arange(b, device=scores.device)[:, None].expand(b, mcount)
        groups = torch.where(ok, image * (ncls + 1) + labels, torch.full_like(labels, -1)).reshape(-1)
        flat_boxes, flat_labels = boxes.reshape(-1, 4), labels.reshape(-1)
        keep, kept_scores, _ = torch.ops.sniper.soft_nms_fixed(
            flat_boxes,
            scores.reshape(-1),
            groups,
            SOFT_NMS_METHODS[icfg.nms_method],
            float(icfg.soft_nms_sigma),
            float(icfg.nms_iou),
            float(icfg.score_threshold),
            b * (ncls + 1),
            dcap,
        )
        keep = keep.reshape(b, (ncls + 1) * dcap)
        kept_scores = kept_scores.reshape(b, (ncls + 1) * dcap)
        valid = keep >= 0
        # score descending, ties to the lower input row: sort by row, then stably by score
        big = torch.full_like(keep, torch.iinfo(torch.int64).max)
        by_row = torch.sort(torch.where(valid, keep, big), dim=1, stable=True).indices
        s = torch.where(valid, kept_scores, torch.full_like(kept_scores, -math.inf)).gather(1, by_row)
        by_score = torch.sort(s, dim=1, descending=True, stable=True).indices
        order = by_row.gather(1, by_score)[:, :dcap]
        sel, sel_scores, sel_valid = keep.gather(1, order), kept_scores.gather(1, order), valid.gather(1, order)
        safe = sel.clamp(min=0)
        out_boxes = torch.where(sel_valid[..., None], flat_boxes[safe], torch.zeros_like(flat_boxes[safe]))
        out_scores = torch.where(sel_valid, sel_scores, torch.zeros_like(sel_scores))
        out_labels = torch.where(sel_valid, flat_labels[safe], torch.full_like(sel, -1))
        return out_boxes, out_scores, out_labels, sel_valid.sum(dim=1)

    def forward(self, orig_wh, *per_scale):
        if len(per_scale) != 3 * self.num_scales:
            raise ValueError(
                f"ExportableDetector: {3 * self.num_scales} per-resolution inputs expected "
                f"(images, image_wh, scale for each of {self.num_scales}), got {len(per_scale)}"
            )
        parts = [
            self.scale_candidates(r, per_scale[3 * r], per_scale[3 * r + 1], per_scale[3 * r + 2], orig_wh)
            for r in range(self.num_scales)
        ]
        boxes, scores, labels, ok = (torch.cat([p[j] for p in parts], dim=1) for j in range(4))
        return self.merge(boxes, scores, labels, ok)
