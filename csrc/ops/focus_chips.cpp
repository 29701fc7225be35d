// Schema of sniper::focus_chips (AutoFocus's FocusChips). Kernels: cpu/focus_chips_cpu.cpp,
// cuda/focus_chips_cuda.cpp. Rules: csrc/include/sniper/focus_rules.h, docs/api.md.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // prob [B, H, W] FocusPixel probabilities, sizes [B, 2] int64 valid (h, w) per
  // map. Cells >= threshold, dilated by a dilation x dilation square, 8-connected
  // components, boxes grown to min_size and merged until none touch. Returns
  // int64 [N, 5] rows (map, x1, y1, x2, y2) in cells, half-open, sorted by map,
  // y1, x1 (then y2, x2).
  m.def("focus_chips(Tensor prob, Tensor sizes, float threshold, int dilation, int min_size) -> Tensor");
}
