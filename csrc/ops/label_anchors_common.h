// Argument checks and the schema entry point of sniper::label_anchors (LabelAnchorsEntries),
// shared by the CPU and CUDA registrations; the backends' kernel:
//   label_anchors(anchors [A, 4], gt_boxes [B, G, 4], gt_state [B, G] int8, canvas [B, 2] float64,
//                 thresholds, labels [B, A] int8, matched [B, A] int64)
// with A, B > 0 and contiguous inputs; it writes every label and match.
#pragma once

#include <sniper/stable_utils.h>

#include "op_entry.h"

namespace sniper {

inline void check_label_anchors_args(const Tensor& anchors, const Tensor& gt_boxes, const Tensor& gt_state,
                                     const Tensor& canvas_wh, double pos_iou, double neg_iou, double invalid_iou,
                                     double allowed_border) {
  const char* op = "label_anchors";
  check_defined(gt_boxes, op, "gt_boxes");
  check_defined(gt_state, op, "gt_state");
  check_defined(canvas_wh, op, "canvas_wh");
  check_boxes(anchors, op, "anchors");
  STD_TORCH_CHECK(gt_boxes.dim() == 3 && gt_boxes.size(2) == 4, op,
                  ": `gt_boxes` must have shape [B, G, 4] (GT padded per chip)");
  const int64_t b = gt_boxes.size(0), g = gt_boxes.size(1);
  STD_TORCH_CHECK(gt_boxes.scalar_type() == anchors.scalar_type(), op,
                  ": `gt_boxes` must have the dtype of `anchors` (", dtype_name(anchors.scalar_type()), "), got ",
                  dtype_name(gt_boxes.scalar_type()));
  STD_TORCH_CHECK(gt_state.dim() == 2 && gt_state.size(0) == b && gt_state.size(1) == g, op,
                  ": `gt_state` must have shape [", b, ", ", g, "] like gt_boxes");
  STD_TORCH_CHECK(gt_state.scalar_type() == ScalarType::Char, op,
                  ": `gt_state` must be int8 (1 valid, 0 invalid, -1 padding), got ",
                  dtype_name(gt_state.scalar_type()));
  STD_TORCH_CHECK(canvas_wh.dim() == 2 && canvas_wh.size(0) == b && canvas_wh.size(1) == 2, op,
                  ": `canvas_wh` must have shape [", b, ", 2] (one chip size per chip)");
  for (const Tensor* t : {&gt_boxes, &gt_state, &canvas_wh}) {
    check_same_device(anchors, *t, op, "anchors",
                      t == &gt_boxes   ? "gt_boxes"
                      : t == &gt_state ? "gt_state"
                                       : "canvas_wh");
  }
  STD_TORCH_CHECK(0 <= neg_iou && neg_iou <= pos_iou, op, ": need 0 <= neg_iou <= pos_iou, got neg_iou ", neg_iou,
                  ", pos_iou ", pos_iou);
  check_threshold(invalid_iou, op, "invalid_iou");
  check_threshold(allowed_border, op, "allowed_border");
  check_numel({b, anchors.size(0)}, op, "the labels");
}

// The IoU thresholds and the border of label_anchors (method §5).
struct AnchorThresholds {
  double pos_iou, neg_iou, invalid_iou, allowed_border;
};

template <typename B>
struct LabelAnchorsEntries {
  static std::tuple<Tensor, Tensor> label_anchors(Tensor anchors, Tensor gt_boxes, Tensor gt_state, Tensor canvas_wh,
                                                  double pos_iou, double neg_iou, double invalid_iou,
                                                  double allowed_border) {
    const char* op = "label_anchors";
    check_label_anchors_args(anchors, gt_boxes, gt_state, canvas_wh, pos_iou, neg_iou, invalid_iou, allowed_border);
    typename B::Guard guard(anchors);
    const int64_t chips = gt_boxes.size(0), a = anchors.size(0);
    Tensor labels = new_output(anchors, {chips, a}, ScalarType::Char, op, "the labels");
    Tensor matched = new_output(anchors, {chips, a}, ScalarType::Long, op, "the matches");
    if (chips == 0 || a == 0) return std::make_tuple(labels, matched);
    B::label_anchors(torch::stable::contiguous(anchors), torch::stable::contiguous(gt_boxes),
                     torch::stable::contiguous(gt_state), contiguous_as(canvas_wh, ScalarType::Double),
                     AnchorThresholds{pos_iou, neg_iou, invalid_iou, allowed_border}, labels, matched);
    return std::make_tuple(labels, matched);
  }
};

template <typename B>
void register_label_anchors(OpLibrary& m) {
  m.impl("label_anchors", TORCH_BOX(&LabelAnchorsEntries<B>::label_anchors));
}

}  // namespace sniper
