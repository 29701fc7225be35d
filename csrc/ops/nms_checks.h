// Argument checks shared by the CPU and CUDA registrations of the NMS family.
#pragma once

#include <sniper/nms_rules.h>
#include <sniper/stable_utils.h>

namespace sniper {

inline void check_scored_boxes(const Tensor& boxes, const Tensor& scores,
                               const char* op) {
  check_boxes(boxes, op, "boxes");
  check_1d(scores, boxes.size(0), op, "scores");
  STD_TORCH_CHECK(scores.scalar_type() == boxes.scalar_type(), op,
                  ": `scores` must have the dtype of `boxes` (",
                  dtype_name(boxes.scalar_type()), "), got ",
                  dtype_name(scores.scalar_type()));
  check_same_device(boxes, scores, op, "boxes", "scores");
}

// Checks boxes/scores (and idxs when given); returns the group ids as
// contiguous int64, or nullopt for a single group.
inline std::optional<Tensor> checked_group_ids(const Tensor& boxes, const Tensor& scores,
                                               const std::optional<Tensor>& idxs,
                                               const char* op) {
  check_scored_boxes(boxes, scores, op);
  if (!idxs.has_value()) return std::nullopt;
  check_same_device(boxes, *idxs, op, "boxes", "idxs");
  return group_ids(*idxs, boxes.size(0), op);
}

inline void check_soft_nms_args(int64_t method, double sigma,
                                double iou_threshold, double score_threshold) {
  const char* op = "soft_nms";
  STD_TORCH_CHECK(method == kSoftNmsLinear || method == kSoftNmsGaussian ||
                      method == kSoftNmsHard,
                  op, ": `method` must be 0 (linear), 1 (gaussian) or 2 (hard), got ",
                  method);
  STD_TORCH_CHECK(method != kSoftNmsGaussian || sigma > 0.0, op,
                  ": `sigma` must be > 0, got ", sigma);
  check_threshold(iou_threshold, op, "iou_threshold");
  check_threshold(score_threshold, op, "score_threshold");
}

}  // namespace sniper
