// Boxes gathered into structure-of-arrays form in the accumulation type, the
// layout the greedy CPU kernels scan over and over.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include <sniper/box_math.h>
#include <sniper/nms_rules.h>

namespace sniper {

template <typename A>
struct BoxesSoA {
  std::vector<A> x1, y1, x2, y2, area, score;
  std::vector<int64_t> index;  // input index of each entry
  std::vector<A> max_x2;       // running max of x2 (gather_by_x1 only)

  // Gathers boxes[index[k]] for the `count` indices at `idx`.
  template <typename scalar_t>
  void gather(const scalar_t* boxes, const scalar_t* scores, const int64_t* idx, int64_t count) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area, &score}) v->resize(count);
    index.assign(idx, idx + count);
    for (int64_t k = 0; k < count; ++k) {
      const scalar_t* b = boxes + 4 * idx[k];
      x1[k] = static_cast<A>(b[0]);
      y1[k] = static_cast<A>(b[1]);
      x2[k] = static_cast<A>(b[2]);
      y2[k] = static_cast<A>(b[3]);
      area[k] = box_area(x1[k], y1[k], x2[k], y2[k]);
      score[k] = static_cast<A>(scores[idx[k]]);
    }
  }

  // Gathers the `count` boxes at `idx` in ascending x1 order (ties: input
  // order) and builds the index used by window().
  template <typename scalar_t>
  void gather_by_x1(const scalar_t* boxes, const scalar_t* scores, const int64_t* idx, int64_t count) {
    std::vector<int64_t> sorted(idx, idx + count);
    std::stable_sort(sorted.begin(), sorted.end(), [boxes](int64_t a, int64_t b) {
      return static_cast<A>(boxes[4 * a]) < static_cast<A>(boxes[4 * b]);
    });
    gather(boxes, scores, sorted.data(), count);
    max_x2.resize(count);
    for (int64_t k = 0; k < count; ++k) {
      max_x2[k] = k == 0 ? x2[k] : max_(max_x2[k - 1], x2[k]);
    }
  }

  // After gather_by_x1: the range [lo, hi) of entries that can intersect
  // the x-interval (bx1, bx2). Outside it a box has x2 <= bx1 (running max)
  // or x1 >= bx2, so its intersection, and IoU, is exactly 0. Comparisons
  // only, no arithmetic: the pruning never changes a result.
  std::pair<int64_t, int64_t> window(A bx1, A bx2) const {
    const int64_t lo = std::upper_bound(max_x2.begin(), max_x2.end(), bx1) - max_x2.begin();
    const int64_t hi = std::lower_bound(x1.begin(), x1.end(), bx2) - x1.begin();
    return {lo, hi};
  }

  A iou(int64_t i, int64_t j) const {
    return box_iou(x1[i], y1[i], x2[i], y2[i], area[i], x1[j], y1[j], x2[j], y2[j], area[j]);
  }
};

// Sorts (index, score) pairs into the output order of the NMS family:
// score descending, ties to the lower input index.
template <typename A>
void sort_by_score(std::vector<std::pair<int64_t, A>>& kept) {
  std::sort(kept.begin(), kept.end(),
            [](const auto& a, const auto& b) { return score_before(a.second, a.first, b.second, b.first); });
}

}  // namespace sniper
