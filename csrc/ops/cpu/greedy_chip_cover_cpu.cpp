// CPU kernel of sniper::greedy_chip_cover, parallel over groups.
//
// Every box is covered by a rectangle of candidates (a range of x starts
// times a range of y starts), so per-candidate counts of uncovered boxes are
// built with a 2-D difference array, and covering a box subtracts it from its
// rectangle only. Uncovered boxes are kept in a bitset.
#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <vector>

#include <sniper/chip_grid.h>

#include "../greedy_chip_cover_common.h"
#include "groups_cpu.h"

namespace sniper {
namespace {

struct Rect {
  int64_t x_lo, x_hi, y_lo, y_hi;  // inclusive candidate index ranges
  bool empty() const { return x_lo > x_hi || y_lo > y_hi; }
};

struct CoverResult {
  std::vector<std::array<double, 4>> chips;
};

template <typename scalar_t>
void cover_group(const scalar_t* boxes, const int64_t* members, int64_t count, double width, double height,
                 int64_t chip_size, int64_t stride, std::optional<int64_t> seed, int64_t group, CoverResult& out,
                 int64_t* box_chip /* by input index, local chip ids */) {
  const ChipAxis ax = ChipAxis::make(width, chip_size, stride);
  const ChipAxis ay = ChipAxis::make(height, chip_size, stride);
  const int64_t nx = ax.count, ny = ay.count;

  std::vector<Rect> rect(count);
  std::vector<int64_t> diff((ny + 1) * (nx + 1), 0);
  std::vector<uint64_t> uncovered((count + 63) / 64, 0);
  for (int64_t m = 0; m < count; ++m) {
    const scalar_t* b = boxes + 4 * members[m];
    const double x1 = std::min(std::max(double(b[0]), 0.0), width);
    const double y1 = std::min(std::max(double(b[1]), 0.0), height);
    const double x2 = std::min(std::max(double(b[2]), 0.0), width);
    const double y2 = std::min(std::max(double(b[3]), 0.0), height);
    Rect& r = rect[m];
    ax.containing(x1, x2, &r.x_lo, &r.x_hi);
    ay.containing(y1, y2, &r.y_lo, &r.y_hi);
    box_chip[members[m]] = -1;
    if (r.empty()) continue;
    uncovered[m / 64] |= uint64_t(1) << (m % 64);
    diff[r.y_lo * (nx + 1) + r.x_lo] += 1;
    diff[r.y_lo * (nx + 1) + r.x_hi + 1] -= 1;
    diff[(r.y_hi + 1) * (nx + 1) + r.x_lo] -= 1;
    diff[(r.y_hi + 1) * (nx + 1) + r.x_hi + 1] += 1;
  }
  // counts[c] = uncovered boxes inside candidate c = iy * nx + ix.
  std::vector<int32_t> counts(nx * ny);
  for (int64_t iy = 0; iy < ny; ++iy) {
    for (int64_t ix = 0; ix < nx; ++ix) {
      int64_t v = diff[iy * (nx + 1) + ix];
      if (ix > 0) v += diff[iy * (nx + 1) + ix - 1];
      if (iy > 0) v += diff[(iy - 1) * (nx + 1) + ix];
      if (ix > 0 && iy > 0) v -= diff[(iy - 1) * (nx + 1) + ix - 1];
      diff[iy * (nx + 1) + ix] = v;  // in place: diff becomes the prefix sum
      counts[iy * nx + ix] = static_cast<int32_t>(v);
    }
  }
  std::vector<uint64_t> key;
  if (seed) {
    key.resize(nx * ny);
    for (int64_t c = 0; c < nx * ny; ++c) key[c] = chip_order_key(uint64_t(*seed), group, c);
  }
  // Counts only ever decrease, so the best count is non-increasing: look
  // for the running maximum first, and rescan for a new one only when no
  // candidate has it any more.
  const int64_t nc = nx * ny;
  int32_t top = 0;
  for (int64_t c = 0; c < nc; ++c) top = std::max(top, counts[c]);

  while (true) {
    int64_t best = -1;
    for (int attempt = 0; attempt < 2 && best < 0 && top > 0; ++attempt) {
      if (attempt == 1) {
        top = 0;
        for (int64_t c = 0; c < nc; ++c) top = std::max(top, counts[c]);
        if (top == 0) break;
      }
      if (!seed) {
        best = std::find(counts.begin(), counts.end(), top) - counts.begin();
        if (best == nc) best = -1;
      } else {
        for (int64_t c = 0; c < nc; ++c) {
          if (counts[c] == top && (best < 0 || key[c] < key[best] || (key[c] == key[best] && c < best))) {
            best = c;
          }
        }
      }
    }
    if (best < 0) break;
    const int64_t bx = best % nx, by = best / nx;
    const int64_t chip = static_cast<int64_t>(out.chips.size());
    out.chips.push_back({ax.start(bx), ay.start(by), ax.end(bx), ay.end(by)});
    for (size_t w = 0; w < uncovered.size(); ++w) {
      for (uint64_t bits = uncovered[w]; bits; bits &= bits - 1) {
        const int64_t m = int64_t(w) * 64 + __builtin_ctzll(bits);
        const Rect& r = rect[m];
        if (bx < r.x_lo || bx > r.x_hi || by < r.y_lo || by > r.y_hi) continue;
        uncovered[w] &= ~(uint64_t(1) << (m % 64));
        box_chip[members[m]] = chip;
        for (int64_t iy = r.y_lo; iy <= r.y_hi; ++iy) {
          for (int64_t ix = r.x_lo; ix <= r.x_hi; ++ix) counts[iy * nx + ix] -= 1;
        }
      }
    }
  }
}

struct ChipCoverCpu : CpuBackend {
  static int64_t greedy_chip_cover(const Tensor& boxes, const Tensor& box_group, const Tensor& canvas,
                                   int64_t chip_size, int64_t stride, std::optional<int64_t> seed, Tensor& chips,
                                   Tensor& chip_group, Tensor& box_chip) {
    const char* op = "greedy_chip_cover";
    const int64_t n = boxes.size(0), groups = canvas.size(0);
    const int64_t* gid = box_group.const_data_ptr<int64_t>();
    const double* wh = canvas.const_data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) {
      STD_TORCH_CHECK(gid[i] >= 0 && gid[i] < groups, op, ": `box_group`[", i, "] = ", gid[i], " is outside [0, ",
                      groups, ") (one group per row of canvas_wh)");
    }
    int64_t* pbc = box_chip.mutable_data_ptr<int64_t>();
    Groups g = make_groups(gid, n);
    std::vector<CoverResult> results(g.count());

    SNIPER_DISPATCH_FLOATING(boxes.scalar_type(), op, [&] {
      const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {
        const double x1 = pb[4 * i], y1 = pb[4 * i + 1], x2 = pb[4 * i + 2], y2 = pb[4 * i + 3];
        STD_TORCH_CHECK(
            std::isfinite(x1) && std::isfinite(y1) && std::isfinite(x2) && std::isfinite(y2) && x1 <= x2 && y1 <= y2,
            op, ": `boxes`[", i, "] = (", x1, ", ", y1, ", ", x2, ", ", y2,
            ") must be finite with x1 <= x2 and y1 <= y2");
      }
      torch::stable::parallel_for(0, g.count(), 1, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          const int64_t* members = g.order.data() + g.offsets[k];
          const int64_t group = gid[members[0]];
          cover_group(pb, members, g.offsets[k + 1] - g.offsets[k], wh[2 * group], wh[2 * group + 1], chip_size, stride,
                      seed, group, results[k], pbc);
        }
      });
    });

    // Concatenate: groups ascending, chips in selection order; make chip ids global.
    int64_t total = 0;
    std::vector<int64_t> first(g.count());
    for (int64_t k = 0; k < g.count(); ++k) {
      first[k] = total;
      total += static_cast<int64_t>(results[k].chips.size());
    }
    int64_t* pcg = chip_group.mutable_data_ptr<int64_t>();
    for (int64_t k = 0; k < g.count(); ++k) {
      const int64_t* members = g.order.data() + g.offsets[k];
      const int64_t group = gid[members[0]];
      for (int64_t m = 0; m < g.offsets[k + 1] - g.offsets[k]; ++m) {
        if (pbc[members[m]] >= 0) pbc[members[m]] += first[k];
      }
      for (size_t c = 0; c < results[k].chips.size(); ++c) pcg[first[k] + c] = group;
    }
    auto write = [&](auto* pc) {
      for (int64_t k = 0; k < g.count(); ++k) {
        for (size_t c = 0; c < results[k].chips.size(); ++c) {
          for (int j = 0; j < 4; ++j) pc[4 * (first[k] + c) + j] = results[k].chips[c][j];
        }
      }
    };
    if (chips.scalar_type() == ScalarType::Double)
      write(chips.mutable_data_ptr<double>());
    else
      write(chips.mutable_data_ptr<float>());
    return total;
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_greedy_chip_cover<ChipCoverCpu>(m); }

}  // namespace sniper
