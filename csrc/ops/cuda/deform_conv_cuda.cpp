// CUDA backend of sniper::deform_im2col / deform_col2im (entry points: deform_conv_common.h;
// kernels: deform_conv_kernel.cu).
#include "../deform_conv_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

struct DeformConvCuda : CudaBackend {
  static void deform_im2col(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                            const DeformGeometry& g, Tensor& cols) {
    cuda::deform_im2col(input.data_ptr(), offset.data_ptr(), data_or_null(mask), g, input.size(0), cols.data_ptr(),
                        to_dtype(input.scalar_type()), current_cuda_stream(input));
  }

  static void deform_col2im(const Tensor& gcols, const Tensor& input, const Tensor& offset,
                            const std::optional<Tensor>& mask, const DeformGeometry& g, bool deterministic,
                            Tensor& grad_input, Tensor& grad_offset, Tensor& grad_mask) {
    TensorAllocator alloc(input);
    cuda::deform_col2im(gcols.data_ptr(), input.data_ptr(), offset.data_ptr(), data_or_null(mask), g, input.size(0),
                        deterministic, grad_input.data_ptr(), grad_offset.data_ptr(),
                        mask ? grad_mask.data_ptr() : nullptr, to_dtype(input.scalar_type()), alloc,
                        current_cuda_stream(input));
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_deform_conv<DeformConvCuda>(m); }

}  // namespace sniper
