// Argument checks and geometry shared by the CPU and CUDA registrations of
// deform_im2col / deform_col2im.
#pragma once

#include <sniper/bilinear.h>
#include <sniper/stable_utils.h>

#include <algorithm>

namespace sniper {

// Kernel sizes, strides, paddings, dilations and offset groups must be below
// 2^31 (as in sniper_ext.ops.deform_conv), so no geometry arithmetic overflows.
constexpr int64_t kMaxGeometry = int64_t(1) << 31;

inline void check_geometry_arg(int64_t v, int64_t lo, const char* op, const char* name) {
  STD_TORCH_CHECK(lo <= v && v < kMaxGeometry, op, ": `", name, "` must be in [", lo, ", 2^31), got ", v);
}

inline DeformGeometry deform_geometry(const Tensor& input, const Tensor& offset,
                                      const std::optional<Tensor>& mask, int64_t kh, int64_t kw,
                                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                      int64_t dw, int64_t og, const char* op) {
  check_defined(input, op, "input");
  check_defined(offset, op, "offset");
  if (mask.has_value()) check_defined(*mask, op, "mask");
  STD_TORCH_CHECK(input.dim() == 4, op, ": `input` must have shape [N, C, H, W], got a ", input.dim(),
                  "-d tensor");
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
  STD_TORCH_CHECK(input.size(1) % og == 0, op, ": `offset_groups` (", og,
                  ") must divide the input channels (", input.size(1), ")");
  DeformGeometry g{input.size(1), input.size(2), input.size(3), kh, kw, sh, sw, ph, pw, dh, dw, og, 0, 0};
  g.out_h = (g.height + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1;
  g.out_w = (g.width + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
  STD_TORCH_CHECK(g.out_h > 0 && g.out_w > 0, op, ": the output would be empty (input ", g.height, "x",
                  g.width, " too small for the kernel)");
  // Columns [N, C*kh*kw, OH*OW] and offsets [N, 2*og*kh*kw, OH, OW] (also the
  // sizes every product below is formed from).
  check_numel({std::max<int64_t>(input.size(0), 1), std::max<int64_t>(g.channels, 2 * og), kh * kw,
               g.out_h, g.out_w},
              op, "the columns");
  const int64_t n = input.size(0);
  STD_TORCH_CHECK(offset.dim() == 4 && offset.size(0) == n && offset.size(1) == 2 * og * kh * kw &&
                      offset.size(2) == g.out_h && offset.size(3) == g.out_w,
                  op, ": `offset` must have shape [", n, ", ", 2 * og * kh * kw, ", ", g.out_h, ", ",
                  g.out_w, "]");
  STD_TORCH_CHECK(offset.scalar_type() == input.scalar_type(), op,
                  ": `offset` must have the dtype of `input`");
  check_same_device(input, offset, op, "input", "offset");
  if (mask.has_value()) {
    const Tensor& m = *mask;
    STD_TORCH_CHECK(m.dim() == 4 && m.size(0) == n && m.size(1) == og * kh * kw && m.size(2) == g.out_h &&
                        m.size(3) == g.out_w,
                    op, ": `mask` must have shape [", n, ", ", og * kh * kw, ", ", g.out_h, ", ", g.out_w, "]");
    STD_TORCH_CHECK(m.scalar_type() == input.scalar_type(), op, ": `mask` must have the dtype of `input`");
    check_same_device(input, m, op, "input", "mask");
  }
  return g;
}

// grad_columns of deform_col2im: [N, C*kh*kw, OH*OW], the device of `input`
// (any floating dtype; it is converted to the input's).
inline void check_grad_columns(const Tensor& grad, const Tensor& input, const DeformGeometry& g,
                               const char* op) {
  check_defined(grad, op, "grad_columns");
  const int64_t n = input.size(0);
  STD_TORCH_CHECK(grad.dim() == 3 && grad.size(0) == n && grad.size(1) == g.channels * g.taps() &&
                      grad.size(2) == g.positions(),
                  op, ": `grad_columns` must have shape [", n, ", ", g.channels * g.taps(), ", ",
                  g.positions(), "]");
  STD_TORCH_CHECK(is_floating(grad.scalar_type()), op, ": `grad_columns` must be a floating tensor, got ",
                  dtype_name(grad.scalar_type()));
  check_same_device(input, grad, op, "input", "grad_columns");
}

}  // namespace sniper
