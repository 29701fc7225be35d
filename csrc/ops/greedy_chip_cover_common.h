// Argument checks and the schema entry point of sniper::greedy_chip_cover (ChipCoverEntries),
// shared by the CPU and CUDA registrations; the backends' kernel:
//   greedy_chip_cover(boxes [n, 4], box_group [n] int64, canvas [G, 2] float64, chip_size, stride,
//                     seed, chips [n, 4], chip_group [n], box_chip [n]) -> count
// with n > 0, contiguous inputs; it checks what only the data shows (group ids in range, finite
// boxes), writes the chips and their groups to rows [0, count) and every box's chip.
#pragma once

#include <sniper/chip_grid.h>
#include <sniper/stable_utils.h>

#include <cmath>

#include "op_entry.h"

namespace sniper {

inline void check_chip_cover_args(const Tensor& boxes, const Tensor& box_group, const Tensor& canvas_wh,
                                  int64_t chip_size, int64_t stride, std::optional<int64_t> seed) {
  const char* op = "greedy_chip_cover";
  check_boxes(boxes, op, "boxes");
  check_1d(box_group, boxes.size(0), op, "box_group");
  check_defined(canvas_wh, op, "canvas_wh");
  STD_TORCH_CHECK(box_group.scalar_type() == ScalarType::Long || box_group.scalar_type() == ScalarType::Int, op,
                  ": `box_group` must be int64 or int32, got ", dtype_name(box_group.scalar_type()));
  STD_TORCH_CHECK(canvas_wh.dim() == 2 && canvas_wh.size(1) == 2, op,
                  ": `canvas_wh` must have shape [G, 2] (width, height per group)");
  check_same_device(boxes, box_group, op, "boxes", "box_group");
  check_same_device(boxes, canvas_wh, op, "boxes", "canvas_wh");
  STD_TORCH_CHECK(chip_size > 0, op, ": `chip_size` must be > 0, got ", chip_size);
  STD_TORCH_CHECK(stride > 0, op, ": `stride` must be > 0, got ", stride);
  STD_TORCH_CHECK(!seed || *seed >= 0, op, ": `seed` must be None or >= 0, got ", seed ? *seed : 0);
  const ScalarType ct = canvas_wh.scalar_type();
  STD_TORCH_CHECK(ct != ScalarType::Bool && ct != ScalarType::ComplexFloat && ct != ScalarType::ComplexDouble, op,
                  ": `canvas_wh` must be a real tensor, got ", dtype_name(ct));
}

// Canvas sizes (read on the host; one small copy for a CUDA canvas): finite,
// positive, and at most kMaxChipCandidates candidate chips per group.
inline void check_chip_canvases(const Tensor& canvas_wh, int64_t chip_size, int64_t stride) {
  const char* op = "greedy_chip_cover";
  Tensor c = contiguous_as(canvas_wh, ScalarType::Double);
  if (c.is_cuda()) c = torch::stable::to(c, torch::stable::Device(torch::headeronly::DeviceType::CPU));
  const double* wh = c.const_data_ptr<double>();
  for (int64_t g = 0; g < c.size(0); ++g) {
    const double w = wh[2 * g], h = wh[2 * g + 1];
    STD_TORCH_CHECK(std::isfinite(w) && std::isfinite(h) && w > 0 && h > 0, op, ": `canvas_wh`[", g,
                    "] must be finite and positive, got (", w, ", ", h, ")");
    const double candidates = chip_axis_count(w, chip_size, stride) * chip_axis_count(h, chip_size, stride);
    STD_TORCH_CHECK(candidates <= double(kMaxChipCandidates), op, ": `canvas_wh`[", g, "] = (", w, ", ", h, ") has ",
                    candidates, " candidate chips for chip_size ", chip_size, " and stride ", stride,
                    ", more than the 2^24 one group may have (use a larger stride or a smaller canvas)");
  }
}

template <typename B>
struct ChipCoverEntries {
  static std::tuple<Tensor, Tensor, Tensor> greedy_chip_cover(Tensor boxes, Tensor box_group, Tensor canvas_wh,
                                                              int64_t chip_size, int64_t stride,
                                                              std::optional<int64_t> seed) {
    check_chip_cover_args(boxes, box_group, canvas_wh, chip_size, stride, seed);
    check_chip_canvases(canvas_wh, chip_size, stride);
    typename B::Guard guard(boxes);
    const int64_t n = boxes.size(0);
    // Every chip covers at least one box first: at most n chips.
    const ScalarType chip_dtype = boxes.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
    Tensor chips = new_empty(boxes, {n, 4}, chip_dtype);
    Tensor chip_group = new_empty(boxes, {n}, ScalarType::Long);
    Tensor box_chip = new_empty(boxes, {n}, ScalarType::Long);
    if (n == 0) return std::make_tuple(chips, chip_group, box_chip);
    const int64_t count = B::greedy_chip_cover(
        torch::stable::contiguous(boxes), contiguous_as(box_group, ScalarType::Long),
        contiguous_as(canvas_wh, ScalarType::Double), chip_size, stride, seed, chips, chip_group, box_chip);
    return std::make_tuple(first_n(chips, count), first_n(chip_group, count), box_chip);
  }
};

template <typename B>
void register_greedy_chip_cover(OpLibrary& m) {
  m.impl("greedy_chip_cover", TORCH_BOX(&ChipCoverEntries<B>::greedy_chip_cover));
}

}  // namespace sniper
