// Bilinear sampling and its derivatives, shared by the CPU and CUDA kernels.
// Two boundary conventions, both as in torchvision:
//  * deform_* (deformable convolution): a point is sampled from the 4
//    surrounding pixels, pixels outside the image count as 0, and points at
//    or beyond -1 / H (W) give 0.
//  * roi_* (RoIAlign and deformable RoI pooling): points beyond -1 / H (W)
//    give 0, otherwise coordinates are clamped into the image first.
#pragma once

#include <stdint.h>

#include "host_device.h"

namespace sniper {

// The 4 taps of a sample: flat offsets into an H x W plane and weights
// (weight 0 and offset 0 for taps outside the image).
template <typename T>
struct Taps {
  int64_t idx[4];
  T w[4];
  // d(value)/dy = sum dy[i] * plane[idx[i]], likewise dx.
  T dy[4], dx[4];
};

// The four taps around (y0, x0)-(y1, x1) with fractional parts (ly, lx);
// `ok[i]` false zeroes tap i, fixed_y / fixed_x zero a derivative.
template <typename T>
SNIPER_HD Taps<T> make_taps(int64_t width, int64_t y0, int64_t x0, int64_t y1, int64_t x1, T ly, T lx, const bool ok[4],
                            bool fixed_y, bool fixed_x) {
  const T hy = T(1) - ly, hx = T(1) - lx;
  const int64_t ys[4] = {y0, y0, y1, y1}, xs[4] = {x0, x1, x0, x1};
  const T w[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const T dy[4] = {-hx, -lx, hx, lx}, dx[4] = {-hy, hy, -ly, ly};
  Taps<T> t;
  for (int i = 0; i < 4; ++i) {
    t.idx[i] = ok[i] ? ys[i] * width + xs[i] : 0;
    t.w[i] = ok[i] ? w[i] : T(0);
    t.dy[i] = ok[i] && !fixed_y ? dy[i] : T(0);
    t.dx[i] = ok[i] && !fixed_x ? dx[i] : T(0);
  }
  return t;
}

template <typename T>
SNIPER_HD Taps<T> empty_taps() {
  const bool none[4] = {false, false, false, false};
  return make_taps<T>(0, 0, 0, 0, 0, T(0), T(0), none, true, true);
}

// Deformable-convolution taps of the point (y, x): the pixels of the cell
// [y0, y0 + 1) x [x0, x0 + 1) with y0 = floor(y), x0 = floor(x), pixels
// outside the image counting as 0. The value is continuous and is 0 at and
// beyond -1 / H (W); the derivatives are those of the cell, i.e. one-sided
// from the right (+y, +x) where the interpolant has a kink (integer
// coordinates). So at y == -1 d/dy comes from row 0 (the value rises from 0
// towards row 0), while at y == H (and beyond) it is 0 -- as in torchvision's
// deform_conv2d, whose coordinate gradient reads the 4 cell pixels with no
// range test. Points off every pixel's cell (y < -1, y >= H, likewise x, or
// NaN) get no taps at all.
template <typename T>
SNIPER_HD Taps<T> deform_taps(int64_t height, int64_t width, T y, T x) {
  // Written so that NaN coordinates also give no taps (int64_t(floor(NaN)) is undefined).
  if (!(y >= T(-1) && y < T(height) && x >= T(-1) && x < T(width))) return empty_taps<T>();
  const int64_t y0 = int64_t(floor(y)), x0 = int64_t(floor(x));
  const int64_t y1 = y0 + 1, x1 = x0 + 1;
  const bool ok[4] = {y0 >= 0 && x0 >= 0, y0 >= 0 && x1 <= width - 1, y1 <= height - 1 && x0 >= 0,
                      y1 <= height - 1 && x1 <= width - 1};
  return make_taps<T>(width, y0, x0, y1, x1, y - T(y0), x - T(x0), ok, false, false);
}

// Deformable sampling reads only the taps that matter: a tap outside the
// image (weight and derivatives 0, offset 0) is never loaded, so an empty
// plane is never read and a non-finite pixel reaches only the samples that
// weigh it in (as in torchvision), not every sample beyond the border.
template <typename A>
SNIPER_HD bool deform_tap_used(const Taps<A>& t, int i) {
  return t.w[i] != A(0) || t.dy[i] != A(0) || t.dx[i] != A(0);
}

// Value of a plane at deform taps, in the accumulation type A.
template <typename A, typename T, typename Load>
SNIPER_HD A deform_sample(const T* plane, const Taps<A>& t, Load load) {
  A v = A(0);
  for (int i = 0; i < 4; ++i) {
    if (t.w[i] != A(0)) v += t.w[i] * load(plane[t.idx[i]]);
  }
  return v;
}

// Value (*v) and its derivatives along y (*vy) and x (*vx) at deform taps;
// each sum leaves out the terms whose coefficient is 0.
template <typename A, typename T, typename Load>
SNIPER_HD void deform_sample_grad(const T* plane, const Taps<A>& t, Load load, A* v, A* vy, A* vx) {
  A s = A(0), sy = A(0), sx = A(0);
  for (int i = 0; i < 4; ++i) {
    if (!deform_tap_used(t, i)) continue;
    const A p = load(plane[t.idx[i]]);
    if (t.w[i] != A(0)) s += t.w[i] * p;  // as deform_sample: the same value
    if (t.dy[i] != A(0)) sy += t.dy[i] * p;
    if (t.dx[i] != A(0)) sx += t.dx[i] * p;
  }
  *v = s;
  *vy = sy;
  *vx = sx;
}

// An empty plane (height or width 0) has no taps, and a NaN coordinate is
// outside: kernels never index with it. (Callers must not read a plane of
// size 0 at all: empty taps point at offset 0.)
template <typename T>
SNIPER_HD Taps<T> roi_taps(int64_t height, int64_t width, T y, T x) {
  if (height <= 0 || width <= 0 || !(y >= T(-1) && y <= T(height) && x >= T(-1) && x <= T(width))) {
    return empty_taps<T>();
  }
  // Where a coordinate is clamped, the value does not depend on it: derivative 0.
  bool fixed_y = false, fixed_x = false;
  if (y <= T(0)) {
    y = T(0);
    fixed_y = true;
  }
  if (x <= T(0)) {
    x = T(0);
    fixed_x = true;
  }
  int64_t y0 = int64_t(y), x0 = int64_t(x), y1, x1;
  if (y0 >= height - 1) {
    y1 = y0 = height - 1;
    y = T(y0);
    fixed_y = true;
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= width - 1) {
    x1 = x0 = width - 1;
    x = T(x0);
    fixed_x = true;
  } else {
    x1 = x0 + 1;
  }
  const bool ok[4] = {true, true, true, true};
  return make_taps<T>(width, y0, x0, y1, x1, y - T(y0), x - T(x0), ok, fixed_y, fixed_x);
}

// Value of a plane at a sample, in the accumulation type A.
template <typename A, typename T, typename Load>
SNIPER_HD A sample(const T* plane, const Taps<A>& t, Load load) {
  return t.w[0] * load(plane[t.idx[0]]) + t.w[1] * load(plane[t.idx[1]]) + t.w[2] * load(plane[t.idx[2]]) +
         t.w[3] * load(plane[t.idx[3]]);
}

// Geometry of deformable convolution's sampling points.
struct DeformGeometry {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t offset_groups, out_h, out_w;
  SNIPER_HD int64_t taps() const { return kernel_h * kernel_w; }
  SNIPER_HD int64_t positions() const { return out_h * out_w; }
};

// Parameters of the RoI pooling family (roi_align: no offset, gamma unused).
// The argument checks (roi_align_common.h) allow at most kMaxRoiSamples
// bilinear samples per RoI (pooled_h * pooled_w * grid_h * grid_w).
constexpr int64_t kMaxRoiSamples = int64_t(1) << 24;
struct RoiPoolSpec {
  double scale;
  int64_t ph, pw, sampling;
  bool aligned;
  double gamma;
};

// Geometry of one RoI's bins (RoIAlign / deformable RoI pooling).
template <typename T>
struct RoiBins {
  T start_w, start_h, bin_w, bin_h, roi_w, roi_h;
  int64_t grid_h, grid_w;

  SNIPER_HD static RoiBins make(const T* roi, T scale, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                bool aligned) {
    RoiBins b;
    const T off = aligned ? T(0.5) : T(0);
    b.start_w = roi[1] * scale - off;
    b.start_h = roi[2] * scale - off;
    b.roi_w = roi[3] * scale - off - b.start_w;
    b.roi_h = roi[4] * scale - off - b.start_h;
    if (!aligned) {  // legacy RoIAlign: at least one pixel
      b.roi_w = max_(b.roi_w, T(1));
      b.roi_h = max_(b.roi_h, T(1));
    }
    b.bin_h = b.roi_h / T(pooled_h);
    b.bin_w = b.roi_w / T(pooled_w);
    b.grid_h = grid_of(b.roi_h, pooled_h, sampling_ratio);
    b.grid_w = grid_of(b.roi_w, pooled_w, sampling_ratio);
    return b;
  }
  // Samples per bin side: the ratio, or adaptive ceil(extent / bins). NaN or
  // non-positive extents give 0 (no samples: the bin is 0); counts saturate at
  // kGridCap, so the int64 conversion and grid_h * grid_w never overflow
  // (the checks reject such grids long before: kMaxRoiSamples).
  static constexpr int64_t kGridCap = int64_t(1) << 30;
  SNIPER_HD static int64_t grid_of(T extent, int64_t pooled, int64_t sampling_ratio) {
    if (sampling_ratio > 0) return min_(sampling_ratio, kGridCap);
    const T g = ceil(extent / T(pooled));
    if (!(g > T(0))) return 0;
    return g < T(kGridCap) ? int64_t(g) : kGridCap;
  }
  SNIPER_HD int64_t samples_per_bin() const { return grid_h * grid_w; }
  SNIPER_HD T count() const { return max_(T(grid_h * grid_w), T(1)); }
  SNIPER_HD T y(int64_t ph, int64_t iy, T shift) const {
    return start_h + shift + T(ph) * bin_h + (T(iy) + T(0.5)) * bin_h / T(grid_h);
  }
  SNIPER_HD T x(int64_t pw, int64_t ix, T shift) const {
    return start_w + shift + T(pw) * bin_w + (T(ix) + T(0.5)) * bin_w / T(grid_w);
  }
};

}  // namespace sniper
