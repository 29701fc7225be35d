// Splits boxes into groups of equal id for the batched CPU kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace sniper {

struct Groups {
  std::vector<int64_t> order;    // box indices, grouped, ascending within a group
  std::vector<int64_t> offsets;  // group g is order[offsets[g] .. offsets[g+1])
  std::vector<int64_t> id;       // group g's id (0 when there are no ids)
  int64_t count() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

// Groups the boxes listed (ascending) in `rows` by equal id, in ascending id;
// `ids` null puts them all in one group.
inline Groups group_rows(const int64_t* ids, std::vector<int64_t> rows) {
  Groups g;
  g.order = std::move(rows);
  g.offsets.push_back(0);
  const int64_t m = static_cast<int64_t>(g.order.size());
  if (m == 0) return g;
  if (ids != nullptr) {
    std::stable_sort(g.order.begin(), g.order.end(), [ids](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  }
  for (int64_t i = 0; i < m; ++i) {
    if (i > 0 && (ids == nullptr || ids[g.order[i]] == ids[g.order[i - 1]])) continue;
    if (i > 0) g.offsets.push_back(i);
    g.id.push_back(ids != nullptr ? ids[g.order[i]] : 0);
  }
  g.offsets.push_back(m);
  return g;
}

// All `n` boxes by id (`ids` may be null: one group).
inline Groups make_groups(const int64_t* ids, int64_t n) {
  std::vector<int64_t> rows(n);
  std::iota(rows.begin(), rows.end(), int64_t(0));
  return group_rows(ids, std::move(rows));
}

// The boxes whose id lies in [0, num_groups) (all boxes in group 0 when `ids`
// is null), for the fixed-capacity kernels.
inline Groups make_groups_in_range(const int64_t* ids, int64_t n, int64_t num_groups) {
  if (ids == nullptr) return make_groups(nullptr, n);
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] >= 0 && ids[i] < num_groups) rows.push_back(i);
  }
  return group_rows(ids, std::move(rows));
}

// Grain for torch's parallel_for over groups: enough boxes per task to pay
// for the scheduling, at least one group.
inline int64_t group_grain(int64_t boxes, int64_t groups) {
  if (groups <= 0) return 1;
  const int64_t per_group = std::max<int64_t>(1, boxes / groups);
  return std::max<int64_t>(1, 2048 / per_group);
}

}  // namespace sniper
