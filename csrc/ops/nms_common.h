// Argument checks and schema entry points (NmsEntries, SoftNmsEntries) shared by the CPU and CUDA registrations of the
// NMS family.
#pragma once

#include <sniper/nms_rules.h>
#include <sniper/stable_utils.h>

namespace sniper {

inline void check_scored_boxes(const Tensor& boxes, const Tensor& scores, const char* op) {
  check_boxes(boxes, op, "boxes");
  check_1d(scores, boxes.size(0), op, "scores");
  STD_TORCH_CHECK(scores.scalar_type() == boxes.scalar_type(), op, ": `scores` must have the dtype of `boxes` (",
                  dtype_name(boxes.scalar_type()), "), got ", dtype_name(scores.scalar_type()));
  check_same_device(boxes, scores, op, "boxes", "scores");
}

// Checks boxes/scores (and idxs when given); returns the group ids as
// contiguous int64, or nullopt for a single group.
inline std::optional<Tensor> checked_group_ids(const Tensor& boxes, const Tensor& scores,
                                               const std::optional<Tensor>& idxs, const char* op) {
  check_scored_boxes(boxes, scores, op);
  if (!idxs.has_value()) return std::nullopt;
  check_same_device(boxes, *idxs, op, "boxes", "idxs");
  return group_ids(*idxs, boxes.size(0), op);
}

inline void check_soft_nms_args(int64_t method, double sigma, double iou_threshold, double score_threshold) {
  const char* op = "soft_nms";
  STD_TORCH_CHECK(method == kSoftNmsLinear || method == kSoftNmsGaussian || method == kSoftNmsHard, op,
                  ": `method` must be 0 (linear), 1 (gaussian) or 2 (hard), got ", method);
  STD_TORCH_CHECK(method != kSoftNmsGaussian || sigma > 0.0, op, ": `sigma` must be > 0, got ", sigma);
  check_threshold(iou_threshold, op, "iou_threshold");
  check_threshold(score_threshold, op, "score_threshold");
}

// The schema entry points of nms and batched_nms, defined once over a
// backend's
//   Nms(boxes, scores, ids, iou_threshold, op) -> keep
// and of soft_nms over a backend's
//   SoftNms(boxes, scores, ids, spec) -> (keep, kept_scores)
// so that CPU and CUDA check and map the schema arguments identically. The
// backends get checked arguments and n > 0: boxes [n, 4] and scores [n]
// contiguous, ids nullopt (one group) or contiguous int64 [n].
template <auto Nms>
struct NmsEntries {
  static Tensor nms(Tensor boxes, Tensor scores, double iou_threshold) {
    return run(boxes, scores, std::nullopt, iou_threshold, "nms");
  }
  static Tensor batched_nms(Tensor boxes, Tensor scores, Tensor idxs, double iou_threshold) {
    return run(boxes, scores, idxs, iou_threshold, "batched_nms");
  }

 private:
  static Tensor run(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& idxs, double iou_threshold,
                    const char* op) {
    const std::optional<Tensor> ids = checked_group_ids(boxes, scores, idxs, op);
    check_threshold(iou_threshold, op, "iou_threshold");
    if (boxes.size(0) == 0) return new_empty(boxes, {0}, ScalarType::Long);
    return Nms(torch::stable::contiguous(boxes), torch::stable::contiguous(scores), ids, iou_threshold, op);
  }
};

template <auto SoftNms>
struct SoftNmsEntries {
  static std::tuple<Tensor, Tensor> soft_nms(Tensor boxes, Tensor scores, std::optional<Tensor> idxs, int64_t method,
                                             double sigma, double iou_threshold, double score_threshold) {
    const std::optional<Tensor> ids = checked_group_ids(boxes, scores, idxs, "soft_nms");
    check_soft_nms_args(method, sigma, iou_threshold, score_threshold);
    if (boxes.size(0) == 0) {
      return std::make_tuple(new_empty(boxes, {0}, ScalarType::Long), new_empty(boxes, {0}, boxes.scalar_type()));
    }
    return SoftNms(torch::stable::contiguous(boxes), torch::stable::contiguous(scores), ids,
                   SoftNmsSpec{method, sigma, iou_threshold, score_threshold});
  }
};

}  // namespace sniper
