// CPU kernels of roi_align and deform_roi_pool (forward and backward).
// Forward: parallel over (RoI, channel). Backward: parallel over channels
// for the input gradient and over RoIs for the offset gradient, so every
// element has one writer and the result is deterministic.
#include <cmath>
#include <vector>

#include <sniper/bilinear.h>

#include "../roi_pool_checks.h"

namespace sniper {
namespace {

template <typename scalar_t, typename A>
A bin_shift(const scalar_t* off, int64_t k, int64_t axis, int64_t i, int64_t j, const RoiPoolSpec& s, A extent) {
  if (!off) return A(0);
  return A(s.gamma) * extent * static_cast<A>(off[((k * 2 + axis) * s.ph + i) * s.pw + j]);
}

template <typename scalar_t>
void check_batch_index(const scalar_t* rois, int64_t k, int64_t batch, const char* op) {
  const double b = static_cast<double>(rois[5 * k]);
  STD_TORCH_CHECK(b >= 0 && b < double(batch) && b == std::floor(b), op, ": `rois`[", k,
                  ", 0] = ", b, " is not a batch index in [0, ", batch, ")");
}

// out [K, C, ph, pw]
Tensor pool_forward(const Tensor& input_in, const Tensor& rois_in, const std::optional<Tensor>& offset_in,
                    const RoiPoolSpec& s, const char* op) {
  STD_TORCH_CHECK(input_in.dim() == 4, op, ": `input` must have shape [N, C, H, W]");
  check_roi_pool_args(input_in, rois_in, offset_in, s.ph, s.pw, s.sampling, op);
  const int64_t K = rois_in.size(0), N = input_in.size(0), C = input_in.size(1), H = input_in.size(2),
                W = input_in.size(3);
  Tensor out = new_empty(input_in, {K, C, s.ph, s.pw}, input_in.scalar_type());
  if (K == 0 || C == 0) return out;
  const Tensor input = torch::stable::contiguous(input_in);
  const Tensor rois = torch::stable::contiguous(rois_in);
  std::optional<Tensor> offset;
  if (offset_in) offset = torch::stable::contiguous(*offset_in);
  SNIPER_DISPATCH_FLOATING(input.scalar_type(), op, [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* pin = input.const_data_ptr<scalar_t>();
    const scalar_t* pr = rois.const_data_ptr<scalar_t>();
    const scalar_t* po = offset ? offset->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* pout = out.mutable_data_ptr<scalar_t>();
    for (int64_t k = 0; k < K; ++k) check_batch_index(pr, k, N, op);
    torch::stable::parallel_for(0, K * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t kc = b; kc < e; ++kc) {
        const int64_t k = kc / C, c = kc % C;
        A roi[5];
        for (int i = 0; i < 5; ++i) roi[i] = static_cast<A>(pr[5 * k + i]);
        const RoiBins<A> bins = RoiBins<A>::make(roi, A(s.scale), s.ph, s.pw, s.sampling, s.aligned);
        const scalar_t* plane = pin + (int64_t(roi[0]) * C + c) * H * W;
        for (int64_t i = 0; i < s.ph; ++i) {
          for (int64_t j = 0; j < s.pw; ++j) {
            const A sx = bin_shift(po, k, 0, i, j, s, bins.roi_w), sy = bin_shift(po, k, 1, i, j, s, bins.roi_h);
            A acc = 0;
            for (int64_t iy = 0; iy < bins.grid_h; ++iy) {
              for (int64_t ix = 0; ix < bins.grid_w; ++ix) {
                const Taps<A> t = roi_taps<A>(H, W, bins.y(i, iy, sy), bins.x(j, ix, sx));
                acc += sample<A>(plane, t, [](scalar_t v) { return static_cast<A>(v); });
              }
            }
            pout[(kc * s.ph + i) * s.pw + j] = static_cast<scalar_t>(acc / bins.count());
          }
        }
      }
    });
  });
  return out;
}

// Gradients of input [N, C, H, W] and (when offset is given) offset [K, 2, ph, pw].
std::tuple<Tensor, Tensor> pool_backward(const Tensor& grad_in, const Tensor& rois_in,
                                         const std::optional<Tensor>& input_in,
                                         const std::optional<Tensor>& offset_in, int64_t N, int64_t C,
                                         int64_t H, int64_t W, const RoiPoolSpec& s, const char* op) {
  check_roi_pool_args(grad_in, rois_in, offset_in, s.ph, s.pw, s.sampling, op);
  const int64_t K = rois_in.size(0);
  STD_TORCH_CHECK(grad_in.dim() == 4 && grad_in.size(0) == K && grad_in.size(1) == C && grad_in.size(2) == s.ph &&
                      grad_in.size(3) == s.pw,
                  op, ": `grad` must have shape [", K, ", ", C, ", ", s.ph, ", ", s.pw, "]");
  const ScalarType dt = grad_in.scalar_type();
  Tensor grad_input = torch::stable::new_zeros(grad_in, {N, C, H, W});
  Tensor grad_offset = offset_in ? torch::stable::new_zeros(*offset_in, {K, 2, s.ph, s.pw}) : new_empty(grad_in, {0}, dt);
  if (K == 0 || C == 0) return std::make_tuple(grad_input, grad_offset);
  const Tensor grad = torch::stable::contiguous(grad_in);
  const Tensor rois = torch::stable::contiguous(rois_in);
  std::optional<Tensor> input, offset;
  if (input_in) input = torch::stable::contiguous(*input_in);
  if (offset_in) offset = torch::stable::contiguous(*offset_in);
  SNIPER_DISPATCH_FLOATING(dt, op, [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const scalar_t* pr = rois.const_data_ptr<scalar_t>();
    const scalar_t* po = offset ? offset->const_data_ptr<scalar_t>() : nullptr;
    for (int64_t k = 0; k < K; ++k) check_batch_index(pr, k, N, op);
    std::vector<RoiBins<A>> bins(K);
    for (int64_t k = 0; k < K; ++k) {
      A roi[5];
      for (int i = 0; i < 5; ++i) roi[i] = static_cast<A>(pr[5 * k + i]);
      bins[k] = RoiBins<A>::make(roi, A(s.scale), s.ph, s.pw, s.sampling, s.aligned);
    }
    scalar_t* pgi = grad_input.mutable_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
      std::vector<A> acc(N * H * W);
      for (int64_t c = b; c < e; ++c) {
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t k = 0; k < K; ++k) {
          const RoiBins<A>& bn = bins[k];
          A* plane = acc.data() + int64_t(static_cast<A>(pr[5 * k])) * H * W;
          for (int64_t i = 0; i < s.ph; ++i) {
            for (int64_t j = 0; j < s.pw; ++j) {
              const A gv = static_cast<A>(pg[((k * C + c) * s.ph + i) * s.pw + j]) / bn.count();
              if (gv == A(0)) continue;
              const A sx = bin_shift(po, k, 0, i, j, s, bn.roi_w), sy = bin_shift(po, k, 1, i, j, s, bn.roi_h);
              for (int64_t iy = 0; iy < bn.grid_h; ++iy) {
                for (int64_t ix = 0; ix < bn.grid_w; ++ix) {
                  const Taps<A> t = roi_taps<A>(H, W, bn.y(i, iy, sy), bn.x(j, ix, sx));
                  for (int q = 0; q < 4; ++q) plane[t.idx[q]] += gv * t.w[q];
                }
              }
            }
          }
        }
        for (int64_t nb = 0; nb < N; ++nb) {
          for (int64_t p = 0; p < H * W; ++p) pgi[(nb * C + c) * H * W + p] = static_cast<scalar_t>(acc[nb * H * W + p]);
        }
      }
    });
    if (!offset) return;
    const scalar_t* pin = input->const_data_ptr<scalar_t>();
    scalar_t* pgo = grad_offset.mutable_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, K, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const RoiBins<A>& bn = bins[k];
        const int64_t nb = int64_t(static_cast<A>(pr[5 * k]));
        for (int64_t i = 0; i < s.ph; ++i) {
          for (int64_t j = 0; j < s.pw; ++j) {
            const A sx = bin_shift(po, k, 0, i, j, s, bn.roi_w), sy = bin_shift(po, k, 1, i, j, s, bn.roi_h);
            A gx = 0, gy = 0;
            for (int64_t iy = 0; iy < bn.grid_h; ++iy) {
              for (int64_t ix = 0; ix < bn.grid_w; ++ix) {
                const Taps<A> t = roi_taps<A>(H, W, bn.y(i, iy, sy), bn.x(j, ix, sx));
                for (int64_t c = 0; c < C; ++c) {
                  const A gv = static_cast<A>(pg[((k * C + c) * s.ph + i) * s.pw + j]);
                  const scalar_t* plane = pin + (nb * C + c) * H * W;
                  for (int q = 0; q < 4; ++q) {
                    const A v = static_cast<A>(plane[t.idx[q]]);
                    gx += gv * t.dx[q] * v;
                    gy += gv * t.dy[q] * v;
                  }
                }
              }
            }
            const A scale = A(s.gamma) / bn.count();
            pgo[((k * 2 + 0) * s.ph + i) * s.pw + j] = static_cast<scalar_t>(gx * scale * bn.roi_w);
            pgo[((k * 2 + 1) * s.ph + i) * s.pw + j] = static_cast<scalar_t>(gy * scale * bn.roi_h);
          }
        }
      }
    });
  });
  return std::make_tuple(grad_input, grad_offset);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) {
  using E = RoiPoolEntries<&pool_forward, &pool_backward>;
  m.impl("roi_align", TORCH_BOX(&E::roi_align));
  m.impl("roi_align_backward", TORCH_BOX(&E::roi_align_backward));
  m.impl("deform_roi_pool", TORCH_BOX(&E::deform_roi_pool));
  m.impl("deform_roi_pool_backward", TORCH_BOX(&E::deform_roi_pool_backward));
}

}  // namespace sniper
