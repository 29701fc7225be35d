// C++ API of sniper_ext for programs that link the `sniper_ops` library
// (CMake target sniper::ops). Calls go through the PyTorch dispatcher on the
// stable ABI, so CPU and CUDA tensors both work (CUDA when the library was
// built with SNIPER_WITH_CUDA).
//
//   #include <sniper/ops.h>
//   auto [keep, scores] = sniper::soft_nms(boxes, scores, std::nullopt,
//                                          sniper::kSoftNmsGaussian, 0.5, 0.3, 1e-3);
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <optional>
#include <tuple>

#include "nms_rules.h"

#if defined(_WIN32)
#define SNIPER_API __declspec(dllimport)
#else
#define SNIPER_API __attribute__((visibility("default")))
#endif

namespace sniper {

// Version of the linked library. Referencing it also keeps the linker from
// dropping the library, whose loading registers the ops.
SNIPER_API const char* library_version();

namespace detail {
template <size_t N>
inline void call(const char* name, std::array<StableIValue, N>& stack) {
  static const char* version = library_version();  // ops registered
  (void)version;
  STD_TORCH_CHECK(torch_call_dispatcher(name, "", stack.data(), TORCH_ABI_VERSION) == AOTI_TORCH_SUCCESS,
                  "sniper: call to ", name, " failed");
}
using torch::stable::detail::from;
using torch::stable::detail::to;
}  // namespace detail

using torch::stable::Tensor;

inline Tensor box_iou(const Tensor& boxes1, const Tensor& boxes2) {
  std::array<StableIValue, 2> s{detail::from(boxes1), detail::from(boxes2)};
  detail::call("sniper::box_iou", s);
  return detail::to<Tensor>(s[0]);
}

inline Tensor nms(const Tensor& boxes, const Tensor& scores, double iou_threshold) {
  std::array<StableIValue, 3> s{detail::from(boxes), detail::from(scores), detail::from(iou_threshold)};
  detail::call("sniper::nms", s);
  return detail::to<Tensor>(s[0]);
}

inline Tensor batched_nms(const Tensor& boxes, const Tensor& scores, const Tensor& idxs, double iou_threshold) {
  std::array<StableIValue, 4> s{detail::from(boxes), detail::from(scores), detail::from(idxs),
                                detail::from(iou_threshold)};
  detail::call("sniper::batched_nms", s);
  return detail::to<Tensor>(s[0]);
}

// Returns (kept indices, decayed scores), by decayed score descending.
inline std::tuple<Tensor, Tensor> soft_nms(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& idxs,
                                           SoftNmsMethod method = kSoftNmsGaussian, double sigma = 0.5,
                                           double iou_threshold = 0.3, double score_threshold = 1e-3) {
  std::array<StableIValue, 7> s{detail::from(boxes),           detail::from(scores), detail::from(idxs),
                                detail::from(int64_t(method)), detail::from(sigma),  detail::from(iou_threshold),
                                detail::from(score_threshold)};
  detail::call("sniper::soft_nms", s);
  return {detail::to<Tensor>(s[0]), detail::to<Tensor>(s[1])};
}

// RPN anchor labels for B chips: (labels [B, A] int8, matched_gt [B, A] int64).
inline std::tuple<Tensor, Tensor> label_anchors(const Tensor& anchors, const Tensor& gt_boxes, const Tensor& gt_state,
                                                const Tensor& canvas_wh, double pos_iou = 0.5, double neg_iou = 0.4,
                                                double invalid_iou = 0.3, double allowed_border = 32) {
  std::array<StableIValue, 8> s{detail::from(anchors),     detail::from(gt_boxes),      detail::from(gt_state),
                                detail::from(canvas_wh),   detail::from(pos_iou),       detail::from(neg_iou),
                                detail::from(invalid_iou), detail::from(allowed_border)};
  detail::call("sniper::label_anchors", s);
  return {detail::to<Tensor>(s[0]), detail::to<Tensor>(s[1])};
}

// SNIPER chip covering: (chips [C, 4], chip_group [C], box_chip [N]).
inline std::tuple<Tensor, Tensor, Tensor> greedy_chip_cover(const Tensor& boxes, const Tensor& box_group,
                                                            const Tensor& canvas_wh, int64_t chip_size = 512,
                                                            int64_t stride = 32,
                                                            std::optional<int64_t> seed = std::nullopt) {
  std::array<StableIValue, 6> s{detail::from(boxes),     detail::from(box_group), detail::from(canvas_wh),
                                detail::from(chip_size), detail::from(stride),    detail::from(seed)};
  detail::call("sniper::greedy_chip_cover", s);
  return {detail::to<Tensor>(s[0]), detail::to<Tensor>(s[1]), detail::to<Tensor>(s[2])};
}

}  // namespace sniper
