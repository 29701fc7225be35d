// Marks a function usable from both host (CPU) and device (CUDA) code.
// Everything included from both sides must be free of torch headers.
#pragma once

#if defined(__CUDACC__)
#define SNIPER_HD __host__ __device__ __forceinline__
#else
#define SNIPER_HD inline
#endif

#include <math.h>

namespace sniper {

template <typename T>
SNIPER_HD T min_(T a, T b) { return b < a ? b : a; }

template <typename T>
SNIPER_HD T max_(T a, T b) { return a < b ? b : a; }

// Products rounded on their own: never fused into an FMA, so CPU and CUDA
// kernels round box areas and intersections identically.
SNIPER_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SNIPER_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// exp() of the accumulation types: float stays float on both sides.
SNIPER_HD float exp_(float x) { return expf(x); }
SNIPER_HD double exp_(double x) { return exp(x); }

}  // namespace sniper
