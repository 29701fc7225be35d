// Box math shared by the CPU and CUDA kernels. Conventions (project-wide):
// boxes are float xyxy in continuous pixel coordinates, width = x2 - x1,
// area = w * h, no "+1". The IoU of two boxes whose union is empty is 0.
#pragma once

#include "host_device.h"

namespace sniper {

template <typename T>
SNIPER_HD T box_area(T x1, T y1, T x2, T y2) {
  return mul_rn(x2 - x1, y2 - y1);
}

// Area of the intersection of a = (ax1, ay1, ax2, ay2) and b.
template <typename T>
SNIPER_HD T box_intersection(T ax1, T ay1, T ax2, T ay2, T bx1, T by1, T bx2, T by2) {
  const T w = min_(ax2, bx2) - max_(ax1, bx1);
  const T h = min_(ay2, by2) - max_(ay1, by1);
  return (w > T(0) && h > T(0)) ? mul_rn(w, h) : T(0);
}

// IoU given both areas (precomputed by callers that compare one box with
// many). The union is formed as (area_a + area_b) - inter, in that order,
// so that every kernel rounds identically.
template <typename T>
SNIPER_HD T box_iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T inter = box_intersection(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2);
  const T uni = (area_a + area_b) - inter;
  return uni > T(0) ? inter / uni : T(0);
}

// IoU of two boxes stored as 4 consecutive values.
template <typename T>
SNIPER_HD T box_iou(const T* a, const T* b) {
  return box_iou(a[0], a[1], a[2], a[3], box_area(a[0], a[1], a[2], a[3]), b[0], b[1], b[2], b[3],
                 box_area(b[0], b[1], b[2], b[3]));
}

}  // namespace sniper
