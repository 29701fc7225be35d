// CUDA backend of sniper::box_iou (entry point: box_iou_common.h; kernel: box_iou_kernel.cu).
#include "../box_iou_common.h"
#include "cuda_registration.h"

namespace sniper {
namespace {

struct BoxIouCuda : CudaBackend {
  static void box_iou(const Tensor& a, const Tensor& b, Tensor& out) {
    cuda::box_iou(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.size(0), b.size(0), to_dtype(a.scalar_type()),
                  current_cuda_stream(a));
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CUDA, m) { register_box_iou<BoxIouCuda>(m); }

}  // namespace sniper
