// CUDA registration of sniper::deform_im2col / deform_col2im (deform_conv_kernel.cu).
#include "../deform_conv_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

Tensor deform_im2col_cuda(Tensor input_in, Tensor offset_in, std::optional<Tensor> mask_in, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t og) {
  const DeformGeometry g =
      deform_geometry(input_in, offset_in, mask_in, kh, kw, sh, sw, ph, pw, dh, dw, og, "deform_im2col");
  torch::stable::accelerator::DeviceGuard guard(input_in.get_device_index());
  const int64_t n = input_in.size(0);
  Tensor cols = new_output(input_in, {n, g.channels * g.taps(), g.positions()}, input_in.scalar_type(), "deform_im2col",
                           "the columns");
  if (n == 0 || g.channels == 0) return cols;
  if (g.height == 0 || g.width == 0) return torch::stable::zero_(cols);  // no pixel: every sample is 0
  const Tensor input = torch::stable::contiguous(input_in);
  const Tensor offset = torch::stable::contiguous(offset_in);
  std::optional<Tensor> mask;
  if (mask_in) mask = torch::stable::contiguous(*mask_in);
  cuda::deform_im2col(input.data_ptr(), offset.data_ptr(), mask ? mask->data_ptr() : nullptr, g, n, cols.data_ptr(),
                      to_dtype(input.scalar_type()), current_cuda_stream(input));
  return cols;
}

std::tuple<Tensor, Tensor, Tensor> deform_col2im_cuda(Tensor grad_cols_in, Tensor input_in, Tensor offset_in,
                                                      std::optional<Tensor> mask_in, int64_t kh, int64_t kw, int64_t sh,
                                                      int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                                                      int64_t og, bool deterministic) {
  const DeformGeometry g =
      deform_col2im_geometry(grad_cols_in, input_in, offset_in, mask_in, kh, kw, sh, sw, ph, pw, dh, dw, og);
  const int64_t n = input_in.size(0);
  torch::stable::accelerator::DeviceGuard guard(input_in.get_device_index());
  const auto grads = deform_col2im_outputs(input_in, mask_in, g);
  Tensor grad_input = std::get<0>(grads), grad_offset = std::get<1>(grads), grad_mask = std::get<2>(grads);
  if (deform_no_work(g, n)) return std::make_tuple(grad_input, grad_offset, grad_mask);
  const ScalarType dt = input_in.scalar_type();
  const Tensor gcols = contiguous_as(grad_cols_in, dt);
  const Tensor input = torch::stable::contiguous(input_in);
  const Tensor offset = torch::stable::contiguous(offset_in);
  std::optional<Tensor> mask;
  if (mask_in) mask = torch::stable::contiguous(*mask_in);
  TensorAllocator alloc(input);
  cuda::deform_col2im(gcols.data_ptr(), input.data_ptr(), offset.data_ptr(), mask ? mask->data_ptr() : nullptr, g, n,
                      deterministic, grad_input.data_ptr(), grad_offset.data_ptr(),
                      mask ? grad_mask.data_ptr() : nullptr, to_dtype(dt), alloc, current_cuda_stream(input));
  return std::make_tuple(grad_input, grad_offset, grad_mask);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) {
  m.impl("deform_im2col", TORCH_BOX(&deform_im2col_cuda));
  m.impl("deform_col2im", TORCH_BOX(&deform_col2im_cuda));
}

}  // namespace sniper
