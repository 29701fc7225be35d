// CUDA registration of sniper::nms and sniper::batched_nms (nms_kernel.cu).
#include "../nms_checks.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

Tensor nms_cuda_impl(const Tensor& boxes_in, const Tensor& scores_in,
                     const std::optional<Tensor>& idxs, double iou_threshold, const char* op) {
  const std::optional<Tensor> ids = checked_group_ids(boxes_in, scores_in, idxs, op);
  check_threshold(iou_threshold, op, "iou_threshold");
  const int64_t n = boxes_in.size(0);
  torch::stable::accelerator::DeviceGuard guard(boxes_in.get_device_index());
  Tensor keep = new_empty(boxes_in, {n}, ScalarType::Long);
  if (n == 0) return keep;
  const Tensor boxes = torch::stable::contiguous(boxes_in);
  const Tensor scores = torch::stable::contiguous(scores_in);
  TensorAllocator alloc(boxes);
  const int64_t count = cuda::nms(
      boxes.data_ptr(), scores.data_ptr(),
      ids ? ids->const_data_ptr<int64_t>() : nullptr, n, iou_threshold,
      to_dtype(boxes.scalar_type()), keep.mutable_data_ptr<int64_t>(), alloc,
      current_cuda_stream(boxes));
  return first_n(keep, count);
}

Tensor nms_cuda(Tensor boxes, Tensor scores, double iou_threshold) {
  return nms_cuda_impl(boxes, scores, std::nullopt, iou_threshold, "nms");
}

Tensor batched_nms_cuda(Tensor boxes, Tensor scores, Tensor idxs,
                        double iou_threshold) {
  return nms_cuda_impl(boxes, scores, idxs, iou_threshold, "batched_nms");
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) {
  m.impl("nms", TORCH_BOX(&nms_cuda));
  m.impl("batched_nms", TORCH_BOX(&batched_nms_cuda));
}

}  // namespace sniper
