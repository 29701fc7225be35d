// CUDA-side helpers: error checks, element types, dtype dispatch, grid sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include <sniper/dtype.h>

#include "launchers.h"

#define SNIPER_CUDA_CHECK(expr)                                                                                      \
  do {                                                                                                               \
    cudaError_t err_ = (expr);                                                                                       \
    if (err_ != cudaSuccess) {                                                                                       \
      throw std::runtime_error(std::string("sniper_ext CUDA error: ") + cudaGetErrorString(err_) + " at " __FILE__); \
    }                                                                                                                \
  } while (0)

namespace sniper {
namespace cuda {

// Conversions between storage types and the accumulation type.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(typename Acc<T>::type v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ double from_acc<double>(double v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Threads per block of the kernels (grid-stride loops and one-block-per-group
// kernels alike, unless a kernel says otherwise).
constexpr int kThreads = 256;

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Loads a stored element in its accumulation type (the `load` argument of the
// shared bilinear sampling code).
struct LoadAcc {
  template <typename T>
  __device__ __forceinline__ auto operator()(T v) const {
    return to_acc(v);
  }
};

// dst[0 .. count) = src converted from the accumulation type to the storage
// type (gradients accumulated in float for half types).
template <typename T, typename A>
__global__ void store_kernel(const A* src, T* dst, int64_t count) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    dst[e] = from_acc<T>(src[e]);
  }
}

// Blocks for a grid-stride loop over `n` items.
inline unsigned int blocks_for(int64_t n, int threads, int64_t cap = 65535) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned int>(b < cap ? b : cap);
}

// Typed allocation from the caller's allocator.
template <typename T>
T* take(DeviceAllocator& alloc, int64_t count) {
  return static_cast<T*>(alloc.allocate(sizeof(T) * static_cast<size_t>(count > 0 ? count : 1)));
}

inline void check_count(int64_t n, const char* op) {
  if (n > INT32_MAX) {
    throw std::runtime_error(std::string(op) + ": CUDA kernel supports at most 2^31-1 boxes");
  }
}

}  // namespace cuda
}  // namespace sniper

// Runs the lambda with `scalar_t` bound to the CUDA storage type of DTYPE.
#define SNIPER_CUDA_DISPATCH(DTYPE, ...) \
  [&] {                                  \
    switch (DTYPE) {                     \
      case ::sniper::Dtype::kFloat32: {  \
        using scalar_t = float;          \
        return __VA_ARGS__();            \
      }                                  \
      case ::sniper::Dtype::kFloat64: {  \
        using scalar_t = double;         \
        return __VA_ARGS__();            \
      }                                  \
      case ::sniper::Dtype::kFloat16: {  \
        using scalar_t = __half;         \
        return __VA_ARGS__();            \
      }                                  \
      default: {                         \
        using scalar_t = __nv_bfloat16;  \
        return __VA_ARGS__();            \
      }                                  \
    }                                    \
  }()
