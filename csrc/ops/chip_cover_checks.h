// Argument checks shared by the CPU and CUDA registrations of greedy_chip_cover.
#pragma once

#include <sniper/stable_utils.h>

namespace sniper {

inline void check_chip_cover_args(const Tensor& boxes, const Tensor& box_group,
                                  const Tensor& canvas_wh, int64_t chip_size,
                                  int64_t stride) {
  const char* op = "greedy_chip_cover";
  check_boxes(boxes, op, "boxes");
  check_1d(box_group, boxes.size(0), op, "box_group");
  STD_TORCH_CHECK(box_group.scalar_type() == ScalarType::Long ||
                      box_group.scalar_type() == ScalarType::Int,
                  op, ": `box_group` must be int64 or int32, got ",
                  dtype_name(box_group.scalar_type()));
  STD_TORCH_CHECK(canvas_wh.dim() == 2 && canvas_wh.size(1) == 2, op,
                  ": `canvas_wh` must have shape [G, 2] (width, height per group)");
  check_same_device(boxes, box_group, op, "boxes", "box_group");
  check_same_device(boxes, canvas_wh, op, "boxes", "canvas_wh");
  STD_TORCH_CHECK(chip_size > 0, op, ": `chip_size` must be > 0, got ", chip_size);
  STD_TORCH_CHECK(stride > 0, op, ": `stride` must be > 0, got ", stride);
}

}  // namespace sniper
