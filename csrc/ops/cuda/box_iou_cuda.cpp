// CUDA registration of sniper::box_iou (kernel: box_iou_kernel.cu).
#include "cuda_registration.h"

namespace sniper {
namespace {

Tensor box_iou_cuda(Tensor boxes1, Tensor boxes2) {
  check_boxes(boxes1, "box_iou", "boxes1");
  check_boxes(boxes2, "box_iou", "boxes2");
  check_same_device(boxes1, boxes2, "box_iou", "boxes1", "boxes2");
  STD_TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(),
                  "box_iou: `boxes1` and `boxes2` must have the same dtype");
  torch::stable::accelerator::DeviceGuard guard(boxes1.get_device_index());
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  Tensor out = new_output(boxes1, {n, m}, boxes1.scalar_type(), "box_iou", "the IoU matrix");
  const Tensor a = torch::stable::contiguous(boxes1);
  const Tensor b = torch::stable::contiguous(boxes2);
  cuda::box_iou(a.data_ptr(), b.data_ptr(), out.data_ptr(), n, m, to_dtype(a.scalar_type()), current_cuda_stream(a));
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { m.impl("box_iou", TORCH_BOX(&box_iou_cuda)); }

}  // namespace sniper
