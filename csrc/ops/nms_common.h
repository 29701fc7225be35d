// Argument checks and the schema entry points of sniper::nms and sniper::batched_nms (NmsEntries),
// shared by the CPU and CUDA registrations; the backends' kernel:
//   nms(boxes [n, 4], scores [n], ids, iou_threshold, keep [n]) -> count
// with n > 0, contiguous boxes and scores of one floating dtype, ids nullopt (one group) or
// contiguous int64 [n]; it writes the kept indices in output order to keep[0, count).
#pragma once

#include <sniper/nms_rules.h>
#include <sniper/stable_utils.h>

#include "op_entry.h"

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

template <typename B>
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
    typename B::Guard guard(boxes);
    const int64_t n = boxes.size(0);
    Tensor keep = new_empty(boxes, {n}, ScalarType::Long);
    if (n == 0) return keep;
    const int64_t count =
        B::nms(torch::stable::contiguous(boxes), torch::stable::contiguous(scores), ids, iou_threshold, keep);
    return first_n(keep, count);
  }
};

template <typename B>
void register_nms(OpLibrary& m) {
  m.impl("nms", TORCH_BOX(&NmsEntries<B>::nms));
  m.impl("batched_nms", TORCH_BOX(&NmsEntries<B>::batched_nms));
}

}  // namespace sniper
