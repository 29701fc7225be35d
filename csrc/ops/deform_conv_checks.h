// Argument checks and geometry shared by the CPU and CUDA registrations of
// deform_im2col / deform_col2im.
#pragma once

#include <sniper/bilinear.h>
#include <sniper/stable_utils.h>

namespace sniper {

inline DeformGeometry deform_geometry(const Tensor& input, const Tensor& offset,
                                      const std::optional<Tensor>& mask, int64_t kh, int64_t kw,
                                      int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                      int64_t dw, int64_t og, const char* op) {
  STD_TORCH_CHECK(input.dim() == 4, op, ": `input` must have shape [N, C, H, W]");
  STD_TORCH_CHECK(is_floating(input.scalar_type()), op, ": `input` must be a floating tensor");
  STD_TORCH_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && dh > 0 && dw > 0 && ph >= 0 && pw >= 0, op,
                  ": kernel size, stride and dilation must be > 0 and padding >= 0");
  STD_TORCH_CHECK(og > 0 && input.size(1) % og == 0, op, ": `offset_groups` (", og,
                  ") must divide the input channels (", input.size(1), ")");
  DeformGeometry g{input.size(1), input.size(2), input.size(3), kh, kw, sh, sw, ph, pw, dh, dw, og, 0, 0};
  g.out_h = (g.height + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1;
  g.out_w = (g.width + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
  STD_TORCH_CHECK(g.out_h > 0 && g.out_w > 0, op, ": the output would be empty (input ", g.height, "x",
                  g.width, " too small for the kernel)");
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

}  // namespace sniper
