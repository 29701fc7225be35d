// RPN anchor labelling rules (docs/method.md §5), shared by
// the CPU and CUDA kernels of sniper::label_anchors.
#pragma once

#include <stdint.h>

#include "host_device.h"

namespace sniper {

// What a GT's state value means, the one rule of both kernels: 1 a valid GT
// (it labels anchors), 0 an invalid GT (anchors near it are ignored), any
// other value absent, like the -1 padding. sniper_ext.ops.label_anchors
// rejects values other than -1, 0 and 1; the raw op applies this rule.
enum class GtRole : uint8_t { kValid, kInvalid, kAbsent };

SNIPER_HD GtRole gt_role(int8_t state) {
  return state == 1 ? GtRole::kValid : (state == 0 ? GtRole::kInvalid : GtRole::kAbsent);
}

// An anchor is considered unless it reaches more than `border` pixels
// beyond the chip (canvas width w, height h).
template <typename T>
SNIPER_HD bool anchor_considered(T x1, T y1, T x2, T y2, T w, T h, T border) {
  return x1 >= -border && y1 >= -border && x2 <= w + border && y2 <= h + border;
}

// Final label: -1 ignore, 0 negative, 1 positive. `best`: the anchor is a
// best match of some valid GT; `near_invalid`: IoU > invalid_iou with an
// invalid GT, which overrides everything (applied last).
template <typename T>
SNIPER_HD int8_t anchor_label(bool considered, bool has_valid_gt, T max_iou, bool best, bool near_invalid, T pos_iou,
                              T neg_iou) {
  if (!considered) return -1;
  int8_t label = 0;
  if (has_valid_gt) {
    label = max_iou >= pos_iou ? 1 : (max_iou < neg_iou ? 0 : -1);
    if (best) label = 1;
  }
  return near_invalid ? int8_t(-1) : label;
}

}  // namespace sniper
