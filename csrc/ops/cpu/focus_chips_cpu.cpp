// CPU kernel of sniper::focus_chips (AutoFocus's FocusChips), parallel over maps.
//
// Per map: the on cells (prob >= threshold) dilated along rows, then columns (byte ORs over short
// windows, prefix counts over long ones: O(h w) whatever the dilation; rows without an on cell
// are skipped), the 8-connected components of the mask's row runs (a union-find over runs, so
// sparse maps cost little beyond one scan), their boxes grown to the minimum size, then merged
// until no two touch: pairwise while few boxes are left, else by painting them into the mask (a
// 2-D difference array) and labelling it again. The fixpoint does not depend
// on the order of the merges (docs/kernels.md), so the CUDA kernel, which only paints, finds the
// same chips. Chips are sorted by (y1, x1, y2, x2) per map.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <sniper/focus_rules.h>

#include "../focus_chips_common.h"

namespace sniper {
namespace {

struct Run {
  int32_t y, x1, x2;  // cells [x1, x2) of row y
};

// Working memory of one thread, reused from map to map.
struct Scratch {
  std::vector<uint8_t> rows;   // the on cells dilated along x
  std::vector<uint8_t> mask;   // the cells of the components (0/1)
  std::vector<int32_t> count;  // row prefix counts; the painting's difference array
  std::vector<int32_t> column;
  std::vector<uint8_t> on;         // one row's on cells
  std::vector<int32_t> row_count;  // rows with an on cell, prefix counts
  std::vector<Run> runs;
  std::vector<int32_t> parent;
  std::vector<FocusBox> run_box;
};

int32_t find_root(std::vector<int32_t>& parent, int32_t r) {
  while (parent[r] != r) {
    parent[r] = parent[parent[r]];  // path halving
    r = parent[r];
  }
  return r;
}

void unite(std::vector<int32_t>& parent, int32_t a, int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a != b) parent[std::max(a, b)] = std::min(a, b);
}

// The bounding boxes of the 8-connected components of `mask` (h x w, values 0/1), in `out`.
void label(const uint8_t* mask, int32_t h, int32_t w, Scratch& s, std::vector<FocusBox>& out) {
  s.runs.clear();
  s.parent.clear();
  size_t prev_begin = 0, prev_end = 0;
  for (int32_t y = 0; y < h; ++y) {
    const uint8_t* row = mask + int64_t(y) * w;
    const size_t begin = s.runs.size();
    for (int32_t x = 0; x < w;) {
      const void* on = std::memchr(row + x, 1, size_t(w - x));
      if (on == nullptr) break;
      const int32_t x1 = int32_t(static_cast<const uint8_t*>(on) - row);
      const void* off = std::memchr(row + x1, 0, size_t(w - x1));
      const int32_t x2 = off ? int32_t(static_cast<const uint8_t*>(off) - row) : w;
      s.parent.push_back(int32_t(s.runs.size()));
      s.runs.push_back(Run{y, x1, x2});
      x = x2;
    }
    // Runs of adjacent rows are 8-connected when [x1, x2] ranges overlap (focus_touch in one row
    // pair); both rows' runs are sorted, so one merge-like walk finds every such pair.
    size_t i = prev_begin, j = begin;
    const size_t end = s.runs.size();
    while (i < prev_end && j < end) {
      const Run &a = s.runs[i], &b = s.runs[j];
      if (a.x1 <= b.x2 && b.x1 <= a.x2) unite(s.parent, int32_t(i), int32_t(j));
      if (a.x2 < b.x2)
        ++i;
      else
        ++j;
    }
    prev_begin = begin;
    prev_end = end;
  }
  const size_t n = s.runs.size();
  s.run_box.resize(n);
  for (size_t r = 0; r < n; ++r) {
    const Run& run = s.runs[r];
    s.run_box[r] = FocusBox{run.x1, run.y, run.x2, run.y + 1};
  }
  for (size_t r = 0; r < n; ++r) {
    const int32_t root = find_root(s.parent, int32_t(r));
    if (size_t(root) != r) s.run_box[root] = focus_union(s.run_box[root], s.run_box[r]);
  }
  out.clear();
  for (size_t r = 0; r < n; ++r) {
    if (s.parent[r] == int32_t(r)) out.push_back(s.run_box[r]);
  }
}

// The threshold for comparisons in the accumulation type A: v >= threshold_in<A>(t) exactly when
// focus_on(double(v), t) (for float, the least float >= t), so comparisons vectorise in float.
template <typename A>
A threshold_in(double t);
template <>
double threshold_in<double>(double t) {
  return t;
}
template <>
float threshold_in<float>(double t) {
  constexpr float kMax = std::numeric_limits<float>::max();
  if (t > double(kMax)) return std::numeric_limits<float>::infinity();
  if (t < -double(kMax)) return -kMax;
  float f = static_cast<float>(t);
  if (static_cast<double>(f) < t) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// Windows of up to this many cells are ORed directly (vectorised byte loops); longer ones use
// prefix counts, so any dilation costs O(h w).
constexpr int64_t kDirectWindow = 32;

// dst[x] = 1 when src[x - before .. x + after] (clipped to [0, n)) holds a 1; dst is zero on entry.
void dilate_line(const uint8_t* src, uint8_t* dst, int32_t n, int64_t before, int64_t after, int32_t* count) {
  if (before + after < kDirectWindow) {
    for (int64_t s = -before; s <= after; ++s) {
      const int32_t lo = int32_t(std::max<int64_t>(0, -s)), hi = int32_t(std::min<int64_t>(n, n - s));
      for (int32_t x = lo; x < hi; ++x) dst[x] |= src[x + s];
    }
    return;
  }
  count[0] = 0;
  for (int32_t x = 0; x < n; ++x) count[x + 1] = count[x] + src[x];
  for (int32_t x = 0; x < n; ++x) {
    int64_t first, last;
    focus_dilation_window(before + after + 1, x, n, &first, &last);
    dst[x] = count[last + 1] - count[first] > 0;
  }
}

// s.mask = the on cells of the map dilated by a d x d square, within the valid h x w region: along
// x per row (rows without an on cell are skipped), then along y.
template <typename scalar_t>
void dilate(const scalar_t* prob, int64_t stride, int32_t h, int32_t w, double threshold, int64_t d, Scratch& s) {
  const size_t cells = size_t(h) * size_t(w);
  const int64_t before = d / 2, after = (d - 1) / 2;  // the source window of p: [p - before, p + after]
  s.rows.assign(cells, 0);
  s.mask.assign(cells, 0);
  s.on.resize(size_t(w));
  s.count.resize(size_t(std::max(h, w)) + 1);
  s.row_count.assign(size_t(h) + 1, 0);  // rows with an on cell among rows [0, y)
  using A = acc_t<scalar_t>;
  const A t = threshold_in<A>(threshold);
  uint8_t* on = s.on.data();
  for (int32_t y = 0; y < h; ++y) {
    const scalar_t* src = prob + int64_t(y) * stride;
    int any = 0;  // a reduction without stores: vectorised, and all most rows of a sparse map need
    for (int32_t x = 0; x < w; ++x) any |= static_cast<A>(src[x]) >= t;
    s.row_count[y + 1] = s.row_count[y] + any;
    if (!any) continue;
    for (int32_t x = 0; x < w; ++x) on[x] = static_cast<A>(src[x]) >= t;
    dilate_line(on, s.rows.data() + int64_t(y) * w, w, before, after, s.count.data());
  }
  const int32_t* rc = s.row_count.data();
  if (rc[h] == 0) return;
  if (before + after < kDirectWindow) {
    for (int32_t y = 0; y < h; ++y) {
      const int32_t r0 = int32_t(std::max<int64_t>(0, y - before)), r1 = int32_t(std::min<int64_t>(h - 1, y + after));
      if (rc[r1 + 1] == rc[r0]) continue;  // no on cell in the window's rows
      uint8_t* dst = s.mask.data() + int64_t(y) * w;
      for (int32_t r = r0; r <= r1; ++r) {
        if (rc[r + 1] == rc[r]) continue;
        const uint8_t* src = s.rows.data() + int64_t(r) * w;
        for (int32_t x = 0; x < w; ++x) dst[x] |= src[x];
      }
    }
    return;
  }
  // Long windows: per-column counts of the rows in a sliding window.
  s.column.assign(size_t(w), 0);
  int32_t* col = s.column.data();
  auto add = [&](int64_t r, int32_t sign) {
    if (r < 0 || r >= h || rc[r + 1] == rc[r]) return;
    const uint8_t* src = s.rows.data() + r * w;
    for (int32_t x = 0; x < w; ++x) col[x] += sign * src[x];
  };
  for (int64_t r = 0; r <= std::min<int64_t>(after, h - 1); ++r) add(r, 1);
  for (int64_t y = 0; y < h; ++y) {
    const int64_t r0 = std::max<int64_t>(0, y - before), r1 = std::min<int64_t>(h - 1, y + after);
    if (rc[r1 + 1] != rc[r0]) {
      uint8_t* dst = s.mask.data() + y * w;
      for (int32_t x = 0; x < w; ++x) dst[x] = col[x] > 0;
    }
    if (y + 1 + after < h) add(y + 1 + after, 1);
    if (y - before >= 0) add(y - before, -1);
  }
}

// s.mask = the cells of the boxes (a 2-D difference array, summed).
void paint(const std::vector<FocusBox>& boxes, int32_t h, int32_t w, Scratch& s) {
  const size_t cells = size_t(h) * size_t(w);
  s.count.assign(cells, 0);
  int32_t* c = s.count.data();
  for (const FocusBox& b : boxes) {
    c[int64_t(b.y1) * w + b.x1] += 1;
    if (b.x2 < w) c[int64_t(b.y1) * w + b.x2] -= 1;
    if (b.y2 < h) {
      c[int64_t(b.y2) * w + b.x1] -= 1;
      if (b.x2 < w) c[int64_t(b.y2) * w + b.x2] += 1;
    }
  }
  s.column.assign(size_t(w), 0);
  s.mask.resize(cells);
  for (int32_t y = 0; y < h; ++y) {
    int32_t run = 0;
    for (int32_t x = 0; x < w; ++x) {
      run += c[int64_t(y) * w + x];
      s.column[x] += run;
      s.mask[int64_t(y) * w + x] = s.column[x] > 0;
    }
  }
}

// One pass over all pairs, merging touching boxes; false when none touch (the fixpoint).
bool merge_pairs(std::vector<FocusBox>& boxes) {
  bool merged = false;
  for (size_t i = 0; i < boxes.size(); ++i) {
    for (size_t j = i + 1; j < boxes.size();) {
      if (focus_touch(boxes[i], boxes[j])) {
        boxes[i] = focus_union(boxes[i], boxes[j]);
        boxes[j] = boxes.back();
        boxes.pop_back();
        merged = true;
        j = i + 1;  // box i grew: look at the others again
      } else {
        ++j;
      }
    }
  }
  return merged;
}

// Grown component boxes -> the fixpoint of painting, labelling and growing. Growing a union of
// boxes that already have the minimum size changes nothing, so only merges are left to do.
void merge_boxes(std::vector<FocusBox>& boxes, int32_t h, int32_t w, int64_t min_size, Scratch& s) {
  const int64_t cells = int64_t(h) * w;
  while (boxes.size() > 1) {
    const int64_t n = int64_t(boxes.size());
    if (n <= 32 || n * n <= cells) {
      if (!merge_pairs(boxes)) return;
      continue;
    }
    paint(boxes, h, w, s);
    label(s.mask.data(), h, w, s, boxes);
    for (FocusBox& b : boxes) b = focus_grow(b, min_size, w, h);
    if (int64_t(boxes.size()) == n) return;  // every component is one box: nothing changed
  }
}

template <typename scalar_t>
void focus_map(const scalar_t* prob, int64_t stride, int32_t h, int32_t w, double threshold, int64_t dilation,
               int64_t min_size, Scratch& s, std::vector<FocusBox>& out) {
  out.clear();
  if (h == 0 || w == 0) return;
  dilate(prob, stride, h, w, threshold, dilation, s);
  label(s.mask.data(), h, w, s, out);
  for (FocusBox& b : out) b = focus_grow(b, min_size, w, h);
  merge_boxes(out, h, w, min_size, s);
  std::sort(out.begin(), out.end(), [](const FocusBox& a, const FocusBox& b) {
    if (a.y1 != b.y1) return a.y1 < b.y1;
    if (a.x1 != b.x1) return a.x1 < b.x1;
    if (a.y2 != b.y2) return a.y2 < b.y2;
    return a.x2 < b.x2;
  });
}

struct FocusChipsCpu : CpuBackend {
  static int64_t focus_chips(const Tensor& prob, const Tensor& /*sizes*/, const int64_t* host_sizes, double threshold,
                             int64_t dilation, int64_t min_size, int64_t /*total_cells*/, Tensor& out) {
    const int64_t maps = prob.size(0), H = prob.size(1), W = prob.size(2);
    std::vector<std::vector<FocusBox>> chips(static_cast<size_t>(maps));
    SNIPER_DISPATCH_FLOATING(prob.scalar_type(), "focus_chips", [&] {
      const scalar_t* p = prob.const_data_ptr<scalar_t>();
      const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, H * W));  // >= 64k cells a chunk
      torch::stable::parallel_for(0, maps, grain, [&](int64_t begin, int64_t end) {
        Scratch s;
        for (int64_t b = begin; b < end; ++b) {
          focus_map(p + b * H * W, W, int32_t(host_sizes[2 * b]), int32_t(host_sizes[2 * b + 1]), threshold, dilation,
                    min_size, s, chips[size_t(b)]);
        }
      });
    });
    int64_t* o = out.mutable_data_ptr<int64_t>();
    int64_t row = 0;
    for (int64_t b = 0; b < maps; ++b) {
      for (const FocusBox& c : chips[size_t(b)]) {
        int64_t* r = o + 5 * row++;
        r[0] = b;
        r[1] = c.x1;
        r[2] = c.y1;
        r[3] = c.x2;
        r[4] = c.y2;
      }
    }
    return row;
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_focus_chips<FocusChipsCpu>(m); }

}  // namespace sniper
