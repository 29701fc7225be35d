// Splits boxes into groups of equal id for the batched CPU kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace sniper {

struct Groups {
  std::vector<int64_t> order;    // box indices, grouped, ascending within a group
  std::vector<int64_t> offsets;  // group g is order[offsets[g] .. offsets[g+1])
  int64_t count() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

// `ids` may be null (all boxes in one group). Groups come out in ascending id.
inline Groups make_groups(const int64_t* ids, int64_t n) {
  Groups g;
  g.order.resize(n);
  std::iota(g.order.begin(), g.order.end(), int64_t(0));
  g.offsets.push_back(0);
  if (ids != nullptr && n > 0) {
    std::stable_sort(g.order.begin(), g.order.end(), [ids](int64_t a, int64_t b) { return ids[a] < ids[b]; });
    for (int64_t i = 1; i < n; ++i) {
      if (ids[g.order[i]] != ids[g.order[i - 1]]) g.offsets.push_back(i);
    }
  }
  if (n > 0) g.offsets.push_back(n);
  return g;
}

// Groups of the boxes whose id lies in [0, num_groups) (all boxes in group 0
// when `ids` is null), for the fixed-capacity kernels; `id[k]` is group k's id.
struct RangedGroups : Groups {
  std::vector<int64_t> id;
};

inline RangedGroups make_groups_in_range(const int64_t* ids, int64_t n, int64_t num_groups) {
  RangedGroups g;
  g.offsets.push_back(0);
  if (ids == nullptr) {
    g.order.resize(n);
    std::iota(g.order.begin(), g.order.end(), int64_t(0));
    if (n > 0) {
      g.offsets.push_back(n);
      g.id.push_back(0);
    }
    return g;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] >= 0 && ids[i] < num_groups) g.order.push_back(i);
  }
  std::stable_sort(g.order.begin(), g.order.end(), [ids](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  const int64_t m = static_cast<int64_t>(g.order.size());
  for (int64_t i = 0; i < m; ++i) {
    if (i > 0 && ids[g.order[i]] != ids[g.order[i - 1]]) g.offsets.push_back(i);
    if (i == 0 || ids[g.order[i]] != ids[g.order[i - 1]]) g.id.push_back(ids[g.order[i]]);
  }
  if (m > 0) g.offsets.push_back(m);
  return g;
}

// Grain for torch's parallel_for over groups: enough boxes per task to pay
// for the scheduling, at least one group.
inline int64_t group_grain(int64_t boxes, int64_t groups) {
  if (groups <= 0) return 1;
  const int64_t per_group = std::max<int64_t>(1, boxes / groups);
  return std::max<int64_t>(1, 2048 / per_group);
}

}  // namespace sniper
