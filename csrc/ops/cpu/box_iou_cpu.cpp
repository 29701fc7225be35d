// CPU kernel of sniper::box_iou: parallel over rows of the output.
#include <sniper/box_math.h>
#include <sniper/stable_utils.h>

#include <vector>

namespace sniper {
namespace {

Tensor box_iou_cpu(Tensor boxes1, Tensor boxes2) {
  check_boxes(boxes1, "box_iou", "boxes1");
  check_boxes(boxes2, "box_iou", "boxes2");
  STD_TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(),
                  "box_iou: `boxes1` and `boxes2` must have the same dtype");
  const int64_t n = boxes1.size(0), m = boxes2.size(0);
  Tensor out = new_output(boxes1, {n, m}, boxes1.scalar_type(), "box_iou", "the IoU matrix");
  if (n == 0 || m == 0) return out;
  const Tensor a = torch::stable::contiguous(boxes1);
  const Tensor b = torch::stable::contiguous(boxes2);

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
          row[j] = static_cast<scalar_t>(box_iou(x1, y1, x2, y2, area_a, q[0], q[1], q[2], q[3], area_b[j]));
        }
      }
    });
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sniper, CPU, m) { m.impl("box_iou", TORCH_BOX(&box_iou_cpu)); }

}  // namespace sniper
