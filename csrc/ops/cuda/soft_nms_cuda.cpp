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

  static void soft_nms_fixed(const Tensor& boxes, const Tensor& scores, const Tensor& ids, int64_t num_groups,
                             const SoftNmsSpec& spec, int64_t capacity, Tensor& keep, Tensor& kept_scores,
                             Tensor& count) {
    TensorAllocator alloc(boxes);
    cuda::soft_nms_fixed(boxes.data_ptr(), scores.data_ptr(), ids.const_data_ptr<int64_t>(), boxes.size(0), num_groups,
                         spec, capacity, to_dtype(boxes.scalar_type()), keep.mutable_data_ptr<int64_t>(),
                         kept_scores.data_ptr(), count.mutable_data_ptr<int64_t>(), alloc, current_cuda_stream(boxes),
                         nms_tuning_from_env());
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_soft_nms<SoftNmsCuda>(m); }

}  // namespace sniper
