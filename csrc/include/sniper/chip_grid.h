// The candidate chip grid of SNIPER (docs/method.md §2),
// shared by the CPU and CUDA chip-cover kernels.
//
// Along one axis of a canvas of length L, chip size K and stride d: windows
// start at 0, d, 2d, ... while start + K < L, plus one aligned to the end at
// L - K. If L <= K the only start is 0 and the window is clipped to [0, L].
// Candidates are all (x, y) pairs, in row-major order (y, then x).
#pragma once

#include <stdint.h>

#include "host_device.h"

namespace sniper {

// Candidates one group may have: both kernels keep a count per candidate
// (4 bytes; the CPU kernel also a 2-D prefix sum, 8 bytes), so 2^24 means at
// most ~200 MB for one group. A 4,000-pixel canvas with stride 32 has ~13,000.
constexpr int64_t kMaxChipCandidates = int64_t(1) << 24;

// Window starts along an axis, in double: exact for counts up to 2^53 and
// without overflow for any finite length (ChipAxis::make needs it to fit).
SNIPER_HD double chip_axis_count(double len, int64_t size, int64_t stride) {
  return len > double(size) ? ceil((len - double(size)) / double(stride)) + 1.0 : 1.0;
}

struct ChipAxis {
  double len;
  double size;    // K
  double stride;  // d
  int64_t count;  // number of window starts

  SNIPER_HD static ChipAxis make(double len, int64_t size, int64_t stride) {
    ChipAxis a{len, double(size), double(stride), 1};
    if (len > a.size) a.count = int64_t(ceil((len - a.size) / a.stride)) + 1;
    return a;
  }
  SNIPER_HD double start(int64_t i) const {
    if (len <= size) return 0.0;
    return i + 1 < count ? double(i) * stride : len - size;
  }
  SNIPER_HD double end(int64_t i) const { return min_(start(i) + size, len); }

  // Windows that contain [a, b] (a <= b, already clipped to [0, len]): the
  // inclusive range [*lo, *hi]; empty when *lo > *hi. Starts and ends both
  // grow with i: an arithmetic guess, then exact corrections by comparison.
  SNIPER_HD void containing(double a, double b, int64_t* lo, int64_t* hi) const {
    int64_t i = int64_t(ceil((b - size) / stride));  // first i with end(i) >= b
    i = i < 0 ? 0 : (i > count - 1 ? count - 1 : i);
    while (i > 0 && end(i - 1) >= b) --i;
    while (i < count && end(i) < b) ++i;
    *lo = i;
    int64_t j = int64_t(floor(a / stride));  // last j with start(j) <= a
    j = j < 0 ? 0 : (j > count - 1 ? count - 1 : j);
    while (j + 1 < count && start(j + 1) <= a) ++j;
    while (j >= 0 && start(j) > a) --j;
    *hi = j;
  }
};

// Seeded candidate order: candidate c of group g comes before c' when
// (chip_order_key(seed, g, c), c) < (chip_order_key(seed, g, c'), c'). The
// canonical (seed-less) order is c itself.
SNIPER_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

SNIPER_HD uint64_t chip_order_key(uint64_t seed, int64_t group, int64_t candidate) {
  return splitmix64(splitmix64(seed ^ splitmix64(uint64_t(group))) + uint64_t(candidate));
}

}  // namespace sniper
