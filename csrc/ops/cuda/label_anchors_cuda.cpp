// CUDA registration of sniper::label_anchors (label_anchors_kernel.cu).
#include "../label_anchors_checks.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

std::tuple<Tensor, Tensor> label_anchors_cuda(Tensor anchors_in, Tensor gt_boxes_in, Tensor gt_state_in,
                                              Tensor canvas_wh_in, double pos_iou, double neg_iou, double invalid_iou,
                                              double allowed_border) {
  check_label_anchors_args(anchors_in, gt_boxes_in, gt_state_in, canvas_wh_in, pos_iou, neg_iou, invalid_iou,
                           allowed_border);
  torch::stable::accelerator::DeviceGuard guard(anchors_in.get_device_index());
  const int64_t chips = gt_boxes_in.size(0), g = gt_boxes_in.size(1), a = anchors_in.size(0);
  Tensor labels = new_output(anchors_in, {chips, a}, ScalarType::Char, "label_anchors", "the labels");
  Tensor matched = new_output(anchors_in, {chips, a}, ScalarType::Long, "label_anchors", "the matches");
  if (chips == 0 || a == 0) return std::make_tuple(labels, matched);
  const Tensor anchors = torch::stable::contiguous(anchors_in);
  const Tensor gt_boxes = torch::stable::contiguous(gt_boxes_in);
  const Tensor gt_state = torch::stable::contiguous(gt_state_in);
  const Tensor canvas = contiguous_as(canvas_wh_in, ScalarType::Double);
  TensorAllocator alloc(anchors);
  cuda::label_anchors(anchors.data_ptr(), gt_boxes.data_ptr(), gt_state.const_data_ptr<int8_t>(),
                      canvas.const_data_ptr<double>(), chips, a, g, pos_iou, neg_iou, invalid_iou, allowed_border,
                      to_dtype(anchors.scalar_type()), labels.mutable_data_ptr<int8_t>(),
                      matched.mutable_data_ptr<int64_t>(), alloc, current_cuda_stream(anchors));
  return std::make_tuple(labels, matched);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { m.impl("label_anchors", TORCH_BOX(&label_anchors_cuda)); }

}  // namespace sniper
