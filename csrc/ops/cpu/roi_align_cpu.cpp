// CPU kernels of roi_align and deform_roi_pool (forward and backward): each
// RoI's bilinear taps are computed once into a bounded table that the
// channels sweep kBlock at a time. Every sum runs in the order of the
// definition the CUDA kernels use (bilinear.h); the input gradient has one
// writer per element, so it is deterministic. Layout and parallelisation:
// docs/kernels.md, "RoI pooling".
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <sniper/bilinear.h>

#include "../roi_align_common.h"

namespace sniper {
namespace {

constexpr int64_t kBlock = 8;                // channels per sweep
constexpr int64_t kForwardTable = 1 << 13;   // taps per forward table (per thread)
constexpr int64_t kBackwardTable = 1 << 18;  // taps per input-gradient table chunk
constexpr int kOffsetBins = 4;               // bins per offset-gradient sweep

template <typename A>
struct RoiTap {
  int64_t idx[4];
  A w[4];
};

template <typename scalar_t, typename A>
A bin_shift(const scalar_t* off, int64_t k, int64_t axis, int64_t i, int64_t j, const RoiPoolSpec& s, A extent) {
  if (!off) return A(0);
  return A(s.gamma) * extent * static_cast<A>(off[((k * 2 + axis) * s.ph + i) * s.pw + j]);
}

template <typename scalar_t, typename A>
RoiBins<A> bins_of(const scalar_t* rois, int64_t k, const RoiPoolSpec& s) {
  A roi[5];
  for (int i = 0; i < 5; ++i) roi[i] = static_cast<A>(rois[5 * k + i]);
  return RoiBins<A>::make(roi, A(s.scale), s.ph, s.pw, s.sampling, s.aligned);
}

template <typename scalar_t>
int64_t batch_of(const scalar_t* rois, int64_t k) {
  return int64_t(static_cast<acc_t<scalar_t>>(rois[5 * k]));
}

// Taps of samples [f0, f1) of RoI k into out[0 .. f1 - f0).
template <typename scalar_t, typename A>
void fill_taps(const RoiBins<A>& bn, const scalar_t* off, int64_t k, const RoiPoolSpec& s, int64_t H, int64_t W,
               int64_t f0, int64_t f1, RoiTap<A>* out) {
  const int64_t ns = bn.samples_per_bin();
  for (int64_t f = f0; f < f1;) {
    const int64_t bin = f / ns, i = bin / s.pw, j = bin % s.pw, end = std::min(f1, (bin + 1) * ns);
    const A sx = bin_shift(off, k, 0, i, j, s, bn.roi_w), sy = bin_shift(off, k, 1, i, j, s, bn.roi_h);
    for (; f < end; ++f) {
      const int64_t q = f - bin * ns, iy = q / bn.grid_w, ix = q % bn.grid_w;
      const Taps<A> t = roi_taps<A>(H, W, bn.y(i, iy, sy), bn.x(j, ix, sx));
      RoiTap<A>& o = out[f - f0];
      for (int r = 0; r < 4; ++r) {
        o.idx[r] = t.idx[r];
        o.w[r] = t.w[r];
      }
    }
  }
}

// B channels (planes `plane + b * HW`, output rows `out + b * bins`) over
// samples [f0, f1) of one RoI; `acc` carries the sums of a bin split across
// tables.
template <int B, typename scalar_t, typename A>
void forward_sweep(const scalar_t* plane, int64_t HW, const RoiTap<A>* taps, int64_t f0, int64_t f1, int64_t ns,
                   A count, A* acc, scalar_t* out, int64_t bins) {
  for (int64_t f = f0; f < f1;) {
    const int64_t bin = f / ns, end = std::min(f1, (bin + 1) * ns);
    A a[B];
    for (int b = 0; b < B; ++b) a[b] = acc[b];
    for (; f < end; ++f) {
      const RoiTap<A>& t = taps[f - f0];
      for (int b = 0; b < B; ++b) {
        const scalar_t* p = plane + b * HW;
        // sample(): w0*v0 + w1*v1 + w2*v2 + w3*v3, left to right.
        a[b] += t.w[0] * static_cast<A>(p[t.idx[0]]) + t.w[1] * static_cast<A>(p[t.idx[1]]) +
                t.w[2] * static_cast<A>(p[t.idx[2]]) + t.w[3] * static_cast<A>(p[t.idx[3]]);
      }
    }
    if (end == (bin + 1) * ns) {
      for (int b = 0; b < B; ++b) {
        out[b * bins + bin] = static_cast<scalar_t>(a[b] / count);
        a[b] = A(0);
      }
    }
    for (int b = 0; b < B; ++b) acc[b] = a[b];
  }
}

// out [K, C, ph, pw]
void pool_forward(const Tensor& input, const Tensor& rois, const std::optional<Tensor>& offset, const RoiPoolSpec& s,
                  Tensor& out) {
  const int64_t K = rois.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t HW = H * W, nbins = s.ph * s.pw, blocks = (C + kBlock - 1) / kBlock;
  // Channel groups per RoI: enough work items for the threads when RoIs are few.
  const int64_t want = 4 * int64_t(torch::stable::get_num_threads());
  const int64_t groups = K >= want ? 1 : std::min(blocks, (want + K - 1) / K);
  const int64_t per_group = (blocks + groups - 1) / groups;
  SNIPER_DISPATCH_FLOATING(input.scalar_type(), "roi pooling", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* pin = input.const_data_ptr<scalar_t>();
    const scalar_t* pr = rois.const_data_ptr<scalar_t>();
    const scalar_t* po = offset ? offset->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* pout = out.mutable_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, K * groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<RoiTap<A>> taps;
      std::vector<A> acc;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t k = item / groups, g = item % groups;
        const int64_t c_begin = std::min(C, g * per_group * kBlock), c_end = std::min(C, (g + 1) * per_group * kBlock);
        if (c_begin >= c_end) continue;
        const RoiBins<A> bn = bins_of<scalar_t, A>(pr, k, s);
        const int64_t ns = bn.samples_per_bin(), total = nbins * ns;
        scalar_t* out_k = pout + k * C * nbins;
        if (ns == 0) {  // no samples: 0 / count
          std::fill(out_k + c_begin * nbins, out_k + c_end * nbins, static_cast<scalar_t>(A(0) / bn.count()));
          continue;
        }
        const scalar_t* in_k = pin + batch_of(pr, k) * C * HW;
        taps.resize(std::min(total, kForwardTable));
        acc.assign(c_end - c_begin, A(0));
        for (int64_t f0 = 0; f0 < total; f0 += kForwardTable) {
          const int64_t f1 = std::min(total, f0 + kForwardTable);
          fill_taps(bn, po, k, s, H, W, f0, f1, taps.data());
          int64_t c = c_begin;
          for (; c + kBlock <= c_end; c += kBlock) {
            forward_sweep<kBlock>(in_k + c * HW, HW, taps.data(), f0, f1, ns, bn.count(), acc.data() + (c - c_begin),
                                  out_k + c * nbins, nbins);
          }
          for (; c < c_end; ++c) {
            forward_sweep<1>(in_k + c * HW, HW, taps.data(), f0, f1, ns, bn.count(), acc.data() + (c - c_begin),
                             out_k + c * nbins, nbins);
          }
        }
      }
    });
  });
}

// Adds the input gradient of B channels (c0 ..) over table samples [f0, f1)
// (global numbering: RoI k owns [first[k], first[k + 1])) into
// acc [N, C, H, W].
template <int B, typename scalar_t, typename A>
void backward_sweep(const scalar_t* grad, const scalar_t* rois, const std::vector<RoiBins<A>>& bins,
                    const std::vector<int64_t>& first, const RoiTap<A>* taps, int64_t f0, int64_t f1, int64_t c0,
                    int64_t C, int64_t HW, int64_t nbins, A* acc) {
  int64_t k = std::upper_bound(first.begin(), first.end(), f0) - first.begin() - 1;
  for (int64_t f = f0; f < f1; ++k) {
    const int64_t seg_end = std::min(f1, first[k + 1]);
    if (f >= seg_end) continue;
    const RoiBins<A>& bn = bins[k];
    const int64_t ns = bn.samples_per_bin(), base = first[k];
    A* plane = acc + (batch_of(rois, k) * C + c0) * HW;
    const scalar_t* g = grad + (k * C + c0) * nbins;
    while (f < seg_end) {
      const int64_t bin = (f - base) / ns, end = std::min(seg_end, base + (bin + 1) * ns);
      A gv[B];
      bool any = false;
      for (int b = 0; b < B; ++b) {
        gv[b] = static_cast<A>(g[b * nbins + bin]) / bn.count();
        any = any || gv[b] != A(0);
      }
      if (!any) {
        f = end;
        continue;
      }
      for (; f < end; ++f) {
        const RoiTap<A>& t = taps[f - f0];
        for (int b = 0; b < B; ++b) {
          if (gv[b] == A(0)) continue;
          A* p = plane + b * HW;
          for (int q = 0; q < 4; ++q) p[t.idx[q]] += gv[b] * t.w[q];
        }
      }
    }
  }
}

// Offset gradient of B bins (bin0 ..) of RoI k, whose feature planes start at `in`:
// per bin, samples in (iy, ix) order, channels, taps, as one running sum
// (the B bins' sums are independent, which keeps the adds from waiting on
// each other).
template <int B, typename scalar_t, typename A>
void offset_sweep(const RoiBins<A>& bn, const scalar_t* grad, const scalar_t* in, const scalar_t* off, int64_t k,
                  int64_t bin0, int64_t C, int64_t H, int64_t W, const RoiPoolSpec& s, scalar_t* grad_offset) {
  const int64_t nbins = s.ph * s.pw, HW = H * W;
  A sx[B], sy[B], gx[B], gy[B];
  for (int b = 0; b < B; ++b) {
    const int64_t i = (bin0 + b) / s.pw, j = (bin0 + b) % s.pw;
    sx[b] = bin_shift(off, k, 0, i, j, s, bn.roi_w);
    sy[b] = bin_shift(off, k, 1, i, j, s, bn.roi_h);
    gx[b] = gy[b] = A(0);
  }
  for (int64_t iy = 0; iy < bn.grid_h; ++iy) {
    for (int64_t ix = 0; ix < bn.grid_w; ++ix) {
      Taps<A> t[B];
      for (int b = 0; b < B; ++b) {
        const int64_t i = (bin0 + b) / s.pw, j = (bin0 + b) % s.pw;
        t[b] = roi_taps<A>(H, W, bn.y(i, iy, sy[b]), bn.x(j, ix, sx[b]));
      }
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* g = grad + (k * C + c) * nbins + bin0;
        const scalar_t* plane = in + c * HW;
        for (int b = 0; b < B; ++b) {
          const A gv = static_cast<A>(g[b]);
          for (int q = 0; q < 4; ++q) {
            const A v = static_cast<A>(plane[t[b].idx[q]]);
            gx[b] += gv * t[b].dx[q] * v;
            gy[b] += gv * t[b].dy[q] * v;
          }
        }
      }
    }
  }
  const A scale = A(s.gamma) / bn.count();
  for (int b = 0; b < B; ++b) {
    grad_offset[(k * 2 + 0) * nbins + bin0 + b] = static_cast<scalar_t>(gx[b] * scale * bn.roi_w);
    grad_offset[(k * 2 + 1) * nbins + bin0 + b] = static_cast<scalar_t>(gy[b] * scale * bn.roi_h);
  }
}

// Gradients of input [N, C, H, W] and (when offset is given) offset [K, 2, ph, pw].
// grad_input and grad_offset arrive zero-filled.
void pool_backward(const Tensor& grad, const Tensor& rois, const std::optional<Tensor>& input,
                   const std::optional<Tensor>& offset, const RoiPoolSpec& s, Tensor& grad_input, Tensor& grad_offset) {
  const int64_t K = rois.size(0), N = grad_input.size(0), C = grad_input.size(1), H = grad_input.size(2),
                W = grad_input.size(3);
  const ScalarType dt = grad.scalar_type();
  const int64_t HW = H * W, nbins = s.ph * s.pw, blocks = (C + kBlock - 1) / kBlock;
  SNIPER_DISPATCH_FLOATING(dt, "roi pooling backward", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const scalar_t* pr = rois.const_data_ptr<scalar_t>();
    const scalar_t* po = offset ? offset->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* pgi = grad_input.mutable_data_ptr<scalar_t>();
    std::vector<RoiBins<A>> bins(K);
    std::vector<int64_t> first(K + 1, 0);
    for (int64_t k = 0; k < K; ++k) {
      bins[k] = bins_of<scalar_t, A>(pr, k, s);
      first[k + 1] = first[k] + nbins * bins[k].samples_per_bin();
    }
    // Input gradient, accumulated in A: in place for float/double, else in a buffer.
    constexpr bool in_place = std::is_same_v<scalar_t, A>;
    std::vector<A> buffer(in_place ? 0 : N * C * HW, A(0));
    A* acc = in_place ? reinterpret_cast<A*>(pgi) : buffer.data();
    const int64_t total = first[K];
    std::vector<RoiTap<A>> taps(std::min(total, kBackwardTable));
    for (int64_t f0 = 0; f0 < total; f0 += kBackwardTable) {
      const int64_t f1 = std::min(total, f0 + kBackwardTable);
      torch::stable::parallel_for(f0, f1, 1024, [&](int64_t b, int64_t e) {
        int64_t k = std::upper_bound(first.begin(), first.end(), b) - first.begin() - 1;
        for (int64_t f = b; f < e; ++k) {
          const int64_t seg_end = std::min(e, first[k + 1]);
          if (f >= seg_end) continue;
          fill_taps(bins[k], po, k, s, H, W, f - first[k], seg_end - first[k], taps.data() + (f - f0));
          f = seg_end;
        }
      });
      torch::stable::parallel_for(0, blocks, 1, [&](int64_t b, int64_t e) {
        for (int64_t blk = b; blk < e; ++blk) {
          const int64_t c0 = blk * kBlock;
          if (c0 + kBlock <= C) {
            backward_sweep<kBlock>(pg, pr, bins, first, taps.data(), f0, f1, c0, C, HW, nbins, acc);
          } else {
            for (int64_t c = c0; c < C; ++c) {
              backward_sweep<1>(pg, pr, bins, first, taps.data(), f0, f1, c, C, HW, nbins, acc);
            }
          }
        }
      });
    }
    if (!in_place) {
      torch::stable::parallel_for(0, N * C * HW, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) pgi[i] = static_cast<scalar_t>(buffer[i]);
      });
    }
    if (!offset) return;
    const scalar_t* pin = input->const_data_ptr<scalar_t>();
    scalar_t* pgo = grad_offset.mutable_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, K, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const scalar_t* in_k = pin + batch_of(pr, k) * C * HW;
        int64_t bin = 0;
        for (; bin + kOffsetBins <= nbins; bin += kOffsetBins) {
          offset_sweep<kOffsetBins>(bins[k], pg, in_k, po, k, bin, C, H, W, s, pgo);
        }
        for (; bin < nbins; ++bin) offset_sweep<1>(bins[k], pg, in_k, po, k, bin, C, H, W, s, pgo);
      }
    });
  });
}

struct RoiPoolCpu : CpuBackend {
  static constexpr auto roi_pool_forward = &pool_forward;
  static constexpr auto roi_pool_backward = &pool_backward;
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_roi_pool<RoiPoolCpu>(m); }

}  // namespace sniper
