// Schemas of sniper::nms and sniper::batched_nms.
// Kernels: cpu/nms_cpu.cpp, cuda/nms_cuda.cpp.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // Greedy NMS: indices of kept boxes by descending score (ties: lower index
  // first). A box is dropped when its IoU with a kept box is > iou_threshold.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // NMS independently inside each group of equal `idxs`; same output order.
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor idxs, "
      "float iou_threshold) -> Tensor");
}
