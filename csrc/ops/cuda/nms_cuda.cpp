// CUDA registration of sniper::nms and sniper::batched_nms (nms_kernel.cu);
// the schema entry points are NmsEntries (nms_common.h), shared with the CPU.
#include "../nms_common.h"
#include "cuda_registration.h"
#include "nms_tuning.h"

namespace sniper {
namespace {

Tensor nms_cuda(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids, double iou_threshold,
                const char* /*op*/) {
  const int64_t n = boxes.size(0);
  torch::stable::accelerator::DeviceGuard guard(boxes.get_device_index());
  Tensor keep = new_empty(boxes, {n}, ScalarType::Long);
  TensorAllocator alloc(boxes);
  const int64_t count = cuda::nms(boxes.data_ptr(), scores.data_ptr(), ids ? ids->const_data_ptr<int64_t>() : nullptr,
                                  n, iou_threshold, to_dtype(boxes.scalar_type()), keep.mutable_data_ptr<int64_t>(),
                                  alloc, current_cuda_stream(boxes), nms_tuning_from_env());
  return first_n(keep, count);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) {
  using E = NmsEntries<&nms_cuda>;
  m.impl("nms", TORCH_BOX(&E::nms));
  m.impl("batched_nms", TORCH_BOX(&E::batched_nms));
}

}  // namespace sniper
