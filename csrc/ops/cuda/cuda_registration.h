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

inline void* current_cuda_stream(const Tensor& t) {
  void* stream = nullptr;
  STD_TORCH_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream) ==
                      AOTI_TORCH_SUCCESS,
                  "sniper_ext: could not get the current CUDA stream");
  return stream;
}

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
inline Tensor first_n(Tensor t, int64_t count) {
  return torch::stable::clone(torch::stable::narrow(t, 0, 0, count));
}

}  // namespace sniper
