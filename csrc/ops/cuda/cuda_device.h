// The two things CUDA registration code takes from torch's CUDA side: a device guard and the
// current stream. The cuda_sim test harness compiles the registrations with its own version of
// this header (python_tests/cuda_sim/include/sim_cuda_device.h), which runs them on the CPU.
#pragma once

#include <torch/csrc/stable/accelerator.h>

#include <sniper/stable_utils.h>

namespace sniper {

// Makes the tensor's device current for the lifetime of the guard.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(const Tensor& t) : guard_(t.get_device_index()) {}

 private:
  torch::stable::accelerator::DeviceGuard guard_;
};

// The stream torch is using on `t`'s device. Resolved at run time from the
// libtorch_cuda that torch has already loaded (see cuda_stream.cpp), so this
// library links no torch CUDA library and the same build loads under any CUDA
// torch of the same CUDA major version.
void* current_cuda_stream(const Tensor& t);

}  // namespace sniper
