// Glue between stable-ABI registration code and the CUDA launchers: the CUDA
// backend of the entry points (op_entry.h) and device temporaries taken from
// torch's caching allocator. Compiled by the host compiler (no CUDA headers).
#pragma once

#include <vector>

#include <sniper/stable_utils.h>

#include "../op_entry.h"
#include "cuda_device.h"
#include "launchers.h"

namespace sniper {

// The base of every family's CUDA backend: the entry points hold a device
// guard on the call's device while they allocate and launch.
struct CudaBackend {
  using Guard = CudaDeviceGuard;
};

// Temporaries live in uint8 tensors held until the allocator goes away.
class TensorAllocator final : public cuda::DeviceAllocator {
 public:
  explicit TensorAllocator(const Tensor& like) : like_(like) {}
  void* allocate(size_t bytes) override {
    const int64_t size = static_cast<int64_t>(bytes > 0 ? bytes : 1);
    held_.push_back(new_empty(like_, {size}, ScalarType::Byte));
    return held_.back().mutable_data_ptr();
  }

 private:
  Tensor like_;
  std::vector<Tensor> held_;
};

}  // namespace sniper
