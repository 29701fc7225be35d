// CUDA registration of roi_align and deform_roi_pool (roi_align_kernel.cu).
#include "../roi_align_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

// Arguments arrive validated (RoiPoolEntries in roi_align_common.h).
Tensor forward(const Tensor& input_in, const Tensor& rois_in, const std::optional<Tensor>& offset_in,
               const RoiPoolSpec& s) {
  torch::stable::accelerator::DeviceGuard guard(input_in.get_device_index());
  const Tensor input = torch::stable::contiguous(input_in);
  const Tensor rois = torch::stable::contiguous(rois_in);
  std::optional<Tensor> offset;
  if (offset_in) offset = torch::stable::contiguous(*offset_in);
  const int64_t k = rois.size(0);
  // An empty feature map: every sample lies outside it, every bin is 0 (as on the CPU).
  if (input.size(2) == 0 || input.size(3) == 0) return torch::stable::new_zeros(input, {k, input.size(1), s.ph, s.pw});
  Tensor out = new_empty(input, {k, input.size(1), s.ph, s.pw}, input.scalar_type());
  cuda::roi_pool_forward(input.data_ptr(), rois.data_ptr(), offset ? offset->data_ptr() : nullptr, input.size(0),
                         input.size(1), input.size(2), input.size(3), k, s, out.data_ptr(),
                         to_dtype(input.scalar_type()), current_cuda_stream(input));
  return out;
}

std::tuple<Tensor, Tensor> backward(const Tensor& grad_in, const Tensor& rois_in, const std::optional<Tensor>& input_in,
                                    const std::optional<Tensor>& offset_in, int64_t n, int64_t c, int64_t h, int64_t w,
                                    const RoiPoolSpec& s) {
  const int64_t k = rois_in.size(0);
  torch::stable::accelerator::DeviceGuard guard(grad_in.get_device_index());
  const ScalarType dt = grad_in.scalar_type();
  const Tensor grad = torch::stable::contiguous(grad_in);
  const Tensor rois = torch::stable::contiguous(rois_in);
  std::optional<Tensor> input, offset;
  if (input_in) input = torch::stable::contiguous(*input_in);
  if (offset_in) offset = torch::stable::contiguous(*offset_in);
  Tensor grad_input = torch::stable::new_zeros(grad, {n, c, h, w});
  Tensor grad_offset = offset ? torch::stable::new_zeros(*offset, {k, 2, s.ph, s.pw}) : new_empty(grad, {0}, dt);
  if (h == 0 || w == 0) return std::make_tuple(grad_input, grad_offset);  // no samples reach an empty map
  TensorAllocator alloc(grad);
  cuda::roi_pool_backward(grad.data_ptr(), input ? input->data_ptr() : nullptr, rois.data_ptr(),
                          offset ? offset->data_ptr() : nullptr, n, c, h, w, k, s, grad_input.data_ptr(),
                          offset ? grad_offset.data_ptr() : nullptr, to_dtype(dt), alloc, current_cuda_stream(grad));
  return std::make_tuple(grad_input, grad_offset);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) {
  using E = RoiPoolEntries<&forward, &backward>;
  m.impl("roi_align", TORCH_BOX(&E::roi_align));
  m.impl("roi_align_backward", TORCH_BOX(&E::roi_align_backward));
  m.impl("deform_roi_pool", TORCH_BOX(&E::deform_roi_pool));
  m.impl("deform_roi_pool_backward", TORCH_BOX(&E::deform_roi_pool_backward));
}

}  // namespace sniper
