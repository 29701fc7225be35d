// Argument checks and the schema entry point of sniper::focus_chips (FocusChipsEntries), shared by
// the CPU and CUDA registrations; the backends' kernel:
//   focus_chips(prob [B, H, W], sizes [B, 2] int64, host_sizes, threshold, dilation, min_size,
//               total_cells, out [bound, 5] int64) -> count
// with contiguous prob and sizes on one device, host_sizes the same sizes in host memory (checked:
// 0 <= h <= H, 0 <= w <= W), total_cells = sum of h * w, and bound = sum of focus_max_chips(h, w) > 0;
// it writes the chips, sorted, to rows [0, count) of out.
#pragma once

#include <sniper/focus_rules.h>
#include <sniper/stable_utils.h>

#include <cmath>
#include <string>

#include "op_entry.h"

namespace sniper {

inline std::string focus_shape(const Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

inline void check_focus_chips_args(const Tensor& prob, const Tensor& sizes, double threshold, int64_t dilation,
                                   int64_t min_size) {
  const char* op = "focus_chips";
  check_defined(prob, op, "prob");
  check_defined(sizes, op, "sizes");
  STD_TORCH_CHECK(prob.dim() == 3, op, ": `prob` must have shape [B, H, W] (a batch of probability maps), got ",
                  focus_shape(prob));
  STD_TORCH_CHECK(is_floating(prob.scalar_type()), op,
                  ": `prob` must be a floating tensor (float32, float64, float16 or bfloat16), got ",
                  dtype_name(prob.scalar_type()));
  const int64_t b = prob.size(0), h = prob.size(1), w = prob.size(2);
  STD_TORCH_CHECK(sizes.dim() == 2 && sizes.size(0) == b && sizes.size(1) == 2, op, ": `sizes` must have shape [", b,
                  ", 2] (valid height and width of each map), got ", focus_shape(sizes));
  STD_TORCH_CHECK(sizes.scalar_type() == ScalarType::Long, op, ": `sizes` must be int64, got ",
                  dtype_name(sizes.scalar_type()));
  check_same_device(prob, sizes, op, "prob", "sizes");
  STD_TORCH_CHECK(std::isfinite(threshold), op, ": `threshold` must be finite, got ", threshold);
  STD_TORCH_CHECK(dilation >= 1, op, ": `dilation` must be >= 1, got ", dilation);
  STD_TORCH_CHECK(min_size >= 1, op, ": `min_size` must be >= 1, got ", min_size);
  STD_TORCH_CHECK(h <= kFocusMaxCells && w <= kFocusMaxCells && h * w <= kFocusMaxCells, op,
                  ": `prob` maps must have at most 2^31-1 cells (H * W), got ", h, " x ", w);
  check_numel({b, h, w}, op, "`prob`");
}

// `sizes` on the host (one small copy, and one sync, for CUDA), each row checked.
inline Tensor checked_focus_sizes(const Tensor& sizes, int64_t h, int64_t w) {
  const char* op = "focus_chips";
  Tensor host = torch::stable::contiguous(sizes);
  if (host.is_cuda()) host = torch::stable::to(host, torch::stable::Device(torch::headeronly::DeviceType::CPU));
  const int64_t* s = host.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < host.size(0); ++b) {
    STD_TORCH_CHECK(s[2 * b] >= 0 && s[2 * b] <= h && s[2 * b + 1] >= 0 && s[2 * b + 1] <= w, op, ": `sizes`[", b,
                    "] must lie in [0, ", h, "] x [0, ", w, "] (valid height and width within the map), got (",
                    s[2 * b], ", ", s[2 * b + 1], ")");
  }
  return host;
}

template <typename B>
struct FocusChipsEntries {
  static Tensor focus_chips(Tensor prob, Tensor sizes, double threshold, int64_t dilation, int64_t min_size) {
    const char* op = "focus_chips";
    check_focus_chips_args(prob, sizes, threshold, dilation, min_size);
    typename B::Guard guard(prob);
    const Tensor host_sizes = checked_focus_sizes(sizes, prob.size(1), prob.size(2));
    const int64_t* hs = host_sizes.const_data_ptr<int64_t>();
    // Chips of different maps are not 8-adjacent within a map: at most focus_max_chips(h, w) each.
    int64_t bound = 0, cells = 0;
    for (int64_t b = 0; b < host_sizes.size(0); ++b) {
      bound += focus_max_chips(hs[2 * b], hs[2 * b + 1]);
      cells += hs[2 * b] * hs[2 * b + 1];
    }
    Tensor out = new_output(prob, {bound, 5}, ScalarType::Long, op, "the chips (an upper bound of their number)");
    if (bound == 0) return out;
    const int64_t count = B::focus_chips(torch::stable::contiguous(prob), torch::stable::contiguous(sizes), hs,
                                         threshold, dilation, min_size, cells, out);
    return first_n(out, count);
  }
};

template <typename B>
void register_focus_chips(OpLibrary& m) {
  m.impl("focus_chips", TORCH_BOX(&FocusChipsEntries<B>::focus_chips));
}

}  // namespace sniper
