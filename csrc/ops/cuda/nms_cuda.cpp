// CUDA backend of sniper::nms and sniper::batched_nms (entry points: nms_common.h; kernels:
// nms_kernel.cu).
#include "../nms_common.h"
#include "cuda_registration.h"
#include "nms_tuning.h"

namespace sniper {
namespace {

struct NmsCuda : CudaBackend {
  static int64_t nms(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids, double iou_threshold,
                     Tensor& keep) {
    TensorAllocator alloc(boxes);
    return cuda::nms(boxes.data_ptr(), scores.data_ptr(), ids ? ids->const_data_ptr<int64_t>() : nullptr, boxes.size(0),
                     iou_threshold, to_dtype(boxes.scalar_type()), keep.mutable_data_ptr<int64_t>(), alloc,
                     current_cuda_stream(boxes), nms_tuning_from_env());
  }

  static void nms_fixed(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids, int64_t num_groups,
                        double iou_threshold, int64_t capacity, Tensor& keep, Tensor& count) {
    TensorAllocator alloc(boxes);
    cuda::nms_fixed(boxes.data_ptr(), scores.data_ptr(), ids ? ids->const_data_ptr<int64_t>() : nullptr, boxes.size(0),
                    num_groups, iou_threshold, capacity, to_dtype(boxes.scalar_type()),
                    keep.mutable_data_ptr<int64_t>(), count.mutable_data_ptr<int64_t>(), alloc,
                    current_cuda_stream(boxes), nms_tuning_from_env());
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_nms<NmsCuda>(m); }

}  // namespace sniper
