// Argument checks and the schema entry point of sniper::soft_nms (SoftNmsEntries), shared by the
// CPU and CUDA registrations; the backends' kernel:
//   soft_nms(boxes [n, 4], scores [n], ids, spec, keep [n], kept_scores [n]) -> count
// with the arguments of the nms kernel (nms_common.h); it writes the kept indices and their
// decayed scores in output order to keep[0, count) and kept_scores[0, count).
// The fixed-capacity variant's kernel:
//   soft_nms_fixed(boxes, scores, ids [n], num_groups, spec, capacity, keep [G, cap], kept_scores [G, cap], count [G])
// with the conventions of nms_fixed (nms_common.h): rows prefilled (-1, 0, 0), ids outside
// [0, G) take no part, no host synchronisation.
#pragma once

#include <sniper/nms_rules.h>
#include <sniper/stable_utils.h>

#include "nms_common.h"
#include "op_entry.h"

namespace sniper {

inline void check_soft_nms_args(int64_t method, double sigma, double iou_threshold, double score_threshold,
                                const char* op = "soft_nms") {
  STD_TORCH_CHECK(method == kSoftNmsLinear || method == kSoftNmsGaussian || method == kSoftNmsHard, op,
                  ": `method` must be 0 (linear), 1 (gaussian) or 2 (hard), got ", method);
  STD_TORCH_CHECK(method != kSoftNmsGaussian || sigma > 0.0, op, ": `sigma` must be > 0, got ", sigma);
  check_threshold(iou_threshold, op, "iou_threshold");
  check_threshold(score_threshold, op, "score_threshold");
}

template <typename B>
struct SoftNmsEntries {
  static std::tuple<Tensor, Tensor> soft_nms(Tensor boxes, Tensor scores, std::optional<Tensor> idxs, int64_t method,
                                             double sigma, double iou_threshold, double score_threshold) {
    const std::optional<Tensor> ids = checked_group_ids(boxes, scores, idxs, "soft_nms");
    check_soft_nms_args(method, sigma, iou_threshold, score_threshold);
    typename B::Guard guard(boxes);
    const int64_t n = boxes.size(0);
    Tensor keep = new_empty(boxes, {n}, ScalarType::Long);
    Tensor kept_scores = new_empty(boxes, {n}, boxes.scalar_type());
    if (n == 0) return std::make_tuple(keep, kept_scores);
    const int64_t count = B::soft_nms(torch::stable::contiguous(boxes), torch::stable::contiguous(scores), ids,
                                      SoftNmsSpec{method, sigma, iou_threshold, score_threshold}, keep, kept_scores);
    return std::make_tuple(first_n(keep, count), first_n(kept_scores, count));
  }
};

template <typename B>
struct SoftNmsFixedEntries {
  static std::tuple<Tensor, Tensor, Tensor> soft_nms_fixed(Tensor boxes, Tensor scores, Tensor idxs, int64_t method,
                                                           double sigma, double iou_threshold, double score_threshold,
                                                           int64_t num_groups, int64_t capacity) {
    const char* op = "soft_nms_fixed";
    const std::optional<Tensor> ids = checked_group_ids(boxes, scores, idxs, op);
    check_soft_nms_args(method, sigma, iou_threshold, score_threshold, op);
    typename B::Guard guard(boxes);
    FixedOutputs out(boxes, num_groups, capacity, true, op);
    if (FixedOutputs::needed(boxes.size(0), num_groups, capacity)) {
      B::soft_nms_fixed(torch::stable::contiguous(boxes), torch::stable::contiguous(scores), *ids, num_groups,
                        SoftNmsSpec{method, sigma, iou_threshold, score_threshold}, capacity, out.keep, out.scores,
                        out.count);
    }
    return std::make_tuple(out.keep, out.scores, out.count);
  }
};

template <typename B>
void register_soft_nms(OpLibrary& m) {
  m.impl("soft_nms", TORCH_BOX(&SoftNmsEntries<B>::soft_nms));
  m.impl("soft_nms_fixed", TORCH_BOX(&SoftNmsFixedEntries<B>::soft_nms_fixed));
}

}  // namespace sniper
