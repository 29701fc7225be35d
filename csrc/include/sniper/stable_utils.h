// Helpers for op registration code written against the LibTorch stable ABI.
// Included only from C++ (never from .cu files): argument checks that raise
// clear errors, floating-point dtype dispatch, and small tensor factories.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dtype.h"

namespace sniper {

using torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Double:
      return "float64";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Long:
      return "int64";
    case ScalarType::Int:
      return "int32";
    case ScalarType::Bool:
      return "bool";
    case ScalarType::Byte:
      return "uint8";
    case ScalarType::Char:
      return "int8";
    default:
      return "an unsupported dtype";
  }
}

inline bool is_floating(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}

// Floating dtype code shared with the CUDA launchers (which see no torch).
inline Dtype to_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
      return Dtype::kFloat32;
    case ScalarType::Double:
      return Dtype::kFloat64;
    case ScalarType::Half:
      return Dtype::kFloat16;
    case ScalarType::BFloat16:
      return Dtype::kBFloat16;
    default:
      STD_TORCH_CHECK(false, "expected a floating dtype, got ", dtype_name(t));
  }
  return Dtype::kFloat32;
}

// A required Tensor argument given None arrives as an undefined tensor.
inline void check_defined(const Tensor& t, const char* op, const char* name) {
  STD_TORCH_CHECK(t.defined(), op, ": `", name, "` must be a tensor, got None");
}

inline void check_boxes(const Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  STD_TORCH_CHECK(t.dim() == 2 && t.size(1) == 4, op, ": `", name, "` must have shape [N, 4], got a ", t.dim(),
                  "-d tensor");
  STD_TORCH_CHECK(is_floating(t.scalar_type()), op, ": `", name, "` must be a floating tensor, got ",
                  dtype_name(t.scalar_type()));
}

inline void check_1d(const Tensor& t, int64_t n, const char* op, const char* name) {
  check_defined(t, op, name);
  STD_TORCH_CHECK(t.dim() == 1 && t.size(0) == n, op, ": `", name, "` must have shape [", n, "] (one per box)");
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op, const char* name_a,
                              const char* name_b) {
  check_defined(a, op, name_a);
  check_defined(b, op, name_b);
  STD_TORCH_CHECK(a.get_device() == b.get_device() && a.is_cuda() == b.is_cuda(), op, ": `", name_a, "` and `", name_b,
                  "` must be on the same device");
}

inline void check_threshold(double v, const char* op, const char* name) {
  STD_TORCH_CHECK(v >= 0.0, op, ": `", name, "` must be >= 0, got ", v);
}

inline Tensor new_empty(const Tensor& like, std::vector<int64_t> sizes, ScalarType dtype) {
  return torch::stable::empty(sizes, dtype, std::nullopt, like.device());
}

// The most elements one output (or working buffer) of an op may have: 2^40
// (sniper_ext.ops._checks.MAX_ELEMENTS). Larger sizes fail up front with a
// clear error instead of an opaque allocation failure or an overflow.
constexpr int64_t kMaxElements = int64_t(1) << 40;

// Raises "<op>: <what> would have X elements ([a, b, ...]), more than ..."
// when the product of `sizes` (sizes of 0 counted as 1) exceeds kMaxElements (computed in double, so
// it cannot overflow).
inline void check_numel(std::initializer_list<int64_t> sizes, const char* op, const char* what) {
  // Sizes of 0 count as 1: a tensor with no elements but huge other sizes
  // would still overflow torch's stride arithmetic.
  double n = 1.0;
  for (int64_t s : sizes) n *= double(s > 1 ? s : 1);
  if (n <= double(kMaxElements)) return;
  std::string shape;
  for (int64_t s : sizes) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
  STD_TORCH_CHECK(false, op, ": ", what, " would have ", n, " elements ([", shape,
                  "]), more than the 2^40 an op may allocate");
}

// new_empty for an output whose size comes from the arguments: checked
// against kMaxElements, and an allocation failure names the op and the size.
inline Tensor new_output(const Tensor& like, std::initializer_list<int64_t> sizes, ScalarType dtype, const char* op,
                         const char* what) {
  check_numel(sizes, op, what);
  try {
    return torch::stable::empty(std::vector<int64_t>(sizes), dtype, std::nullopt, like.device());
  } catch (const std::exception& e) {
    int64_t n = 1;  // <= kMaxElements: checked above
    for (int64_t s : sizes) n *= s;
    throw std::runtime_error(std::string(op) + ": could not allocate " + what + " (" + std::to_string(n) +
                             " elements of " + dtype_name(dtype) + "): " + e.what());
  }
}

// A contiguous tensor of the given dtype (a no-op when it already is one).
inline Tensor contiguous_as(const Tensor& t, ScalarType dtype) {
  Tensor out = t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
  return torch::stable::contiguous(out);
}

// Group ids as contiguous int64 (accepts any integer dtype).
inline Tensor group_ids(const Tensor& idxs, int64_t n, const char* op) {
  check_1d(idxs, n, op, "idxs");
  const ScalarType t = idxs.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Long || t == ScalarType::Int || t == ScalarType::Short || t == ScalarType::Char ||
                      t == ScalarType::Byte,
                  op, ": `idxs` must be an integer tensor, got ", dtype_name(t));
  return contiguous_as(idxs, ScalarType::Long);
}

// Accumulation type: half types compute in float, double stays double.
template <typename T>
struct acc {
  using type = float;
};
template <>
struct acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename acc<T>::type;

}  // namespace sniper

// Runs the lambda body with `scalar_t` bound to the tensor's floating type.
#define SNIPER_DISPATCH_FLOATING(STYPE, OP, ...)                                         \
  [&] {                                                                                  \
    switch (STYPE) {                                                                     \
      case ::sniper::ScalarType::Float: {                                                \
        using scalar_t = float;                                                          \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      case ::sniper::ScalarType::Double: {                                               \
        using scalar_t = double;                                                         \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      case ::sniper::ScalarType::Half: {                                                 \
        using scalar_t = ::c10::Half;                                                    \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      case ::sniper::ScalarType::BFloat16: {                                             \
        using scalar_t = ::c10::BFloat16;                                                \
        return __VA_ARGS__();                                                            \
      }                                                                                  \
      default:                                                                           \
        STD_TORCH_CHECK(false, OP, ": unsupported dtype ", ::sniper::dtype_name(STYPE)); \
    }                                                                                    \
  }()
