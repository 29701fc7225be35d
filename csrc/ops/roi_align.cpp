// Schemas of RoIAlign and deformable RoI pooling (v1, Deformable ConvNets),
// one bilinear RoI-pooling kernel family: deform_roi_pool with zero offsets
// equals roi_align with aligned=True. Kernels: cpu/roi_align_cpu.cpp,
// cuda/roi_align_cuda.cpp.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // rois [K, 5] = (batch index, x1, y1, x2, y2) in input-image coordinates.
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_h, int pooled_w, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_h, "
      "int pooled_w, int batch, int channels, int height, int width, int sampling_ratio, "
      "bool aligned) -> Tensor");
  // offset [K, 2, pooled_h, pooled_w]: bin (i, j) moves by gamma * (roi_w * offset[k, 0, i, j],
  // roi_h * offset[k, 1, i, j]).
  m.def(
      "deform_roi_pool(Tensor input, Tensor rois, Tensor? offset, float spatial_scale, "
      "int pooled_h, int pooled_w, int sampling_ratio, float gamma) -> Tensor");
  m.def(
      "deform_roi_pool_backward(Tensor grad, Tensor input, Tensor rois, Tensor? offset, "
      "float spatial_scale, int pooled_h, int pooled_w, int sampling_ratio, float gamma) "
      "-> (Tensor, Tensor)");
}
