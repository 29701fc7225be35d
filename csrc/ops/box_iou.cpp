// Schema of sniper::box_iou. Kernels: cpu/box_iou_cpu.cpp, cuda/box_iou_cuda.cpp.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // Pairwise IoU of xyxy boxes: [N, 4] x [M, 4] -> [N, M].
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}
