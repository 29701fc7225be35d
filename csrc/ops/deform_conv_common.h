// Argument checks, geometry and the schema entry points of sniper::deform_im2col and
// sniper::deform_col2im (DeformConvEntries), shared by the CPU and CUDA registrations; the
// backends' kernels, for n > 0 samples with channels and pixels, contiguous inputs:
//   deform_im2col(input, offset, mask, geometry, columns)            writes every column
//   deform_col2im(grad_columns, input, offset, mask, geometry, deterministic,
//                 grad_input, grad_offset, grad_mask)                 writes every gradient
// (mask nullopt without a mask; grad_mask is then an empty tensor).
#pragma once

#include <sniper/bilinear.h>
#include <sniper/stable_utils.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "op_entry.h"

namespace sniper {

// Kernel sizes, strides, paddings, dilations and offset groups must be below
// 2^31 (as in sniper_ext.ops.deform_conv), so no geometry arithmetic overflows.
constexpr int64_t kMaxGeometry = int64_t(1) << 31;

inline void check_geometry_arg(int64_t v, int64_t lo, const char* op, const char* name) {
  STD_TORCH_CHECK(lo <= v && v < kMaxGeometry, op, ": `", name, "` must be in [", lo, ", 2^31), got ", v);
}

inline DeformGeometry deform_geometry(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                                      int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                      int64_t dh, int64_t dw, int64_t og, const char* op) {
  check_defined(input, op, "input");
  check_defined(offset, op, "offset");
  if (mask.has_value()) check_defined(*mask, op, "mask");
  STD_TORCH_CHECK(input.dim() == 4, op, ": `input` must have shape [N, C, H, W], got a ", input.dim(), "-d tensor");
  STD_TORCH_CHECK(is_floating(input.scalar_type()), op, ": `input` must be a floating tensor, got ",
                  dtype_name(input.scalar_type()));
  check_geometry_arg(kh, 1, op, "kernel_h");
  check_geometry_arg(kw, 1, op, "kernel_w");
  check_geometry_arg(sh, 1, op, "stride_h");
  check_geometry_arg(sw, 1, op, "stride_w");
  check_geometry_arg(ph, 0, op, "pad_h");
  check_geometry_arg(pw, 0, op, "pad_w");
  check_geometry_arg(dh, 1, op, "dilation_h");
  check_geometry_arg(dw, 1, op, "dilation_w");
  check_geometry_arg(og, 1, op, "offset_groups");
  STD_TORCH_CHECK(input.size(1) % og == 0, op, ": `offset_groups` (", og, ") must divide the input channels (",
                  input.size(1), ")");
  DeformGeometry g{input.size(1), input.size(2), input.size(3), kh, kw, sh, sw, ph, pw, dh, dw, og, 0, 0};
  g.out_h = (g.height + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1;
  g.out_w = (g.width + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
  STD_TORCH_CHECK(g.out_h > 0 && g.out_w > 0, op, ": the output would be empty (input ", g.height, "x", g.width,
                  " too small for the kernel)");
  // Columns [N, C*kh*kw, OH*OW] and offsets [N, 2*og*kh*kw, OH, OW] (also the
  // sizes every product below is formed from).
  check_numel({std::max<int64_t>(input.size(0), 1), std::max<int64_t>(g.channels, 2 * og), kh * kw, g.out_h, g.out_w},
              op, "the columns");
  const int64_t n = input.size(0);
  STD_TORCH_CHECK(offset.dim() == 4 && offset.size(0) == n && offset.size(1) == 2 * og * kh * kw &&
                      offset.size(2) == g.out_h && offset.size(3) == g.out_w,
                  op, ": `offset` must have shape [", n, ", ", 2 * og * kh * kw, ", ", g.out_h, ", ", g.out_w, "]");
  STD_TORCH_CHECK(offset.scalar_type() == input.scalar_type(), op, ": `offset` must have the dtype of `input`");
  check_same_device(input, offset, op, "input", "offset");
  if (mask.has_value()) {
    const Tensor& m = *mask;
    STD_TORCH_CHECK(
        m.dim() == 4 && m.size(0) == n && m.size(1) == og * kh * kw && m.size(2) == g.out_h && m.size(3) == g.out_w, op,
        ": `mask` must have shape [", n, ", ", og * kh * kw, ", ", g.out_h, ", ", g.out_w, "]");
    STD_TORCH_CHECK(m.scalar_type() == input.scalar_type(), op, ": `mask` must have the dtype of `input`");
    check_same_device(input, m, op, "input", "mask");
  }
  return g;
}

// deform_geometry plus the checks of `grad_columns` (deform_col2im).
inline DeformGeometry deform_col2im_geometry(const Tensor& grad_columns, const Tensor& input, const Tensor& offset,
                                             const std::optional<Tensor>& mask, int64_t kh, int64_t kw, int64_t sh,
                                             int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t og) {
  const char* op = "deform_col2im";
  check_defined(grad_columns, op, "grad_columns");
  const DeformGeometry g = deform_geometry(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og, op);
  const int64_t n = input.size(0), rows = g.channels * g.taps(), L = g.positions();
  STD_TORCH_CHECK(
      grad_columns.dim() == 3 && grad_columns.size(0) == n && grad_columns.size(1) == rows && grad_columns.size(2) == L,
      op, ": `grad_columns` must have shape [", n, ", ", rows, ", ", L, "]");
  STD_TORCH_CHECK(is_floating(grad_columns.scalar_type()), op, ": `grad_columns` must be a floating tensor, got ",
                  dtype_name(grad_columns.scalar_type()));
  check_same_device(input, grad_columns, op, "input", "grad_columns");
  // The CPU kernel's tap table holds 32-bit pixel offsets; both devices take
  // the same inputs.
  STD_TORCH_CHECK(g.height * g.width < (int64_t(1) << 31), op, ": an input plane must have < 2^31 pixels, got ",
                  g.height, "x", g.width);
  return g;
}

// True when deformable sampling has nothing to read or write: no sample, no
// channel, or an input plane without pixels (every sample is then 0).
inline bool deform_no_work(const DeformGeometry& g, int64_t n) {
  return n == 0 || g.channels == 0 || g.height == 0 || g.width == 0;
}

// The gradients deform_col2im returns (input, offset, mask; mask an empty
// tensor without a mask), in the dtype of `input`. Zero-filled when there is
// nothing to compute (no sample or no channel: the offset and mask gradients
// are then 0), otherwise left for the kernels, which write every element.
inline std::tuple<Tensor, Tensor, Tensor> deform_col2im_outputs(const Tensor& input, const std::optional<Tensor>& mask,
                                                                const DeformGeometry& g) {
  const int64_t n = input.size(0), K = g.taps();
  const ScalarType dt = input.scalar_type();
  const bool zero = deform_no_work(g, n);
  auto make = [&](std::vector<int64_t> sizes) {
    return zero ? torch::stable::new_zeros(input, sizes) : new_empty(input, sizes, dt);
  };
  Tensor grad_input = make({n, g.channels, g.height, g.width});
  Tensor grad_offset = make({n, 2 * g.offset_groups * K, g.out_h, g.out_w});
  Tensor grad_mask = mask.has_value() ? make({n, g.offset_groups * K, g.out_h, g.out_w}) : new_empty(input, {0}, dt);
  return std::make_tuple(grad_input, grad_offset, grad_mask);
}

template <typename B>
struct DeformConvEntries {
  static Tensor deform_im2col(Tensor input, Tensor offset, std::optional<Tensor> mask, int64_t kh, int64_t kw,
                              int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t og) {
    const char* op = "deform_im2col";
    const DeformGeometry g = deform_geometry(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og, op);
    typename B::Guard guard(input);
    const int64_t n = input.size(0);
    Tensor cols = new_output(input, {n, g.channels * g.taps(), g.positions()}, input.scalar_type(), op, "the columns");
    if (n == 0 || g.channels == 0) return cols;
    if (g.height == 0 || g.width == 0) return torch::stable::zero_(cols);  // no pixel: every sample is 0
    B::deform_im2col(torch::stable::contiguous(input), torch::stable::contiguous(offset), contiguous_opt(mask), g,
                     cols);
    return cols;
  }

  static std::tuple<Tensor, Tensor, Tensor> deform_col2im(Tensor grad_columns, Tensor input, Tensor offset,
                                                          std::optional<Tensor> mask, int64_t kh, int64_t kw,
                                                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                                          int64_t dw, int64_t og, bool deterministic) {
    const DeformGeometry g =
        deform_col2im_geometry(grad_columns, input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, og);
    typename B::Guard guard(input);
    auto grads = deform_col2im_outputs(input, mask, g);
    if (deform_no_work(g, input.size(0))) return grads;
    B::deform_col2im(contiguous_as(grad_columns, input.scalar_type()), torch::stable::contiguous(input),
                     torch::stable::contiguous(offset), contiguous_opt(mask), g, deterministic, std::get<0>(grads),
                     std::get<1>(grads), std::get<2>(grads));
    return grads;
  }
};

template <typename B>
void register_deform_conv(OpLibrary& m) {
  m.impl("deform_im2col", TORCH_BOX(&DeformConvEntries<B>::deform_im2col));
  m.impl("deform_col2im", TORCH_BOX(&DeformConvEntries<B>::deform_col2im));
}

}  // namespace sniper
