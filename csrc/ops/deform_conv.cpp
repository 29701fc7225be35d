// Schemas of the deformable-convolution sampling ops. deform_conv2d itself is
// sniper_ext.ops.deform_conv2d: columns from deform_im2col, then a GEMM with
// the weight through torch (so autograd, autocast and every dtype's matmul
// come from PyTorch). Kernels: cpu/deform_conv_cpu.cpp, cuda/deform_conv_cuda.cpp.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sniper, m) {
  // columns [N, C*kh*kw, OH*OW]: row c*kh*kw + k holds channel c sampled at
  // kernel tap k (times the mask, when given) at every output position.
  m.def(
      "deform_im2col(Tensor input, Tensor offset, Tensor? mask, int kernel_h, int kernel_w, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, "
      "int offset_groups) -> Tensor");
  // Adjoint of deform_im2col: gradients of input, offset and mask (an empty
  // tensor when mask is None) from the gradient of the columns.
  m.def(
      "deform_col2im(Tensor grad_columns, Tensor input, Tensor offset, Tensor? mask, "
      "int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w, "
      "int dilation_h, int dilation_w, int offset_groups, bool deterministic) "
      "-> (Tensor, Tensor, Tensor)");
}
