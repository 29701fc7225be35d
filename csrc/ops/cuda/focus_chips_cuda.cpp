// CUDA backend of sniper::focus_chips (entry point: focus_chips_common.h; kernels:
// focus_chips_kernel.cu).
#include "../focus_chips_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

struct FocusChipsCuda : CudaBackend {
  static int64_t focus_chips(const Tensor& prob, const Tensor& sizes, const int64_t* /*host_sizes*/, double threshold,
                             int64_t dilation, int64_t min_size, int64_t total_cells, Tensor& out) {
    TensorAllocator alloc(prob);
    return cuda::focus_chips(prob.data_ptr(), sizes.const_data_ptr<int64_t>(), prob.size(0), prob.size(1), prob.size(2),
                             threshold, dilation, min_size, total_cells, out.size(0), to_dtype(prob.scalar_type()),
                             out.mutable_data_ptr<int64_t>(), alloc, current_cuda_stream(prob));
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_focus_chips<FocusChipsCuda>(m); }

}  // namespace sniper
