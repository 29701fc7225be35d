// Schema of sniper::label_anchors. Kernels: cpu/label_anchors_cpu.cpp,
// cuda/label_anchors_cuda.cpp. Rules: docs/method.md §5.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // anchors [A, 4] shared by all chips; gt_boxes [B, G, 4] padded per chip;
  // gt_state [B, G] int8 (1 valid, 0 invalid, -1 padding); canvas_wh [B, 2].
  // Returns labels [B, A] int8 in {-1, 0, 1} and matched_gt [B, A] int64
  // (the valid GT a positive anchor regresses to, -1 elsewhere).
  m.def(
      "label_anchors(Tensor anchors, Tensor gt_boxes, Tensor gt_state, Tensor canvas_wh, "
      "float pos_iou, float neg_iou, float invalid_iou, float allowed_border) "
      "-> (Tensor, Tensor)");
}
