// CUDA backend of sniper::greedy_chip_cover (entry point: greedy_chip_cover_common.h; kernels:
// greedy_chip_cover_kernel.cu).
#include "../greedy_chip_cover_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

struct ChipCoverCuda : CudaBackend {
  static int64_t greedy_chip_cover(const Tensor& boxes, const Tensor& box_group, const Tensor& canvas,
                                   int64_t chip_size, int64_t stride, std::optional<int64_t> seed, Tensor& chips,
                                   Tensor& chip_group, Tensor& box_chip) {
    TensorAllocator alloc(boxes);
    return cuda::greedy_chip_cover(boxes.data_ptr(), box_group.const_data_ptr<int64_t>(),
                                   canvas.const_data_ptr<double>(), boxes.size(0), canvas.size(0), chip_size, stride,
                                   seed ? *seed : -1, to_dtype(boxes.scalar_type()), chips.data_ptr(),
                                   to_dtype(chips.scalar_type()), chip_group.mutable_data_ptr<int64_t>(),
                                   box_chip.mutable_data_ptr<int64_t>(), alloc, current_cuda_stream(boxes));
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_greedy_chip_cover<ChipCoverCuda>(m); }

}  // namespace sniper
