// Argument checks and the schema entry points of roi_align and deform_roi_pool and their backward
// ops (RoiPoolEntries), shared by the CPU and CUDA registrations; the backends' kernels, for
// K > 0 RoIs, C > 0 channels and a non-empty feature map, contiguous inputs:
//   roi_pool_forward(input, rois, offset, spec, out [K, C, ph, pw])             writes every bin
//   roi_pool_backward(grad, rois, input, offset, spec, grad_input, grad_offset) adds into the
//     zero-filled gradients (grad_input [N, C, H, W]; grad_offset [K, 2, ph, pw] with an offset).
// Everything a kernel relies on for memory safety is checked here, once, for both backends (the
// raw torch.ops.sniper ops skip the Python checks): shapes, dtypes and devices, finite scalars,
// and the RoIs themselves (batch indices, finite coordinates, a bounded number of samples per
// RoI), read on the host (one small device-to-host copy and sync for CUDA tensors).
#pragma once

#include <cmath>

#include <sniper/bilinear.h>
#include <sniper/stable_utils.h>

#include "op_entry.h"

namespace sniper {

// `features` is the input (forward) or the output gradient (backward), named `name`.
inline void check_roi_pool_args(const Tensor& features, const char* name, const Tensor& rois,
                                const std::optional<Tensor>& offset, const RoiPoolSpec& s, const char* op) {
  check_defined(rois, op, "rois");
  if (offset) check_defined(*offset, op, "offset");
  STD_TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
                  ": `rois` must have shape [K, 5] (batch index, x1, y1, x2, y2)");
  STD_TORCH_CHECK(rois.scalar_type() == features.scalar_type(), op, ": `rois` must have the dtype of `", name, "`");
  check_same_device(features, rois, op, name, "rois");
  STD_TORCH_CHECK(s.ph > 0 && s.pw > 0, op, ": output size must be positive, got ", s.ph, "x", s.pw);
  STD_TORCH_CHECK(double(s.ph) * double(s.pw) <= double(kMaxRoiSamples), op, ": output size ", s.ph, "x", s.pw,
                  " has more than 2^24 bins per RoI");
  STD_TORCH_CHECK(std::isfinite(s.scale) && s.scale > 0, op, ": `spatial_scale` must be a positive finite number, got ",
                  s.scale);
  STD_TORCH_CHECK(std::isfinite(s.gamma), op, ": `gamma` must be finite, got ", s.gamma);
  STD_TORCH_CHECK(s.sampling >= 0, op, ": `sampling_ratio` must be >= 0 (0: adaptive)");
  const double fixed = double(s.ph) * double(s.pw) * double(s.sampling) * double(s.sampling);
  STD_TORCH_CHECK(fixed <= double(kMaxRoiSamples), op, ": `sampling_ratio` = ", s.sampling, " gives ", s.ph, "*", s.pw,
                  "*", s.sampling, "*", s.sampling, " = ", fixed, " bilinear samples per RoI; at most ", kMaxRoiSamples,
                  " are supported");
  if (offset) {
    STD_TORCH_CHECK(offset->dim() == 4 && offset->size(0) == rois.size(0) && offset->size(1) == 2 &&
                        offset->size(2) == s.ph && offset->size(3) == s.pw,
                    op, ": `offset` must have shape [", rois.size(0), ", 2, ", s.ph, ", ", s.pw, "]");
    STD_TORCH_CHECK(offset->scalar_type() == rois.scalar_type(), op, ": `offset` must have the dtype of `rois`");
    check_same_device(rois, *offset, op, "rois", "offset");
  }
}

inline void check_features(const Tensor& input, const char* op, const char* name) {
  check_defined(input, op, name);
  STD_TORCH_CHECK(input.dim() == 4, op, ": `", name, "` must have shape [N, C, H, W]");
  STD_TORCH_CHECK(is_floating(input.scalar_type()), op, ": `", name, "` must be a floating tensor, got ",
                  dtype_name(input.scalar_type()));
}

// Every RoI: batch index in [0, batch), finite coordinates, and at most
// kMaxRoiSamples bilinear samples (an adaptive grid grows with the box).
// The sample grid is computed as the kernels compute it (RoiBins in the
// accumulation type).
inline void check_rois(const Tensor& rois_in, int64_t batch, const RoiPoolSpec& s, const char* op) {
  if (rois_in.size(0) == 0) return;
  Tensor rois =
      rois_in.is_cpu() ? rois_in : torch::stable::to(rois_in, torch::stable::Device(torch::stable::DeviceType::CPU));
  rois = torch::stable::contiguous(rois);
  SNIPER_DISPATCH_FLOATING(rois.scalar_type(), op, [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* pr = rois.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < rois.size(0); ++k) {
      double v[5];
      A roi[5];
      for (int i = 0; i < 5; ++i) {
        roi[i] = static_cast<A>(pr[5 * k + i]);
        v[i] = static_cast<double>(roi[i]);
      }
      STD_TORCH_CHECK(v[0] >= 0 && v[0] < double(batch) && v[0] == std::floor(v[0]), op, ": `rois`[", k,
                      ", 0] = ", v[0], " is not a batch index in [0, ", batch, ")");
      STD_TORCH_CHECK(std::isfinite(v[1]) && std::isfinite(v[2]) && std::isfinite(v[3]) && std::isfinite(v[4]), op,
                      ": `rois`[", k, "] = (", v[1], ", ", v[2], ", ", v[3], ", ", v[4],
                      ") must have finite coordinates");
      const RoiBins<A> b = RoiBins<A>::make(roi, A(s.scale), s.ph, s.pw, s.sampling, s.aligned);
      // (grid_h, grid_w saturate far above the limit: the product cannot overflow.)
      const double n = double(s.ph) * double(s.pw) * double(b.grid_h) * double(b.grid_w);
      STD_TORCH_CHECK(n <= double(kMaxRoiSamples), op, ": `rois`[", k, "] spans ", double(b.roi_w), " x ",
                      double(b.roi_h), " feature pixels; adaptive sampling (`sampling_ratio` 0) would take ",
                      std::ceil(double(b.roi_h) / double(s.ph)), " x ", std::ceil(double(b.roi_w) / double(s.pw)),
                      " samples in each of the ", s.ph, " x ", s.pw, " bins, more than the ", kMaxRoiSamples,
                      " per RoI supported (clip the boxes or set a `sampling_ratio`)");
    }
  });
}

// Deformable pooling is always aligned: both backends map the arguments to a RoiPoolSpec here.
template <typename B>
struct RoiPoolEntries {
  static Tensor forward(const Tensor& input, const Tensor& rois, const std::optional<Tensor>& offset,
                        const RoiPoolSpec& s, const char* op) {
    check_features(input, op, "input");
    check_roi_pool_args(input, "input", rois, offset, s, op);
    check_numel({rois.size(0), input.size(1), s.ph, s.pw}, op, "the output");
    check_rois(rois, input.size(0), s, op);
    typename B::Guard guard(input);
    const int64_t k = rois.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
    // An empty feature map: every sample lies outside it, every bin is 0.
    if (k == 0 || c == 0 || h == 0 || w == 0) return torch::stable::new_zeros(input, {k, c, s.ph, s.pw});
    Tensor out = new_empty(input, {k, c, s.ph, s.pw}, input.scalar_type());
    B::roi_pool_forward(torch::stable::contiguous(input), torch::stable::contiguous(rois), contiguous_opt(offset), s,
                        out);
    return out;
  }
  static std::tuple<Tensor, Tensor> backward(const Tensor& grad, const Tensor& rois, const std::optional<Tensor>& input,
                                             const std::optional<Tensor>& offset, int64_t n, int64_t c, int64_t h,
                                             int64_t w, const RoiPoolSpec& s, const char* op) {
    check_defined(grad, op, "grad");
    STD_TORCH_CHECK(is_floating(grad.scalar_type()), op, ": `grad` must be a floating tensor, got ",
                    dtype_name(grad.scalar_type()));
    check_roi_pool_args(grad, "grad", rois, offset, s, op);
    STD_TORCH_CHECK(n >= 0 && c >= 0 && h >= 0 && w >= 0, op, ": the input sizes must be >= 0, got [", n, ", ", c, ", ",
                    h, ", ", w, "]");
    check_numel({n, c, h, w}, op, "the input gradient");
    const int64_t k = rois.size(0);
    STD_TORCH_CHECK(
        grad.dim() == 4 && grad.size(0) == k && grad.size(1) == c && grad.size(2) == s.ph && grad.size(3) == s.pw, op,
        ": `grad` must have shape [", k, ", ", c, ", ", s.ph, ", ", s.pw, "]");
    check_rois(rois, n, s, op);
    typename B::Guard guard(grad);
    Tensor grad_input = torch::stable::new_zeros(grad, {n, c, h, w});
    Tensor grad_offset =
        offset ? torch::stable::new_zeros(*offset, {k, 2, s.ph, s.pw}) : new_empty(grad, {0}, grad.scalar_type());
    // No samples reach an empty feature map: both gradients are 0.
    if (k == 0 || c == 0 || h == 0 || w == 0) return std::make_tuple(grad_input, grad_offset);
    B::roi_pool_backward(torch::stable::contiguous(grad), torch::stable::contiguous(rois), contiguous_opt(input),
                         contiguous_opt(offset), s, grad_input, grad_offset);
    return std::make_tuple(grad_input, grad_offset);
  }

  static Tensor roi_align(Tensor input, Tensor rois, double scale, int64_t ph, int64_t pw, int64_t sampling,
                          bool aligned) {
    return forward(input, rois, std::nullopt, RoiPoolSpec{scale, ph, pw, sampling, aligned, 0.0}, "roi_align");
  }
  static Tensor roi_align_backward(Tensor grad, Tensor rois, double scale, int64_t ph, int64_t pw, int64_t n, int64_t c,
                                   int64_t h, int64_t w, int64_t sampling, bool aligned) {
    return std::get<0>(backward(grad, rois, std::nullopt, std::nullopt, n, c, h, w,
                                RoiPoolSpec{scale, ph, pw, sampling, aligned, 0.0}, "roi_align_backward"));
  }
  static Tensor deform_roi_pool(Tensor input, Tensor rois, std::optional<Tensor> offset, double scale, int64_t ph,
                                int64_t pw, int64_t sampling, double gamma) {
    return forward(input, rois, offset, RoiPoolSpec{scale, ph, pw, sampling, true, gamma}, "deform_roi_pool");
  }
  static std::tuple<Tensor, Tensor> deform_roi_pool_backward(Tensor grad, Tensor input, Tensor rois,
                                                             std::optional<Tensor> offset, double scale, int64_t ph,
                                                             int64_t pw, int64_t sampling, double gamma) {
    const char* op = "deform_roi_pool_backward";
    check_defined(grad, op, "grad");
    check_features(input, op, "input");
    STD_TORCH_CHECK(input.scalar_type() == grad.scalar_type(), op, ": `input` must have the dtype of `grad`");
    check_same_device(grad, input, op, "grad", "input");
    return backward(grad, rois, input, offset, input.size(0), input.size(1), input.size(2), input.size(3),
                    RoiPoolSpec{scale, ph, pw, sampling, true, gamma}, op);
  }
};

template <typename B>
void register_roi_pool(OpLibrary& m) {
  using E = RoiPoolEntries<B>;
  m.impl("roi_align", TORCH_BOX(&E::roi_align));
  m.impl("roi_align_backward", TORCH_BOX(&E::roi_align_backward));
  m.impl("deform_roi_pool", TORCH_BOX(&E::deform_roi_pool));
  m.impl("deform_roi_pool_backward", TORCH_BOX(&E::deform_roi_pool_backward));
}

}  // namespace sniper
