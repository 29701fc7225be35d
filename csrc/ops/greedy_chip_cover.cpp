// Schema of sniper::greedy_chip_cover. Kernels: cpu/greedy_chip_cover_cpu.cpp,
// cuda/greedy_chip_cover_cuda.cpp. Rules: docs/method.md §2.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // boxes [N, 4] in their group's canvas coordinates, box_group [N] in
  // [0, G), canvas_wh [G, 2]. Returns chips [C, 4] (canvas xyxy, per group
  // in selection order, groups ascending), chip_group [C] and box_chip [N]
  // (index of the chip that covered the box, -1 if none can).
  m.def(
      "greedy_chip_cover(Tensor boxes, Tensor box_group, Tensor canvas_wh, "
      "int chip_size, int stride, int? seed) -> (Tensor, Tensor, Tensor)");
}
