// Argument checks shared by the CPU and CUDA registrations of the RoI pooling ops.
#pragma once

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

}  // namespace sniper
