// The harness's stand-in for csrc/ops/cuda/cuda_device.h (build.py puts it in the place of that
// header when it compiles the CUDA registrations, csrc/ops/cuda/*_cuda.cpp): the registrations
// then run on CPU tensors, whose memory the simulated kernels read and write.
#pragma once

#include <sniper/stable_utils.h>

namespace sniper {

// There is one (simulated) device: the guard only checks that the call is on it.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(const Tensor& t) {
    STD_TORCH_CHECK(t.is_cpu(), "cuda_sim: the registrations run on CPU tensors");
  }
};

// The harness's streams are synchronous; the launchers ignore the stream.
inline void* current_cuda_stream(const Tensor& /*t*/) { return nullptr; }

}  // namespace sniper
