// Argument checks and the schema entry points of sniper::nms and sniper::batched_nms (NmsEntries),
// shared by the CPU and CUDA registrations; the backends' kernel:
//   nms(boxes [n, 4], scores [n], ids, iou_threshold, keep [n]) -> count
// with n > 0, contiguous boxes and scores of one floating dtype, ids nullopt (one group) or
// contiguous int64 [n]; it writes the kept indices in output order to keep[0, count).
// The fixed-capacity variants' kernel:
//   nms_fixed(boxes [n, 4], scores [n], ids, num_groups, iou_threshold, capacity, keep [G, cap], count [G])
// with keep filled with -1 and count with 0 by the entry point and n > 0, G > 0, cap > 0; ids
// nullopt puts every box in group 0, else boxes with ids outside [0, G) take no part. It writes
// each group's first min(K_g, cap) kept indices (in output order) to its row and K_g clamped to
// cap to count[g], without reading device data on the host (CUDA: no synchronisation).
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

// The outputs of a fixed-capacity op: [groups, capacity] rows of -1 (and zeroed scores) and zero
// counts. Checks the sizes; nothing is read from the inputs' data.
struct FixedOutputs {
  Tensor keep, scores, count;
  FixedOutputs(const Tensor& like, int64_t groups, int64_t capacity, bool with_scores, const char* op) {
    STD_TORCH_CHECK(groups >= 0, op, ": `num_groups` must be >= 0, got ", groups);
    STD_TORCH_CHECK(capacity >= 0, op, ": `capacity` must be >= 0, got ", capacity);
    keep = new_output(like, {groups, capacity}, ScalarType::Long, op, "the kept indices");
    torch::stable::fill_(keep, -1.0);
    if (with_scores) {
      scores = new_output(like, {groups, capacity}, like.scalar_type(), op, "the kept scores");
      torch::stable::fill_(scores, 0.0);
    }
    count = new_output(like, {groups}, ScalarType::Long, op, "the counts");
    torch::stable::fill_(count, 0.0);
  }
  // True when a kernel has work: boxes, groups and room.
  static bool needed(int64_t n, int64_t groups, int64_t capacity) { return n > 0 && groups > 0 && capacity > 0; }
};

template <typename B>
struct NmsFixedEntries {
  static std::tuple<Tensor, Tensor> nms_fixed(Tensor boxes, Tensor scores, double iou_threshold, int64_t capacity) {
    auto [keep, count] = run(boxes, scores, std::nullopt, iou_threshold, 1, capacity, "nms_fixed");
    return std::make_tuple(torch::stable::select(keep, 0, 0), torch::stable::select(count, 0, 0));
  }
  static std::tuple<Tensor, Tensor> batched_nms_fixed(Tensor boxes, Tensor scores, Tensor idxs, double iou_threshold,
                                                      int64_t num_groups, int64_t capacity) {
    return run(boxes, scores, idxs, iou_threshold, num_groups, capacity, "batched_nms_fixed");
  }

 private:
  static std::tuple<Tensor, Tensor> run(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& idxs,
                                        double iou_threshold, int64_t groups, int64_t capacity, const char* op) {
    const std::optional<Tensor> ids = checked_group_ids(boxes, scores, idxs, op);
    check_threshold(iou_threshold, op, "iou_threshold");
    typename B::Guard guard(boxes);
    FixedOutputs out(boxes, groups, capacity, false, op);
    if (FixedOutputs::needed(boxes.size(0), groups, capacity)) {
      B::nms_fixed(torch::stable::contiguous(boxes), torch::stable::contiguous(scores), ids, groups, iou_threshold,
                   capacity, out.keep, out.count);
    }
    return std::make_tuple(out.keep, out.count);
  }
};

template <typename B>
void register_nms(OpLibrary& m) {
  m.impl("nms", TORCH_BOX(&NmsEntries<B>::nms));
  m.impl("batched_nms", TORCH_BOX(&NmsEntries<B>::batched_nms));
  m.impl("nms_fixed", TORCH_BOX(&NmsFixedEntries<B>::nms_fixed));
  m.impl("batched_nms_fixed", TORCH_BOX(&NmsFixedEntries<B>::batched_nms_fixed));
}

}  // namespace sniper
