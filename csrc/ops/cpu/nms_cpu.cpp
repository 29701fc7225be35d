// CPU kernels of sniper::nms and sniper::batched_nms: classic greedy NMS,
// parallel over groups.
#include <algorithm>
#include <utility>
#include <vector>

#include "../nms_checks.h"
#include "box_soa_cpu.h"
#include "groups_cpu.h"

namespace sniper {
namespace {

// Greedy NMS over one group. `idx` holds the group's input indices; kept
// ones get their flag set in `keep` (indexed by input index).
template <typename scalar_t>
void nms_group(const scalar_t* boxes, const scalar_t* scores, int64_t* idx,
               int64_t count, double iou_threshold, uint8_t* keep) {
  using A = acc_t<scalar_t>;
  std::sort(idx, idx + count, [scores](int64_t a, int64_t b) {
    return score_before(static_cast<A>(scores[a]), a,
                        static_cast<A>(scores[b]), b);
  });
  BoxesSoA<A> s;
  s.gather(boxes, scores, idx, count);
  const A thr = static_cast<A>(iou_threshold);
  std::vector<uint8_t> suppressed(count, 0);
  for (int64_t i = 0; i < count; ++i) {
    if (suppressed[i]) continue;
    keep[idx[i]] = 1;
    for (int64_t j = i + 1; j < count; ++j) {
      if (!suppressed[j] && s.iou(i, j) > thr) suppressed[j] = 1;
    }
  }
}

Tensor nms_impl(const Tensor& boxes_in, const Tensor& scores_in,
                const Tensor* idxs_in, double iou_threshold, const char* op) {
  check_scored_boxes(boxes_in, scores_in, op);
  check_threshold(iou_threshold, op, "iou_threshold");
  const int64_t n = boxes_in.size(0);
  std::optional<Tensor> ids;
  if (idxs_in != nullptr) {
    check_same_device(boxes_in, *idxs_in, op, "boxes", "idxs");
    ids = group_ids(*idxs_in, n, op);
  }
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
  return nms_impl(boxes, scores, nullptr, iou_threshold, "nms");
}

Tensor batched_nms_cpu(Tensor boxes, Tensor scores, Tensor idxs,
                       double iou_threshold) {
  return nms_impl(boxes, scores, &idxs, iou_threshold, "batched_nms");
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) {
  m.impl("nms", TORCH_BOX(&nms_cpu));
  m.impl("batched_nms", TORCH_BOX(&batched_nms_cpu));
}

}  // namespace sniper
