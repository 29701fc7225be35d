// CUDA registration of sniper::greedy_chip_cover (greedy_chip_cover_kernel.cu).
#include "../greedy_chip_cover_checks.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

std::tuple<Tensor, Tensor, Tensor> greedy_chip_cover_cuda(Tensor boxes_in, Tensor box_group_in, Tensor canvas_wh_in,
                                                          int64_t chip_size, int64_t stride,
                                                          std::optional<int64_t> seed) {
  check_chip_cover_args(boxes_in, box_group_in, canvas_wh_in, chip_size, stride, seed);
  check_chip_canvases(canvas_wh_in, chip_size, stride);
  torch::stable::accelerator::DeviceGuard guard(boxes_in.get_device_index());
  const int64_t n = boxes_in.size(0);
  const Tensor boxes = torch::stable::contiguous(boxes_in);
  const Tensor box_group = contiguous_as(box_group_in, ScalarType::Long);
  const Tensor canvas = contiguous_as(canvas_wh_in, ScalarType::Double);
  const ScalarType chip_dtype = boxes.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  Tensor chips = new_empty(boxes, {n, 4}, chip_dtype);
  Tensor chip_group = new_empty(boxes, {n}, ScalarType::Long);
  Tensor box_chip = new_empty(boxes, {n}, ScalarType::Long);
  if (n == 0) return std::make_tuple(chips, chip_group, box_chip);
  TensorAllocator alloc(boxes);
  const int64_t count = cuda::greedy_chip_cover(
      boxes.data_ptr(), box_group.const_data_ptr<int64_t>(), canvas.const_data_ptr<double>(), n, canvas.size(0),
      chip_size, stride, seed ? *seed : -1, to_dtype(boxes.scalar_type()), chips.data_ptr(), to_dtype(chip_dtype),
      chip_group.mutable_data_ptr<int64_t>(), box_chip.mutable_data_ptr<int64_t>(), alloc, current_cuda_stream(boxes));
  Tensor chips_out = torch::stable::clone(torch::stable::narrow(chips, 0, 0, count));
  return std::make_tuple(chips_out, first_n(chip_group, count), box_chip);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { m.impl("greedy_chip_cover", TORCH_BOX(&greedy_chip_cover_cuda)); }

}  // namespace sniper
