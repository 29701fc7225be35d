// CPU kernels of sniper::nms and sniper::batched_nms: classic greedy NMS,
// parallel over groups.
#include <algorithm>
#include <numeric>
#include <utility>
#include <vector>

#include "../nms_checks.h"
#include "box_soa_cpu.h"
#include "groups_cpu.h"

namespace sniper {
namespace {

// Greedy NMS over one group. `idx` holds the group's input indices; kept
// ones get their flag set in `keep` (indexed by input index). Boxes are laid
// out by x1 so each kept box only visits the boxes its x-range can overlap.
template <typename scalar_t>
void nms_group(const scalar_t* boxes, const scalar_t* scores, const int64_t* idx,
               int64_t count, double iou_threshold, uint8_t* keep) {
  using A = acc_t<scalar_t>;
  BoxesSoA<A> s;
  s.gather_by_x1(boxes, scores, idx, count);
  std::vector<int64_t> by_score(count);
  std::iota(by_score.begin(), by_score.end(), int64_t(0));
  std::sort(by_score.begin(), by_score.end(), [&s](int64_t a, int64_t b) {
    return score_before(s.score[a], s.index[a], s.score[b], s.index[b]);
  });
  const A thr = static_cast<A>(iou_threshold);
  std::vector<uint8_t> suppressed(count, 0);
  for (const int64_t i : by_score) {
    if (suppressed[i]) continue;
    keep[s.index[i]] = 1;
    // IoU is symmetric and every kept box already passed against the kept
    // ones before it, so only lower-ranked boxes can cross the threshold.
    const auto [lo, hi] = s.window(s.x1[i], s.x2[i]);
    for (int64_t j = lo; j < hi; ++j) {
      if (j != i && !suppressed[j] && s.iou(i, j) > thr) suppressed[j] = 1;
    }
  }
}

Tensor nms_impl(const Tensor& boxes_in, const Tensor& scores_in,
                const std::optional<Tensor>& idxs, double iou_threshold, const char* op) {
  const std::optional<Tensor> ids = checked_group_ids(boxes_in, scores_in, idxs, op);
  check_threshold(iou_threshold, op, "iou_threshold");
  const int64_t n = boxes_in.size(0);
  if (n == 0) return new_empty(boxes_in, {0}, ScalarType::Long);
  const Tensor boxes = torch::stable::contiguous(boxes_in);
  const Tensor scores = torch::stable::contiguous(scores_in);

  std::vector<int64_t> kept;
  SNIPER_DISPATCH_FLOATING(boxes.scalar_type(), op, [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
    const scalar_t* ps = scores.const_data_ptr<scalar_t>();
    Groups g = make_groups(ids ? ids->const_data_ptr<int64_t>() : nullptr, n);
    std::vector<uint8_t> keep(n, 0);
    torch::stable::parallel_for(
        0, g.count(), group_grain(n, g.count()), [&](int64_t b, int64_t e) {
          for (int64_t k = b; k < e; ++k) {
            nms_group(pb, ps, g.order.data() + g.offsets[k],
                      g.offsets[k + 1] - g.offsets[k], iou_threshold,
                      keep.data());
          }
        });
    std::vector<std::pair<int64_t, A>> out;
    for (int64_t i = 0; i < n; ++i) {
      if (keep[i]) out.emplace_back(i, static_cast<A>(ps[i]));
    }
    sort_by_score(out);
    kept.reserve(out.size());
    for (const auto& p : out) kept.push_back(p.first);
  });

  const int64_t k = static_cast<int64_t>(kept.size());
  Tensor result = new_empty(boxes, {k}, ScalarType::Long);
  std::copy(kept.begin(), kept.end(), result.mutable_data_ptr<int64_t>());
  return result;
}

Tensor nms_cpu(Tensor boxes, Tensor scores, double iou_threshold) {
  return nms_impl(boxes, scores, std::nullopt, iou_threshold, "nms");
}

Tensor batched_nms_cpu(Tensor boxes, Tensor scores, Tensor idxs,
                       double iou_threshold) {
  return nms_impl(boxes, scores, idxs, iou_threshold, "batched_nms");
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) {
  m.impl("nms", TORCH_BOX(&nms_cpu));
  m.impl("batched_nms", TORCH_BOX(&batched_nms_cpu));
}

}  // namespace sniper
