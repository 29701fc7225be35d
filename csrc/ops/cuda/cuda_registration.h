// Glue between stable-ABI registration code and the CUDA launchers: the
// current CUDA stream, a device guard, and device temporaries taken from
// torch's caching allocator. Compiled by the host compiler (no CUDA headers).
#pragma once

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include <vector>

#include <sniper/stable_utils.h>

#include "launchers.h"

namespace sniper {

// The stream torch is using on `t`'s device. Resolved at run time from the
// libtorch_cuda that torch has already loaded (see cuda_stream.cpp), so this
// library links no torch CUDA library and the same build loads under any CUDA
// torch of the same CUDA major version.
void* current_cuda_stream(const Tensor& t);

inline void check_cuda(const Tensor& t, const char* op, const char* name) {
  STD_TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be a CUDA tensor");
}

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

// The first `count` entries of a freshly made 1-d tensor, as its own tensor.
inline Tensor first_n(Tensor t, int64_t count) { return torch::stable::clone(torch::stable::narrow(t, 0, 0, count)); }

}  // namespace sniper
