// Schema of sniper::soft_nms. Kernels: cpu/soft_nms_cpu.cpp,
// cuda/soft_nms_cuda.cpp. `method`: 0 linear, 1 gaussian, 2 hard
// (sniper::SoftNmsMethod in include/sniper/nms_rules.h).
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // Exact sequential greedy Soft-NMS inside each group of equal `idxs` (one
  // group when None). Returns (kept indices, decayed scores), sorted by
  // decayed score descending, ties to the lower index.
  m.def(
      "soft_nms(Tensor boxes, Tensor scores, Tensor? idxs, int method, "
      "float sigma, float iou_threshold, float score_threshold) "
      "-> (Tensor, Tensor)");
  // Fixed-capacity variant (sync-free, static shapes): per group g in [0, num_groups), (keep int64
  // [num_groups, capacity], kept scores [num_groups, capacity], count int64 [num_groups]) -- the
  // first min(K_g, capacity) survivors of group g in soft_nms's order, then -1 (scores 0); boxes
  // whose idxs lie outside [0, num_groups) take no part.
  m.def(
      "soft_nms_fixed(Tensor boxes, Tensor scores, Tensor idxs, int method, float sigma, "
      "float iou_threshold, float score_threshold, SymInt num_groups, int capacity) "
      "-> (Tensor, Tensor, Tensor)");
}
