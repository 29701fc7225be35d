// CPU kernels of sniper::nms and sniper::batched_nms: classic greedy NMS,
// parallel over groups.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "../nms_common.h"
#include "box_soa_cpu.h"
#include "groups_cpu.h"

namespace sniper {
namespace {

// Boxes split into power-of-two area classes, each sorted by x1 with a
// running max of x2. IoU > t needs the two areas within a factor t of each
// other and an x-overlap above t * w_i, so a kept box visits only a few
// classes, and within each a narrow window. Zero-area boxes are in no class
// (their IoU is 0). All tests are exact, widened slightly against rounding.
template <typename A>
class AreaClasses {
 public:
  explicit AreaClasses(const BoxesSoA<A>& s) {
    const int64_t n = static_cast<int64_t>(s.x1.size());
    std::vector<std::pair<int, int64_t>> keyed;  // (class, position)
    for (int64_t k = 0; k < n; ++k) {
      if (s.area[k] > A(0)) keyed.emplace_back(std::ilogb(s.area[k]), k);
    }
    std::sort(keyed.begin(), keyed.end(), [&s](const auto& a, const auto& b) {
      return a.first < b.first || (a.first == b.first && (s.x1[a.second] < s.x1[b.second] ||
                                                          (s.x1[a.second] == s.x1[b.second] && a.second < b.second)));
    });
    for (size_t e = 0; e < keyed.size(); ++e) {
      const int64_t k = keyed[e].second;
      if (e == 0 || keyed[e].first != keyed[e - 1].first) {
        begin_.push_back(int64_t(e));
        area_lo_.push_back(s.area[k]);
        area_hi_.push_back(s.area[k]);
      }
      pos_.push_back(k);
      x1_.push_back(s.x1[k]);
      const bool first = begin_.back() == int64_t(e);
      max_x2_.push_back(first ? s.x2[k] : max_(max_x2_.back(), s.x2[k]));
      area_lo_.back() = min_(area_lo_.back(), s.area[k]);
      area_hi_.back() = max_(area_hi_.back(), s.area[k]);
    }
    begin_.push_back(int64_t(keyed.size()));
  }

  // Calls f(position) for every box that can have IoU > t with box i.
  template <typename F>
  void for_candidates(const BoxesSoA<A>& s, int64_t i, A t, F&& f) const {
    const A area = s.area[i];
    if (!(area > A(0))) return;
    const A lo_area = t * area, hi_area = t > A(0) ? area / t : std::numeric_limits<A>::infinity();
    const A shrink = t * (s.x2[i] - s.x1[i]);
    const A need_x2 = s.x1[i] + shrink, need_x1 = s.x2[i] - shrink;
    for (size_t c = 0; c + 1 < begin_.size(); ++c) {
      if (area_hi_[c] <= lo_area || area_lo_[c] >= hi_area) continue;
      const auto b = max_x2_.begin() + begin_[c], e = max_x2_.begin() + begin_[c + 1];
      const int64_t lo = std::upper_bound(b, e, need_x2) - max_x2_.begin();
      const int64_t hi = std::lower_bound(x1_.begin() + begin_[c], x1_.begin() + begin_[c + 1], need_x1) - x1_.begin();
      for (int64_t q = lo; q < hi; ++q) f(pos_[q]);
    }
  }

 private:
  std::vector<int64_t> pos_, begin_;
  std::vector<A> x1_, max_x2_, area_lo_, area_hi_;
};

// Greedy NMS over one group. `idx` holds the group's input indices; kept
// ones get their flag set in `keep` (indexed by input index).
template <typename scalar_t>
void nms_group(const scalar_t* boxes, const scalar_t* scores, const int64_t* idx, int64_t count, double iou_threshold,
               uint8_t* keep) {
  using A = acc_t<scalar_t>;
  BoxesSoA<A> s;
  s.gather(boxes, scores, idx, count);
  std::vector<int64_t> by_score(count);
  std::iota(by_score.begin(), by_score.end(), int64_t(0));
  std::sort(by_score.begin(), by_score.end(),
            [&s](int64_t a, int64_t b) { return score_before(s.score[a], s.index[a], s.score[b], s.index[b]); });
  const A thr = static_cast<A>(iou_threshold);
  const A t = thr < A(1) ? thr * A(1 - 1e-4) : A(1);  // the pruning bound, slightly loose
  const AreaClasses<A> classes(s);
  std::vector<uint8_t> suppressed(count, 0);
  for (const int64_t i : by_score) {
    if (suppressed[i]) continue;
    keep[s.index[i]] = 1;
    if (thr >= A(1)) continue;  // IoU never exceeds 1
    // IoU is symmetric and every kept box already passed against the kept
    // ones before it, so only lower-ranked boxes can cross the threshold.
    classes.for_candidates(s, i, t, [&](int64_t j) {
      if (j != i && !suppressed[j] && s.iou(i, j) > thr) suppressed[j] = 1;
    });
  }
}

struct NmsCpu : CpuBackend {
  static int64_t nms(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids, double iou_threshold,
                     Tensor& keep_out) {
    const int64_t n = boxes.size(0);
    int64_t* out_idx = keep_out.mutable_data_ptr<int64_t>();
    int64_t count = 0;
    SNIPER_DISPATCH_FLOATING(boxes.scalar_type(), ids ? "batched_nms" : "nms", [&] {
      using A = acc_t<scalar_t>;
      const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
      const scalar_t* ps = scores.const_data_ptr<scalar_t>();
      Groups g = make_groups(ids ? ids->const_data_ptr<int64_t>() : nullptr, n);
      std::vector<uint8_t> keep(n, 0);
      torch::stable::parallel_for(0, g.count(), group_grain(n, g.count()), [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          nms_group(pb, ps, g.order.data() + g.offsets[k], g.offsets[k + 1] - g.offsets[k], iou_threshold, keep.data());
        }
      });
      std::vector<std::pair<int64_t, A>> out;
      for (int64_t i = 0; i < n; ++i) {
        if (keep[i]) out.emplace_back(i, static_cast<A>(ps[i]));
      }
      sort_by_score(out);
      for (const auto& p : out) out_idx[count++] = p.first;
    });
    return count;
  }

  static void nms_fixed(const Tensor& boxes, const Tensor& scores, const std::optional<Tensor>& ids, int64_t num_groups,
                        double iou_threshold, int64_t capacity, Tensor& keep_out, Tensor& count_out) {
    const int64_t n = boxes.size(0);
    int64_t* out_idx = keep_out.mutable_data_ptr<int64_t>();
    int64_t* out_count = count_out.mutable_data_ptr<int64_t>();
    SNIPER_DISPATCH_FLOATING(boxes.scalar_type(), ids ? "batched_nms_fixed" : "nms_fixed", [&] {
      using A = acc_t<scalar_t>;
      const scalar_t* pb = boxes.const_data_ptr<scalar_t>();
      const scalar_t* ps = scores.const_data_ptr<scalar_t>();
      const Groups g = make_groups_in_range(ids ? ids->const_data_ptr<int64_t>() : nullptr, n, num_groups);
      std::vector<uint8_t> keep(n, 0);
      torch::stable::parallel_for(0, g.count(), group_grain(n, g.count()), [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          const int64_t* idx = g.order.data() + g.offsets[k];
          const int64_t size = g.offsets[k + 1] - g.offsets[k];
          nms_group(pb, ps, idx, size, iou_threshold, keep.data());
          std::vector<std::pair<int64_t, A>> kept;
          for (int64_t q = 0; q < size; ++q) {
            if (keep[idx[q]]) kept.emplace_back(idx[q], static_cast<A>(ps[idx[q]]));
          }
          sort_by_score(kept);
          const int64_t c = std::min<int64_t>(capacity, static_cast<int64_t>(kept.size()));
          for (int64_t q = 0; q < c; ++q) out_idx[g.id[k] * capacity + q] = kept[q].first;
          out_count[g.id[k]] = c;
        }
      });
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_nms<NmsCpu>(m); }

}  // namespace sniper
