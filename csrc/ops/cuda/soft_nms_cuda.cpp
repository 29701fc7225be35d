// CUDA backend of sniper::soft_nms (entry point: soft_nms_common.h; kernels: soft_nms_kernel.cu).
#include "../soft_nms_common.h"
#include "cuda_registration.h"
#include "nms_tuning.h"

namespace sniper {
namespace {

struct SoftNmsCuda : CudaBackend {
  static int64_t soft_nms(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids,
                          const SoftNmsSpec& spec, Tensor& keep, Tensor& kept_scores) {
    TensorAllocator alloc(boxes);
    return cuda::soft_nms(boxes.data_ptr(), scores.data_ptr(), ids ? ids->const_data_ptr<int64_t>() : nullptr,
                          boxes.size(0), spec, to_dtype(boxes.scalar_type()), keep.mutable_data_ptr<int64_t>(),
                          kept_scores.data_ptr(), alloc, current_cuda_stream(boxes), nms_tuning_from_env());
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_soft_nms<SoftNmsCuda>(m); }

}  // namespace sniper
