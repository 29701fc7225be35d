// CUDA registration of sniper::soft_nms (soft_nms_kernel.cu); the schema
// entry point is SoftNmsEntries (nms_common.h), shared with the CPU.
#include "../nms_common.h"
#include "cuda_registration.h"
#include "nms_tuning.h"

namespace sniper {
namespace {

std::tuple<Tensor, Tensor> soft_nms_cuda(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids,
                                         const SoftNmsSpec& spec) {
  const int64_t n = boxes.size(0);
  torch::stable::accelerator::DeviceGuard guard(boxes.get_device_index());
  const ScalarType dtype = boxes.scalar_type();
  Tensor keep = new_empty(boxes, {n}, ScalarType::Long);
  Tensor kept_scores = new_empty(boxes, {n}, dtype);
  TensorAllocator alloc(boxes);
  const int64_t count =
      cuda::soft_nms(boxes.data_ptr(), scores.data_ptr(), ids ? ids->const_data_ptr<int64_t>() : nullptr, n, spec,
                     to_dtype(dtype), keep.mutable_data_ptr<int64_t>(), kept_scores.data_ptr(), alloc,
                     current_cuda_stream(boxes), nms_tuning_from_env());
  return std::make_tuple(first_n(keep, count), first_n(kept_scores, count));
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { m.impl("soft_nms", TORCH_BOX(&SoftNmsEntries<&soft_nms_cuda>::soft_nms)); }

}  // namespace sniper
