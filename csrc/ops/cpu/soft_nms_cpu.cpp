// CPU kernel of sniper::soft_nms: exact sequential greedy Soft-NMS inside
// each group, groups in parallel. Each selection step makes one fused pass
// over the surviving boxes: decay, drop, and find the next maximum.
#include <algorithm>
#include <utility>
#include <vector>

#include "../nms_checks.h"
#include "box_soa_cpu.h"
#include "groups_cpu.h"

namespace sniper {
namespace {

template <typename A>
struct SoftNmsParams {
  int64_t method;
  A sigma, iou_threshold, score_threshold;
};

// Appends the group's kept (index, decayed score) pairs to `out` in
// selection order.
template <typename scalar_t, typename A>
void soft_nms_group(const scalar_t* boxes, const scalar_t* scores,
                    const int64_t* idx, int64_t count,
                    const SoftNmsParams<A>& p,
                    std::vector<std::pair<int64_t, A>>& out) {
  BoxesSoA<A> s;
  s.gather(boxes, scores, idx, count);
  // Live entries, and the best of them (score desc, index asc).
  std::vector<int64_t> live;
  live.reserve(count);
  int64_t best = -1;
  for (int64_t k = 0; k < count; ++k) {
    if (!(s.score[k] >= p.score_threshold)) continue;
    live.push_back(k);
    if (best < 0 || score_before(s.score[k], s.index[k], s.score[best],
                                 s.index[best])) {
      best = k;
    }
  }
  while (best >= 0) {
    const int64_t b = best;
    out.emplace_back(s.index[b], s.score[b]);
    const A bx1 = s.x1[b], by1 = s.y1[b], bx2 = s.x2[b], by2 = s.y2[b],
            barea = s.area[b];
    best = -1;
    size_t w = 0;
    for (size_t r = 0; r < live.size(); ++r) {
      const int64_t k = live[r];
      if (k == b) continue;
      const A iou = box_iou(bx1, by1, bx2, by2, barea, s.x1[k], s.y1[k],
                            s.x2[k], s.y2[k], s.area[k]);
      A sc = s.score[k];
      if (iou > A(0)) {
        sc *= soft_nms_weight(p.method, iou, p.sigma, p.iou_threshold);
        s.score[k] = sc;
      }
      if (!(sc >= p.score_threshold)) continue;
      live[w++] = k;
      if (best < 0 || score_before(sc, s.index[k], s.score[best],
                                   s.index[best])) {
        best = k;
      }
    }
    live.resize(w);
  }
}

std::tuple<Tensor, Tensor> soft_nms_cpu(Tensor boxes_in, Tensor scores_in,
                                        std::optional<Tensor> idxs,
                                        int64_t method, double sigma,
                                        double iou_threshold,
                                        double score_threshold) {
  const char* op = "soft_nms";
  check_scored_boxes(boxes_in, scores_in, op);
  check_soft_nms_args(method, sigma, iou_threshold, score_threshold);
  const int64_t n = boxes_in.size(0);
  std::optional<Tensor> ids;
  if (idxs.has_value()) {
    check_same_device(boxes_in, *idxs, op, "boxes", "idxs");
    ids = group_ids(*idxs, n, op);
  }
  const Tensor boxes = torch::stable::contiguous(boxes_in);
  const Tensor scores = torch::stable::contiguous(scores_in);
  const ScalarType dtype = boxes.scalar_type();

  std::vector<int64_t> kept_idx;
  Tensor kept_scores;
  SNIPER_DISPATCH_FLOATING(dtype, op, [&] {
    using A = acc_t<scalar_t>;
    const SoftNmsParams<A> p{method, static_cast<A>(sigma),
                             static_cast<A>(iou_threshold),
                             static_cast<A>(score_threshold)};
    const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
    const scalar_t* ps = scores.const_data_ptr<scalar_t>();
    Groups g = make_groups(ids ? ids->const_data_ptr<int64_t>() : nullptr, n);
    std::vector<std::vector<std::pair<int64_t, A>>> per_group(g.count());
    torch::stable::parallel_for(
        0, g.count(), group_grain(n, g.count()), [&](int64_t b, int64_t e) {
          for (int64_t k = b; k < e; ++k) {
            soft_nms_group(pb, ps, g.order.data() + g.offsets[k],
                           g.offsets[k + 1] - g.offsets[k], p, per_group[k]);
          }
        });
    std::vector<std::pair<int64_t, A>> all;
    for (auto& v : per_group) all.insert(all.end(), v.begin(), v.end());
    sort_by_score(all);
    const int64_t k = static_cast<int64_t>(all.size());
    kept_scores = new_empty(boxes, {k}, dtype);
    scalar_t* out_s = kept_scores.mutable_data_ptr<scalar_t>();
    kept_idx.resize(k);
    for (int64_t i = 0; i < k; ++i) {
      kept_idx[i] = all[i].first;
      out_s[i] = static_cast<scalar_t>(all[i].second);
    }
  });
  Tensor keep = new_empty(boxes, {static_cast<int64_t>(kept_idx.size())},
                          ScalarType::Long);
  std::copy(kept_idx.begin(), kept_idx.end(), keep.mutable_data_ptr<int64_t>());
  return std::make_tuple(keep, kept_scores);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) {
  m.impl("soft_nms", TORCH_BOX(&soft_nms_cpu));
}

}  // namespace sniper
