// The schema entry point of sniper::box_iou (BoxIouEntries), shared by the CPU and CUDA
// registrations; the backends' kernel:
//   box_iou(a [n, 4], b [m, 4], out [n, m])   n, m > 0, one dtype, contiguous
#pragma once

#include <sniper/stable_utils.h>

#include "op_entry.h"

namespace sniper {

template <typename B>
struct BoxIouEntries {
  static Tensor box_iou(Tensor boxes1, Tensor boxes2) {
    const char* op = "box_iou";
    check_boxes(boxes1, op, "boxes1");
    check_boxes(boxes2, op, "boxes2");
    check_same_device(boxes1, boxes2, op, "boxes1", "boxes2");
    STD_TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(),
                    "box_iou: `boxes1` and `boxes2` must have the same dtype");
    typename B::Guard guard(boxes1);
    const int64_t n = boxes1.size(0), m = boxes2.size(0);
    Tensor out = new_output(boxes1, {n, m}, boxes1.scalar_type(), op, "the IoU matrix");
    if (n == 0 || m == 0) return out;
    B::box_iou(torch::stable::contiguous(boxes1), torch::stable::contiguous(boxes2), out);
    return out;
  }
};

template <typename B>
void register_box_iou(OpLibrary& m) {
  m.impl("box_iou", TORCH_BOX(&BoxIouEntries<B>::box_iou));
}

}  // namespace sniper
