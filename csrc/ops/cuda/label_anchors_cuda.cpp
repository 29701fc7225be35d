// CUDA backend of sniper::label_anchors (entry point: label_anchors_common.h; kernels:
// label_anchors_kernel.cu).
#include "../label_anchors_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

struct LabelAnchorsCuda : CudaBackend {
  static void label_anchors(const Tensor& anchors, const Tensor& gt_boxes, const Tensor& gt_state, const Tensor& canvas,
                            const AnchorThresholds& t, Tensor& labels, Tensor& matched) {
    TensorAllocator alloc(anchors);
    cuda::label_anchors(anchors.data_ptr(), gt_boxes.data_ptr(), gt_state.const_data_ptr<int8_t>(),
                        canvas.const_data_ptr<double>(), gt_boxes.size(0), anchors.size(0), gt_boxes.size(1), t.pos_iou,
                        t.neg_iou, t.invalid_iou, t.allowed_border, to_dtype(anchors.scalar_type()),
                        labels.mutable_data_ptr<int8_t>(), matched.mutable_data_ptr<int64_t>(), alloc,
                        current_cuda_stream(anchors));
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_label_anchors<LabelAnchorsCuda>(m); }

}  // namespace sniper
