// The suppression rules of NMS and Soft-NMS, shared by CPU and CUDA kernels.
#pragma once

#include <stdint.h>

#include "host_device.h"

namespace sniper {

// Values of the `method` argument of sniper::soft_nms.
enum SoftNmsMethod : int64_t {
  kSoftNmsLinear = 0,
  kSoftNmsGaussian = 1,
  kSoftNmsHard = 2,
};

// The Soft-NMS arguments of the schema, in the schema's types.
struct SoftNmsSpec {
  int64_t method;
  double sigma, iou_threshold, score_threshold;
};

// Score multiplier applied to a box whose IoU with the box just selected is
// `iou`. "hard" returns 0 (drop) when iou >= iou_threshold. exp_ gives the
// same bits on CPU and CUDA, so the weight does too.
template <typename T>
SNIPER_HD T soft_nms_weight(int64_t method, T iou, T sigma, T iou_threshold) {
  if (method == kSoftNmsGaussian) {
    return iou > T(0) ? exp_(-mul_rn(iou, iou) / sigma) : T(1);
  }
  if (iou < iou_threshold) return T(1);
  return method == kSoftNmsLinear ? T(1) - iou : T(0);
}

// True when `a` should be selected before `b`: higher score, ties to the
// lower input index. Every greedy kernel orders candidates this way.
template <typename T>
SNIPER_HD bool score_before(T score_a, int64_t index_a, T score_b, int64_t index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

}  // namespace sniper
