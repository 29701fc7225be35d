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
  // Fixed-capacity variants (sync-free: no output size read back to the host, static output
  // shapes). nms_fixed: (keep int64 [capacity], count int64 []) -- the first min(K, capacity)
  // indices nms would return, then -1. batched_nms_fixed: per group g in [0, num_groups),
  // (keep int64 [num_groups, capacity], count int64 [num_groups]) -- the first indices of group g
  // in batched_nms's order, then -1; boxes whose idxs lie outside [0, num_groups) take no part.
  m.def("nms_fixed(Tensor boxes, Tensor scores, float iou_threshold, int capacity) -> (Tensor, Tensor)");
  m.def(
      "batched_nms_fixed(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, "
      "SymInt num_groups, int capacity) -> (Tensor, Tensor)");
}
