// CPU kernels of sniper::deform_im2col and sniper::deform_col2im.
// Both are parallel over (sample, channel) planes or (sample, group, tap)
// rows, so every output element is written by one thread: the backward is
// deterministic.
#include <vector>

#include "../deform_conv_common.h"

namespace sniper {
namespace {

template <typename A>
struct Point {
  A y, x, m;
};

// Sampling point of tap k at output position (oy, ox) for offset group g.
template <typename scalar_t, typename A>
Point<A> sample_point(const DeformGeometry& g, const scalar_t* off, const scalar_t* mask, int64_t grp, int64_t k,
                      int64_t oy, int64_t ox) {
  const int64_t l = oy * g.out_w + ox, L = g.positions(), K = g.taps();
  const A dy = static_cast<A>(off[(2 * (grp * K + k)) * L + l]);
  const A dx = static_cast<A>(off[(2 * (grp * K + k) + 1) * L + l]);
  const int64_t ki = k / g.kernel_w, kj = k % g.kernel_w;
  Point<A> p;
  p.y = A(oy * g.stride_h - g.pad_h + ki * g.dil_h) + dy;
  p.x = A(ox * g.stride_w - g.pad_w + kj * g.dil_w) + dx;
  p.m = mask ? static_cast<A>(mask[(grp * K + k) * L + l]) : A(1);
  return p;
}

// Taps (and mask values) of tap k of offset group grp at every output
// position of sample-local offset/mask arrays.
template <typename scalar_t, typename A>
void fill_taps(const DeformGeometry& g, const scalar_t* off, const scalar_t* msk, int64_t grp, int64_t k,
               std::vector<Taps<A>>& taps, std::vector<A>& scale) {
  for (int64_t l = 0; l < g.positions(); ++l) {
    const Point<A> p = sample_point<scalar_t, A>(g, off, msk, grp, k, l / g.out_w, l % g.out_w);
    taps[l] = deform_taps<A>(g.height, g.width, p.y, p.x);
    scale[l] = p.m;
  }
}

struct DeformConvCpu : CpuBackend {
  static void deform_im2col(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                            const DeformGeometry& g, Tensor& cols) {
    const int64_t n = input.size(0), K = g.taps(), L = g.positions(), og = g.offset_groups;
    SNIPER_DISPATCH_FLOATING(input.scalar_type(), "deform_im2col", [&] {
      using A = acc_t<scalar_t>;
      const scalar_t* pin = input.const_data_ptr<scalar_t>();
      const scalar_t* poff = offset.const_data_ptr<scalar_t>();
      const scalar_t* pmask = mask ? mask->const_data_ptr<scalar_t>() : nullptr;
      scalar_t* pcol = cols.mutable_data_ptr<scalar_t>();
      auto load = [](scalar_t v) { return static_cast<A>(v); };
      const int64_t cpg = g.channels / og, HW = g.height * g.width;
      // Each (sample, group, tap) computes its sampling points once for all
      // positions, then streams every channel of the group through them.
      torch::stable::parallel_for(0, n * og * K, 1, [&](int64_t b, int64_t e) {
        std::vector<Taps<A>> taps(L);
        std::vector<A> scale(L);
        for (int64_t r = b; r < e; ++r) {
          const int64_t s = r / (og * K), grp = (r / K) % og, k = r % K;
          const scalar_t* off = poff + s * 2 * og * K * L;
          const scalar_t* msk = pmask ? pmask + s * og * K * L : nullptr;
          fill_taps<scalar_t, A>(g, off, msk, grp, k, taps, scale);
          for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
            const scalar_t* plane = pin + (s * g.channels + c) * HW;
            scalar_t* row = pcol + (s * g.channels * K + c * K + k) * L;
            for (int64_t l = 0; l < L; ++l) {
              row[l] = static_cast<scalar_t>(scale[l] * deform_sample<A>(plane, taps[l], load));
            }
          }
        }
      });
    });
  }

  // Always deterministic: every output element has one writer.
  static void deform_col2im(const Tensor& gcols, const Tensor& input, const Tensor& offset,
                            const std::optional<Tensor>& mask, const DeformGeometry& g, bool /*deterministic*/,
                            Tensor& grad_input, Tensor& grad_offset, Tensor& grad_mask) {
    const int64_t n = input.size(0), K = g.taps(), L = g.positions(), C = g.channels, og = g.offset_groups;
    const char* op = "deform_col2im";
    const ScalarType dt = input.scalar_type();
    SNIPER_DISPATCH_FLOATING(dt, op, [&] {
      using A = acc_t<scalar_t>;
      auto load = [](scalar_t v) { return static_cast<A>(v); };
      const scalar_t* pg = gcols.const_data_ptr<scalar_t>();
      const scalar_t* pin = input.const_data_ptr<scalar_t>();
      const scalar_t* poff = offset.const_data_ptr<scalar_t>();
      const scalar_t* pmask = mask ? mask->const_data_ptr<scalar_t>() : nullptr;
      scalar_t* pgi = grad_input.mutable_data_ptr<scalar_t>();
      scalar_t* pgo = grad_offset.mutable_data_ptr<scalar_t>();
      scalar_t* pgm = mask ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr;
      const int64_t cpg = C / og, HW = g.height * g.width;
      // Sampling taps of every (sample, group, tap, position), weights times mask.
      struct Tap4 {
        int32_t idx[4];
        A w[4];
      };
      std::vector<Tap4> table(n * og * K * L);
      torch::stable::parallel_for(0, n * og * K, 1, [&](int64_t b, int64_t e) {
        std::vector<Taps<A>> taps(L);
        std::vector<A> scale(L);
        for (int64_t r = b; r < e; ++r) {
          const int64_t s = r / (og * K), grp = (r / K) % og, k = r % K;
          fill_taps<scalar_t, A>(g, poff + s * 2 * og * K * L, pmask ? pmask + s * og * K * L : nullptr, grp, k, taps,
                                 scale);
          for (int64_t l = 0; l < L; ++l) {
            Tap4& q = table[r * L + l];
            for (int i = 0; i < 4; ++i) {  // idx -1: a tap of weight 0 (e.g. outside the image), never touched
              const bool used = taps[l].w[i] != A(0);
              q.idx[i] = used ? static_cast<int32_t>(taps[l].idx[i]) : -1;
              q.w[i] = used ? scale[l] * taps[l].w[i] : A(0);
            }
          }
        }
      });
      // Input: one (sample, channel) plane per task, accumulated in A.
      torch::stable::parallel_for(0, n * C, 1, [&](int64_t b, int64_t e) {
        std::vector<A> acc(HW);
        for (int64_t nc = b; nc < e; ++nc) {
          const int64_t s = nc / C, c = nc % C, grp = c / cpg;
          std::fill(acc.begin(), acc.end(), A(0));
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t* grow = pg + (s * C * K + c * K + k) * L;
            const Tap4* taps = table.data() + ((s * og + grp) * K + k) * L;
            for (int64_t l = 0; l < L; ++l) {
              const A gv = static_cast<A>(grow[l]);
              if (gv == A(0)) continue;
              const Tap4& q = taps[l];
              for (int i = 0; i < 4; ++i) {
                if (q.idx[i] >= 0) acc[q.idx[i]] += gv * q.w[i];
              }
            }
          }
          for (int64_t i = 0; i < HW; ++i) pgi[nc * HW + i] = static_cast<scalar_t>(acc[i]);
        }
      });
      // Offset and mask: one (sample, group, tap) per task, summing its channels
      // (channels outer, positions inner, so rows are read contiguously).
      torch::stable::parallel_for(0, n * og * K, 1, [&](int64_t b, int64_t e) {
        std::vector<Taps<A>> taps(L);
        std::vector<A> scale(L), gy(L), gx(L), gm(L);
        for (int64_t r = b; r < e; ++r) {
          const int64_t s = r / (og * K), grp = (r / K) % og, k = r % K;
          const scalar_t* off = poff + s * 2 * og * K * L;
          const scalar_t* msk = pmask ? pmask + s * og * K * L : nullptr;
          fill_taps<scalar_t, A>(g, off, msk, grp, k, taps, scale);
          std::fill(gy.begin(), gy.end(), A(0));
          std::fill(gx.begin(), gx.end(), A(0));
          std::fill(gm.begin(), gm.end(), A(0));
          for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
            const scalar_t* grow = pg + (s * C * K + c * K + k) * L;
            const scalar_t* plane = pin + (s * C + c) * HW;
            for (int64_t l = 0; l < L; ++l) {
              const A gv = static_cast<A>(grow[l]);
              if (gv == A(0)) continue;
              A v, vy, vx;
              deform_sample_grad<A>(plane, taps[l], load, &v, &vy, &vx);
              gy[l] += gv * vy;
              gx[l] += gv * vx;
              gm[l] += gv * v;
            }
          }
          scalar_t* go_y = pgo + (s * 2 * og * K + 2 * (grp * K + k)) * L;
          scalar_t* go_x = go_y + L;
          for (int64_t l = 0; l < L; ++l) {
            go_y[l] = static_cast<scalar_t>(scale[l] * gy[l]);
            go_x[l] = static_cast<scalar_t>(scale[l] * gx[l]);
            if (pgm) pgm[(s * og * K + grp * K + k) * L + l] = static_cast<scalar_t>(gm[l]);
          }
        }
      });
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_deform_conv<DeformConvCpu>(m); }

}  // namespace sniper
