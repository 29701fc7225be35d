// Argument checks shared by the CPU and CUDA registrations of the RoI pooling ops.
#pragma once

#include <sniper/bilinear.h>
#include <sniper/stable_utils.h>

namespace sniper {

inline void check_roi_pool_args(const Tensor& input_like_rois, const Tensor& rois,
                                const std::optional<Tensor>& offset, int64_t pooled_h,
                                int64_t pooled_w, int64_t sampling_ratio, const char* op) {
  STD_TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
                  ": `rois` must have shape [K, 5] (batch index, x1, y1, x2, y2)");
  STD_TORCH_CHECK(rois.scalar_type() == input_like_rois.scalar_type(), op,
                  ": `rois` must have the dtype of the features");
  check_same_device(input_like_rois, rois, op, "input", "rois");
  STD_TORCH_CHECK(pooled_h > 0 && pooled_w > 0, op, ": output size must be positive");
  STD_TORCH_CHECK(sampling_ratio >= 0, op, ": `sampling_ratio` must be >= 0 (0: adaptive)");
  if (offset) {
    STD_TORCH_CHECK(offset->dim() == 4 && offset->size(0) == rois.size(0) && offset->size(1) == 2 &&
                        offset->size(2) == pooled_h && offset->size(3) == pooled_w,
                    op, ": `offset` must have shape [", rois.size(0), ", 2, ", pooled_h, ", ", pooled_w, "]");
    STD_TORCH_CHECK(offset->scalar_type() == rois.scalar_type(), op, ": `offset` must have the dtype of `rois`");
    check_same_device(rois, *offset, op, "rois", "offset");
  }
}

// The four schema entry points, defined once over a backend's
//   Forward(input, rois, offset, spec, op) -> out
//   Backward(grad, rois, input, offset, n, c, h, w, spec, op) -> (grad_input, grad_offset)
// so CPU and CUDA agree on how arguments map to a RoiPoolSpec (deformable
// pooling is always aligned).
template <auto Forward, auto Backward>
struct RoiPoolEntries {
  static Tensor roi_align(Tensor input, Tensor rois, double scale, int64_t ph, int64_t pw, int64_t sampling,
                          bool aligned) {
    return Forward(input, rois, std::nullopt, RoiPoolSpec{scale, ph, pw, sampling, aligned, 0.0}, "roi_align");
  }
  static Tensor roi_align_backward(Tensor grad, Tensor rois, double scale, int64_t ph, int64_t pw, int64_t n,
                                   int64_t c, int64_t h, int64_t w, int64_t sampling, bool aligned) {
    return std::get<0>(Backward(grad, rois, std::nullopt, std::nullopt, n, c, h, w,
                                RoiPoolSpec{scale, ph, pw, sampling, aligned, 0.0}, "roi_align_backward"));
  }
  static Tensor deform_roi_pool(Tensor input, Tensor rois, std::optional<Tensor> offset, double scale, int64_t ph,
                                int64_t pw, int64_t sampling, double gamma) {
    return Forward(input, rois, offset, RoiPoolSpec{scale, ph, pw, sampling, true, gamma}, "deform_roi_pool");
  }
  static std::tuple<Tensor, Tensor> deform_roi_pool_backward(Tensor grad, Tensor input, Tensor rois,
                                                             std::optional<Tensor> offset, double scale, int64_t ph,
                                                             int64_t pw, int64_t sampling, double gamma) {
    STD_TORCH_CHECK(input.dim() == 4, "deform_roi_pool_backward: `input` must have shape [N, C, H, W]");
    return Backward(grad, rois, input, offset, input.size(0), input.size(1), input.size(2), input.size(3),
                    RoiPoolSpec{scale, ph, pw, sampling, true, gamma}, "deform_roi_pool_backward");
  }
};

}  // namespace sniper
