// Boxes gathered into structure-of-arrays form in the accumulation type, the
// layout the greedy CPU kernels scan over and over.
#pragma once

#include <cstdint>
#include <vector>

#include <sniper/box_math.h>
#include <sniper/nms_rules.h>

namespace sniper {

template <typename A>
struct BoxesSoA {
  std::vector<A> x1, y1, x2, y2, area, score;
  std::vector<int64_t> index;  // input index of each entry

  // Gathers boxes[index[k]] for the `count` indices at `idx`.
  template <typename scalar_t>
  void gather(const scalar_t* boxes, const scalar_t* scores,
              const int64_t* idx, int64_t count) {
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

  A iou(int64_t i, int64_t j) const {
    return box_iou(x1[i], y1[i], x2[i], y2[i], area[i], x1[j], y1[j], x2[j],
                   y2[j], area[j]);
  }
};

// Sorts (index, score) pairs into the output order of the NMS family:
// score descending, ties to the lower input index.
template <typename A>
void sort_by_score(std::vector<std::pair<int64_t, A>>& kept) {
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
    return score_before(a.second, a.first, b.second, b.first);
  });
}

}  // namespace sniper
