// Marks a function usable from both host (CPU) and device (CUDA) code.
// Everything included from both sides must be free of torch headers.
#pragma once

#if defined(__CUDACC__)
#define SNIPER_HD __host__ __device__ __forceinline__
#else
#define SNIPER_HD inline
#endif

#include <math.h>
#include <string.h>

namespace sniper {

template <typename T>
SNIPER_HD T min_(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
SNIPER_HD T max_(T a, T b) {
  return a < b ? b : a;
}

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

// Sums, differences and quotients rounded on their own (the CUDA intrinsics
// are never contracted with a neighbouring product).
SNIPER_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
SNIPER_HD double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
SNIPER_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

namespace detail {

// 2^k for k in [-1022, 1023], built from its bits (exact).
SNIPER_HD double pow2i(int k) {
  const unsigned long long bits = static_cast<unsigned long long>(k + 1023) << 52;
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
#endif
}

}  // namespace detail

// exp() of the accumulation types, the same bits on CPU and CUDA: only
// correctly rounded IEEE operations, each rounded on its own (no FMA), in
// fdlibm's scheme (range reduction by ln2, rational approximation). Double:
// within 1 ulp (0.89 measured); float: the double result rounded once,
// correctly rounded on every float checked. Derivation and measurements:
// docs/kernels.md, "exp_".
SNIPER_HD double exp_(double x) {
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // 0x3fe62e42fee00000
  constexpr double kLn2Lo = 1.90821492927058770002e-10;  // 0x3dea39ef35793c76
  constexpr double kInvLn2 = 1.44269504088896338700e+00;
  constexpr double kP1 = 1.66666666666666019037e-01;
  constexpr double kP2 = -2.77777777770155933842e-03;
  constexpr double kP3 = 6.61375632143793436117e-05;
  constexpr double kP4 = -1.65339022054652515390e-06;
  constexpr double kP5 = 4.13813679705723846039e-08;
  if (!(x == x)) return x;                              // NaN
  if (x > 7.09782712893383973096e+02) return HUGE_VAL;  // overflow
  if (x < -7.45133219101941108420e+02) return 0.0;      // below half the least subnormal
  const double ax = x < 0.0 ? -x : x;
  if (ax < 3.7252902984619140625e-09) return add_rn(1.0, x);  // |x| < 2^-28: 1 + x is exact enough
  int k = 0;
  double hi = x, lo = 0.0;
  if (ax > 0.5 * 6.93147180559945286227e-01) {
    k = static_cast<int>(add_rn(mul_rn(x, kInvLn2), x < 0.0 ? -0.5 : 0.5));  // round(x / ln2)
    const double kd = static_cast<double>(k);
    hi = sub_rn(x, mul_rn(kd, kLn2Hi));  // exact
    lo = mul_rn(kd, kLn2Lo);
  }
  const double r = sub_rn(hi, lo);
  const double t = mul_rn(r, r);
  double p = add_rn(kP4, mul_rn(t, kP5));
  p = add_rn(kP3, mul_rn(t, p));
  p = add_rn(kP2, mul_rn(t, p));
  p = add_rn(kP1, mul_rn(t, p));
  const double c = sub_rn(r, mul_rn(t, p));
  const double q = div_rn(mul_rn(r, c), sub_rn(2.0, c));
  const double y = sub_rn(1.0, sub_rn(sub_rn(lo, q), hi));
  if (k == 0) return y;
  const int k1 = k / 2;  // |k| <= 1075: both halves are normal powers of two
  return mul_rn(mul_rn(y, detail::pow2i(k1)), detail::pow2i(k - k1));
}

SNIPER_HD float exp_(float x) { return static_cast<float>(exp_(static_cast<double>(x))); }

}  // namespace sniper
