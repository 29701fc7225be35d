// CUDA registration of sniper::soft_nms (soft_nms_kernel.cu).
#include "../nms_checks.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

std::tuple<Tensor, Tensor> soft_nms_cuda(Tensor boxes_in, Tensor scores_in,
                                         std::optional<Tensor> idxs,
                                         int64_t method, double sigma,
                                         double iou_threshold,
                                         double score_threshold) {
  const char* op = "soft_nms";
  const std::optional<Tensor> ids = checked_group_ids(boxes_in, scores_in, idxs, op);
  check_soft_nms_args(method, sigma, iou_threshold, score_threshold);
  const int64_t n = boxes_in.size(0);
  torch::stable::accelerator::DeviceGuard guard(boxes_in.get_device_index());
  const ScalarType dtype = boxes_in.scalar_type();
  Tensor keep = new_empty(boxes_in, {n}, ScalarType::Long);
  Tensor kept_scores = new_empty(boxes_in, {n}, dtype);
  if (n == 0) return std::make_tuple(keep, kept_scores);
  const Tensor boxes = torch::stable::contiguous(boxes_in);
  const Tensor scores = torch::stable::contiguous(scores_in);
  TensorAllocator alloc(boxes);
  const int64_t count = cuda::soft_nms(
      boxes.data_ptr(), scores.data_ptr(),
      ids ? ids->const_data_ptr<int64_t>() : nullptr, n, method, sigma,
      iou_threshold, score_threshold, to_dtype(dtype),
      keep.mutable_data_ptr<int64_t>(), kept_scores.data_ptr(), alloc,
      current_cuda_stream(boxes));
  return std::make_tuple(first_n(keep, count), first_n(kept_scores, count));
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) {
  m.impl("soft_nms", TORCH_BOX(&soft_nms_cuda));
}

}  // namespace sniper
