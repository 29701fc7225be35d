// CPU kernel of sniper::box_iou: parallel over rows of the output.
#include <sniper/box_math.h>

#include <vector>

#include "../box_iou_common.h"

namespace sniper {
namespace {

struct BoxIouCpu : CpuBackend {
  static void box_iou(const Tensor& a, const Tensor& b, Tensor& out) {
    const int64_t n = a.size(0), m = b.size(0);
    SNIPER_DISPATCH_FLOATING(a.scalar_type(), "box_iou", [&] {
      using A = acc_t<scalar_t>;
      const scalar_t* pa = a.const_data_ptr<scalar_t>();
      const scalar_t* pb = b.const_data_ptr<scalar_t>();
      scalar_t* po = out.mutable_data_ptr<scalar_t>();
      std::vector<A> bb(4 * m), area_b(m);
      for (int64_t j = 0; j < m; ++j) {
        for (int k = 0; k < 4; ++k) bb[4 * j + k] = static_cast<A>(pb[4 * j + k]);
        area_b[j] = box_area(bb[4 * j], bb[4 * j + 1], bb[4 * j + 2], bb[4 * j + 3]);
      }
      const int64_t grain = std::max<int64_t>(1, 16384 / m);
      torch::stable::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const A x1 = pa[4 * i], y1 = pa[4 * i + 1], x2 = pa[4 * i + 2], y2 = pa[4 * i + 3];
          const A area_a = box_area(x1, y1, x2, y2);
          scalar_t* row = po + i * m;
          for (int64_t j = 0; j < m; ++j) {
            const A* q = &bb[4 * j];
            row[j] =
                static_cast<scalar_t>(::sniper::box_iou(x1, y1, x2, y2, area_a, q[0], q[1], q[2], q[3], area_b[j]));
          }
        }
      });
    });
  }
};

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { register_box_iou<BoxIouCpu>(m); }

}  // namespace sniper
