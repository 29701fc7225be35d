// CPU kernel of sniper::soft_nms: exact sequential greedy Soft-NMS inside
// each group, groups in parallel. Each selection step makes one fused pass
// over the surviving boxes: decay, drop, and find the next maximum.
#include <algorithm>
#include <utility>
#include <vector>

#include "../soft_nms_common.h"
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
// selection order. Boxes are laid out by x1: a selection decays only the
// window of boxes its x-range can overlap (all others have IoU 0 and keep
// their score), and the next maximum comes from per-block maxima, of which
// only the blocks the window touched are recomputed.
template <typename scalar_t, typename A>
void soft_nms_group(const scalar_t* boxes, const scalar_t* scores, const int64_t* idx, int64_t count,
                    const SoftNmsParams<A>& p, std::vector<std::pair<int64_t, A>>& out) {
  constexpr int64_t kBlock = 64;
  BoxesSoA<A> s;
  s.gather_by_x1(boxes, scores, idx, count);
  std::vector<uint8_t> alive(count);
  for (int64_t k = 0; k < count; ++k) alive[k] = s.score[k] >= p.score_threshold;

  const int64_t blocks = (count + kBlock - 1) / kBlock;
  std::vector<int64_t> block_best(blocks, -1);
  auto better = [&s](int64_t a, int64_t b) {  // a beats b (b may be -1)
    return b < 0 || score_before(s.score[a], s.index[a], s.score[b], s.index[b]);
  };
  auto refresh = [&](int64_t blk) {
    int64_t best = -1;
    const int64_t end = std::min(count, (blk + 1) * kBlock);
    for (int64_t k = blk * kBlock; k < end; ++k) {
      if (alive[k] && better(k, best)) best = k;
    }
    block_best[blk] = best;
  };
  for (int64_t blk = 0; blk < blocks; ++blk) refresh(blk);

  while (true) {
    int64_t b = -1;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c = block_best[blk];
      if (c >= 0 && better(c, b)) b = c;
    }
    if (b < 0) break;
    out.emplace_back(s.index[b], s.score[b]);
    alive[b] = 0;
    const A bx1 = s.x1[b], by1 = s.y1[b], bx2 = s.x2[b], by2 = s.y2[b], barea = s.area[b];
    const auto [lo, hi] = s.window(bx1, bx2);
    for (int64_t k = lo; k < hi; ++k) {
      if (!alive[k]) continue;
      const A iou = box_iou(bx1, by1, bx2, by2, barea, s.x1[k], s.y1[k], s.x2[k], s.y2[k], s.area[k]);
      if (iou > A(0)) {
        s.score[k] *= soft_nms_weight(p.method, iou, p.sigma, p.iou_threshold);
        if (!(s.score[k] >= p.score_threshold)) alive[k] = 0;
      }
    }
    refresh(b / kBlock);
    if (lo < hi) {
      for (int64_t blk = lo / kBlock; blk <= (hi - 1) / kBlock; ++blk) {
        if (blk != b / kBlock) refresh(blk);
      }
    }
  }
}

struct SoftNmsCpu : CpuBackend {
  static int64_t soft_nms(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids,
                          const SoftNmsSpec& spec, Tensor& keep, Tensor& kept_scores) {
    const int64_t n = boxes.size(0);
    int64_t count = 0;
    SNIPER_DISPATCH_FLOATING(boxes.scalar_type(), "soft_nms", [&] {
      using A = acc_t<scalar_t>;
      const SoftNmsParams<A> p{spec.method, static_cast<A>(spec.sigma), static_cast<A>(spec.iou_threshold),
                               static_cast<A>(spec.score_threshold)};
      const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
      const scalar_t* ps = scores.const_data_ptr<scalar_t>();
      Groups g = make_groups(ids ? ids->const_data_ptr<int64_t>() : nullptr, n);
      std::vector<std::vector<std::pair<int64_t, A>>> per_group(g.count());
      torch::stable::parallel_for(0, g.count(), group_grain(n, g.count()), [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          soft_nms_group(pb, ps, g.order.data() + g.offsets[k], g.offsets[k + 1] - g.offsets[k], p, per_group[k]);
        }
      });
      std::vector<std::pair<int64_t, A>> all;
      for (auto& v : per_group) all.insert(all.end(), v.begin(), v.end());
      sort_by_score(all);
      int64_t* out_idx = keep.mutable_data_ptr<int64_t>();
      scalar_t* out_s = kept_scores.mutable_data_ptr<scalar_t>();
      for (const auto& [index, score] : all) {
        out_idx[count] = index;
        out_s[count++] = static_cast<scalar_t>(score);
      }
    });
    return count;
  }

  static void soft_nms_fixed(const Tensor& boxes, const Tensor& scores, const Tensor& ids, int64_t num_groups,
                             const SoftNmsSpec& spec, int64_t capacity, Tensor& keep, Tensor& kept_scores,
                             Tensor& count_out) {
    const int64_t n = boxes.size(0);
    SNIPER_DISPATCH_FLOATING(boxes.scalar_type(), "soft_nms_fixed", [&] {
      using A = acc_t<scalar_t>;
      const SoftNmsParams<A> p{spec.method, static_cast<A>(spec.sigma), static_cast<A>(spec.iou_threshold),
                               static_cast<A>(spec.score_threshold)};
      const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
      const scalar_t* ps = scores.const_data_ptr<scalar_t>();
      const Groups g = make_groups_in_range(ids.const_data_ptr<int64_t>(), n, num_groups);
      int64_t* out_idx = keep.mutable_data_ptr<int64_t>();
      scalar_t* out_s = kept_scores.mutable_data_ptr<scalar_t>();
      int64_t* out_count = count_out.mutable_data_ptr<int64_t>();
      torch::stable::parallel_for(0, g.count(), group_grain(n, g.count()), [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          std::vector<std::pair<int64_t, A>> kept;
          soft_nms_group(pb, ps, g.order.data() + g.offsets[k], g.offsets[k + 1] - g.offsets[k], p, kept);
          sort_by_score(kept);
          const int64_t c = std::min<int64_t>(capacity, static_cast<int64_t>(kept.size()));
          const int64_t row = g.id[k] * capacity;
          for (int64_t q = 0; q < c; ++q) {
            out_idx[row + q] = kept[q].first;
            out_s[row + q] = static_cast<scalar_t>(kept[q].second);
          }
          out_count[g.id[k]] = c;
        }
      });
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_soft_nms<SoftNmsCpu>(m); }

}  // namespace sniper
