// The current CUDA stream of torch, looked up without linking libtorch_cuda.
//
// torch loads libtorch_cuda.so privately (RTLD_LOCAL), so a symbol of it that
// this library left undefined would not resolve when the library is loaded,
// and linking it by name fails when the library is built against a CPU-only
// torch (FORCE_CUDA=1). Instead the function is found once, at first use, in
// the copy torch has already loaded.
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#include "cuda_device.h"

namespace sniper {
namespace {

using GetStream = AOTITorchError (*)(int32_t device_index, void** ret_stream);

GetStream resolve_get_stream(const char** error) {
  void* lib = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) {
    *error = "libtorch_cuda.so is not loaded: this torch has no CUDA support";
    return nullptr;
  }
  void* fn = dlsym(lib, "aoti_torch_get_current_cuda_stream");
  if (fn == nullptr) {
    *error = "libtorch_cuda.so has no aoti_torch_get_current_cuda_stream (torch too old?)";
    return nullptr;
  }
  return reinterpret_cast<GetStream>(fn);
}

}  // namespace

void* current_cuda_stream(const Tensor& t) {
  static const char* error = nullptr;
  static const GetStream get_stream = resolve_get_stream(&error);
  STD_TORCH_CHECK(get_stream != nullptr, "sniper_ext: cannot find torch's current CUDA stream: ", error);
  void* stream = nullptr;
  STD_TORCH_CHECK(get_stream(t.get_device_index(), &stream) == AOTI_TORCH_SUCCESS,
                  "sniper_ext: could not get the current CUDA stream");
  return stream;
}

}  // namespace sniper
