// CPU kernel of sniper::label_anchors, parallel over chips.
//
// Anchors are grouped by exact shape (w, h) and each group sorted by
// (x1, y1), so a GT visits only the anchors whose box can intersect it: per
// shape, a range of columns, and within each column a range of rows. Every
// anchor left out has IoU 0 with the GT, so the pruning changes no result.
#include <algorithm>
#include <map>
#include <numeric>
#include <vector>

#include <sniper/anchor_rules.h>
#include <sniper/box_math.h>

#include "../label_anchors_common.h"

namespace sniper {
namespace {

template <typename A>
class AnchorIndex {
 public:
  std::vector<A> x1, y1, x2, y2, area;

  template <typename scalar_t>
  explicit AnchorIndex(const scalar_t* anchors, int64_t n) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area}) v->resize(n);
    std::map<std::pair<A, A>, std::vector<int64_t>> by_shape;
    for (int64_t k = 0; k < n; ++k) {
      x1[k] = static_cast<A>(anchors[4 * k]);
      y1[k] = static_cast<A>(anchors[4 * k + 1]);
      x2[k] = static_cast<A>(anchors[4 * k + 2]);
      y2[k] = static_cast<A>(anchors[4 * k + 3]);
      area[k] = box_area(x1[k], y1[k], x2[k], y2[k]);
      if (by_shape.size() <= kMaxShapes) by_shape[{x2[k] - x1[k], y2[k] - y1[k]}].push_back(k);
    }
    if (by_shape.size() > kMaxShapes) return;  // irregular anchors: scan them all
    for (auto& [shape, idx] : by_shape) {
      Shape s;
      s.w = shape.first;
      s.h = shape.second;
      std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
        return x1[a] < x1[b] || (x1[a] == x1[b] && (y1[a] < y1[b] || (y1[a] == y1[b] && a < b)));
      });
      for (size_t i = 0; i < idx.size(); ++i) {
        if (i == 0 || x1[idx[i]] != x1[idx[i - 1]]) {
          s.col_start.push_back(int64_t(i));
          s.col_x1.push_back(x1[idx[i]]);
        }
        s.y.push_back(y1[idx[i]]);
      }
      s.col_start.push_back(int64_t(idx.size()));
      s.idx = std::move(idx);
      shapes_.push_back(std::move(s));
    }
    indexed_ = true;
  }

  // Calls f(k) for every anchor k that can intersect the box (and maybe a
  // few that cannot: the bounds are widened by 1 px against rounding).
  template <typename F>
  void for_overlapping(A gx1, A gy1, A gx2, A gy2, F&& f) const {
    if (!indexed_) {
      for (int64_t k = 0; k < int64_t(x1.size()); ++k) f(k);
      return;
    }
    for (const Shape& s : shapes_) {
      const A xlo = gx1 - s.w - A(1), ylo = gy1 - s.h - A(1);
      auto c0 = std::lower_bound(s.col_x1.begin(), s.col_x1.end(), xlo) - s.col_x1.begin();
      auto c1 = std::upper_bound(s.col_x1.begin(), s.col_x1.end(), gx2) - s.col_x1.begin();
      for (auto c = c0; c < c1; ++c) {
        const auto begin = s.y.begin() + s.col_start[c], end = s.y.begin() + s.col_start[c + 1];
        auto r0 = std::lower_bound(begin, end, ylo) - s.y.begin();
        auto r1 = std::upper_bound(begin, end, gy2) - s.y.begin();
        for (auto r = r0; r < r1; ++r) f(s.idx[r]);
      }
    }
  }

  A iou(int64_t k, A gx1, A gy1, A gx2, A gy2, A garea) const {
    return box_iou(x1[k], y1[k], x2[k], y2[k], area[k], gx1, gy1, gx2, gy2, garea);
  }

 private:
  static constexpr size_t kMaxShapes = 512;
  struct Shape {
    A w, h;
    std::vector<int64_t> idx, col_start;
    std::vector<A> col_x1, y;  // y: y1 of idx[i]
  };
  std::vector<Shape> shapes_;
  bool indexed_ = false;
};

template <typename scalar_t, typename A>
void label_chip(const AnchorIndex<A>& an, const scalar_t* gt, const int8_t* state, int64_t num_gt, A width, A height,
                A pos_iou, A neg_iou, A invalid_iou, A border, int8_t* labels, int64_t* matched) {
  const int64_t na = static_cast<int64_t>(an.x1.size());
  std::vector<uint8_t> considered(na);
  for (int64_t k = 0; k < na; ++k) {
    considered[k] = anchor_considered(an.x1[k], an.y1[k], an.x2[k], an.y2[k], width, height, border);
  }
  std::vector<A> max_iou(na, A(0));
  std::vector<int32_t> arg(na, -1);
  std::vector<uint8_t> best(na, 0), near_invalid(na, 0);
  std::vector<A> gt_max(num_gt, A(0));  // best IoU of each valid GT over considered anchors
  bool has_valid = false;
  for (int pass = 0; pass < 2; ++pass) {  // 0: max IoU per anchor and per GT; 1: best anchors
    for (int64_t j = 0; j < num_gt; ++j) {
      if (gt_role(state[j]) != GtRole::kValid) continue;
      has_valid = true;
      const A gx1 = static_cast<A>(gt[4 * j]), gy1 = static_cast<A>(gt[4 * j + 1]), gx2 = static_cast<A>(gt[4 * j + 2]),
              gy2 = static_cast<A>(gt[4 * j + 3]);
      const A garea = box_area(gx1, gy1, gx2, gy2);
      A top = A(0);
      an.for_overlapping(gx1, gy1, gx2, gy2, [&](int64_t k) {
        if (!considered[k]) return;
        const A v = an.iou(k, gx1, gy1, gx2, gy2, garea);
        if (pass == 0) {
          if (v > max_iou[k]) {
            max_iou[k] = v;
            arg[k] = static_cast<int32_t>(j);
          }
          top = max_(top, v);
        } else if (v > A(0) && v == gt_max[j]) {
          best[k] = 1;
        }
      });
      if (pass == 0) gt_max[j] = top;
    }
  }
  for (int64_t j = 0; j < num_gt; ++j) {
    if (gt_role(state[j]) != GtRole::kInvalid) continue;
    const A gx1 = static_cast<A>(gt[4 * j]), gy1 = static_cast<A>(gt[4 * j + 1]), gx2 = static_cast<A>(gt[4 * j + 2]),
            gy2 = static_cast<A>(gt[4 * j + 3]);
    const A garea = box_area(gx1, gy1, gx2, gy2);
    an.for_overlapping(gx1, gy1, gx2, gy2, [&](int64_t k) {
      if (an.iou(k, gx1, gy1, gx2, gy2, garea) > invalid_iou) near_invalid[k] = 1;
    });
  }
  for (int64_t k = 0; k < na; ++k) {
    labels[k] = anchor_label<A>(considered[k], has_valid, max_iou[k], best[k], near_invalid[k], pos_iou, neg_iou);
    matched[k] = labels[k] == 1 ? arg[k] : -1;
  }
}

struct LabelAnchorsCpu : CpuBackend {
  static void label_anchors(const Tensor& anchors, const Tensor& gt_boxes, const Tensor& gt_state, const Tensor& canvas,
                            const AnchorThresholds& t, Tensor& labels, Tensor& matched) {
    const int64_t num_chips = gt_boxes.size(0), num_gt = gt_boxes.size(1), na = anchors.size(0);
    SNIPER_DISPATCH_FLOATING(anchors.scalar_type(), "label_anchors", [&] {
      using A = acc_t<scalar_t>;
      const AnchorIndex<A> index(anchors.const_data_ptr<scalar_t>(), na);
      const scalar_t* gt = gt_boxes.const_data_ptr<scalar_t>();
      const int8_t* st = gt_state.const_data_ptr<int8_t>();
      const double* wh = canvas.const_data_ptr<double>();
      int8_t* pl = labels.mutable_data_ptr<int8_t>();
      int64_t* pm = matched.mutable_data_ptr<int64_t>();
      torch::stable::parallel_for(0, num_chips, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          label_chip<scalar_t, A>(index, gt + c * num_gt * 4, st + c * num_gt, num_gt, static_cast<A>(wh[2 * c]),
                                  static_cast<A>(wh[2 * c + 1]), static_cast<A>(t.pos_iou), static_cast<A>(t.neg_iou),
                                  static_cast<A>(t.invalid_iou), static_cast<A>(t.allowed_border), pl + c * na,
                                  pm + c * na);
        }
      });
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_label_anchors<LabelAnchorsCpu>(m); }

}  // namespace sniper
