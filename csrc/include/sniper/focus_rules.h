// The rules of AutoFocus's FocusChips (sniper::focus_chips), shared by the CPU
// and CUDA kernels: which cells are on, the dilation window, how a component's
// box grows to the minimum chip size, when two boxes merge, and the bound on
// the chips of one map. All integer arithmetic: CPU and CUDA agree exactly.
#pragma once

#include <stdint.h>

#include "host_device.h"

namespace sniper {

// A chip (or component box) in cells, half-open: [x1, x2) x [y1, y2).
struct FocusBox {
  int32_t x1, y1, x2, y2;
};

// A cell is on when its probability is >= threshold (NaN is off). Half types
// are widened exactly (to float, then double) before the comparison.
SNIPER_HD bool focus_on(double prob, double threshold) { return prob >= threshold; }

// Dilation with a d x d square of offsets -(d-1)/2 .. d/2: every on cell s turns
// on s + o, so a cell p is on when an on cell lies in [p - d/2, p + (d-1)/2];
// clipped to [0, extent). Returns false when the window misses the axis
// (never for 0 <= p < extent, kept for callers that ask outside).
SNIPER_HD bool focus_dilation_window(int64_t d, int64_t p, int64_t extent, int64_t* first, int64_t* last) {
  const int64_t half_hi = d / 2, half_lo = (d - 1) / 2;  // d >= 1: both >= 0, no overflow below
  int64_t a = p - half_hi, b = p + (half_lo < extent ? half_lo : extent);
  if (a < 0) a = 0;
  if (b > extent - 1) b = extent - 1;
  *first = a;
  *last = b;
  return a <= b;
}

// Grows [lo, hi) to at least min(min_size, extent) about its centre: the
// missing length is split with the smaller half before (lo - (kk - len) / 2),
// then the window is shifted inside [0, extent). Longer intervals stay.
SNIPER_HD void focus_grow_axis(int32_t* lo, int32_t* hi, int64_t min_size, int32_t extent) {
  const int64_t kk = min_size < int64_t(extent) ? min_size : int64_t(extent);
  const int64_t len = int64_t(*hi) - int64_t(*lo);
  if (len >= kk) return;
  int64_t a = int64_t(*lo) - (kk - len) / 2;
  int64_t b = a + kk;
  if (a < 0) {
    b -= a;
    a = 0;
  }
  if (b > extent) {
    a -= b - extent;
    b = extent;
  }
  *lo = int32_t(a);
  *hi = int32_t(b);
}

SNIPER_HD FocusBox focus_grow(FocusBox b, int64_t min_size, int32_t width, int32_t height) {
  focus_grow_axis(&b.x1, &b.x2, min_size, width);
  focus_grow_axis(&b.y1, &b.y2, min_size, height);
  return b;
}

// Two boxes touch when their cells overlap or are 8-adjacent: painted into one
// mask they are one 8-connected component.
SNIPER_HD bool focus_touch(const FocusBox& a, const FocusBox& b) {
  return a.x1 <= b.x2 && b.x1 <= a.x2 && a.y1 <= b.y2 && b.y1 <= a.y2;
}

SNIPER_HD FocusBox focus_union(const FocusBox& a, const FocusBox& b) {
  return FocusBox{min_(a.x1, b.x1), min_(a.y1, b.y1), max_(a.x2, b.x2), max_(a.y2, b.y2)};
}

// At most this many chips (and components) in an h x w map: they are pairwise
// not 8-adjacent, so no two share a 2 x 2 block of the grid.
SNIPER_HD int64_t focus_max_chips(int64_t h, int64_t w) { return ((h + 1) / 2) * ((w + 1) / 2); }

// The most cells one map may have (int32 cell indices in both kernels).
constexpr int64_t kFocusMaxCells = (int64_t(1) << 31) - 1;

}  // namespace sniper
