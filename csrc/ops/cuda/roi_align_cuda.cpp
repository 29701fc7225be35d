// CUDA backend of roi_align and deform_roi_pool (entry points: roi_align_common.h; kernels:
// roi_align_kernel.cu).
#include "../roi_align_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

struct RoiPoolCuda : CudaBackend {
  static void roi_pool_forward(const Tensor& input, const Tensor& rois, const std::optional<Tensor>& offset,
                               const RoiPoolSpec& s, Tensor& out) {
    cuda::roi_pool_forward(input.data_ptr(), rois.data_ptr(), data_or_null(offset), input.size(0), input.size(1),
                           input.size(2), input.size(3), rois.size(0), s, out.data_ptr(), to_dtype(input.scalar_type()),
                           current_cuda_stream(input));
  }

  static void roi_pool_backward(const Tensor& grad, const Tensor& rois, const std::optional<Tensor>& input,
                                const std::optional<Tensor>& offset, const RoiPoolSpec& s, Tensor& grad_input,
                                Tensor& grad_offset) {
    TensorAllocator alloc(grad);
    cuda::roi_pool_backward(grad.data_ptr(), data_or_null(input), rois.data_ptr(), data_or_null(offset),
                            grad_input.size(0), grad_input.size(1), grad_input.size(2), grad_input.size(3),
                            rois.size(0), s, grad_input.data_ptr(), offset ? grad_offset.data_ptr() : nullptr,
                            to_dtype(grad.scalar_type()), alloc, current_cuda_stream(grad));
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_roi_pool<RoiPoolCuda>(m); }

}  // namespace sniper
