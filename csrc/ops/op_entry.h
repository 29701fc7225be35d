// The shape every op family's registration code has (CONTRIBUTING.md, "How to add an op"):
//
//   <family>.cpp            the schemas (m.def)
//   <family>_common.h       FooEntries<Backend>: the schema entry points, written once for both
//                           backends: argument checks, then Backend::Guard, the outputs, the
//                           empty-input return, contiguous inputs, then the backend's kernel;
//                           register_foo<Backend>(m): the m.impl list
//   cpu/<family>_cpu.cpp    struct FooCpu : CpuBackend { kernels }, and register_foo<FooCpu>
//   cuda/<family>_cuda.cpp  struct FooCuda : CudaBackend { launcher calls }, and register_foo<FooCuda>
//
// A backend's kernels get checked arguments on one device, contiguous tensors, and outputs the
// entry point allocated (of the final size, or of an upper bound when the size depends on the
// data: the kernel then returns the count, and the entry point keeps that many rows).
#pragma once

#include <torch/csrc/stable/library.h>

#include <optional>

#include <sniper/stable_utils.h>

namespace sniper {

// What STABLE_TORCH_LIBRARY_IMPL hands to a registration block.
using OpLibrary = torch::stable::detail::StableLibrary;

// The CPU needs no device guard.
struct CpuBackend {
  struct Guard {
    explicit Guard(const Tensor& /*on*/) {}
  };
};

inline std::optional<Tensor> contiguous_opt(const std::optional<Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return torch::stable::contiguous(*t);
}

// The data pointer of an optional tensor, null when absent.
inline const void* data_or_null(const std::optional<Tensor>& t) { return t ? t->data_ptr() : nullptr; }

// The first `count` rows of an output allocated for an upper bound, as a tensor of its own.
inline Tensor first_n(Tensor t, int64_t count) { return torch::stable::clone(torch::stable::narrow(t, 0, 0, count)); }

}  // namespace sniper
