// The size thresholds of the NMS-family CUDA paths (cuda::NmsTuning), with
// overrides from the environment, read on every call so that a test can set
// them around one call:
//   SNIPER_NMS_LARGE_SEGMENT     batched_nms: groups above it take the bitmask path
//   SNIPER_NMS_MASK_BUDGET       bytes of NMS mask held at once (>= 512)
//   SNIPER_SOFT_NMS_LARGE_GROUP  soft_nms: groups above it take the windowed path
// Host-only (registration code).
#pragma once

#include <cerrno>
#include <cstdlib>

#include <sniper/stable_utils.h>

#include "launchers.h"

namespace sniper {

inline int64_t env_size(const char* name, int64_t fallback, int64_t min_value) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  STD_TORCH_CHECK(errno == 0 && end != text && *end == '\0' && v >= min_value, "sniper_ext: ", name,
                  " must be an integer >= ", min_value, ", got '", text, "'");
  return static_cast<int64_t>(v);
}

inline cuda::NmsTuning nms_tuning_from_env() {
  cuda::NmsTuning t;
  t.nms_large_segment = env_size("SNIPER_NMS_LARGE_SEGMENT", t.nms_large_segment, 0);
  t.nms_mask_budget = env_size("SNIPER_NMS_MASK_BUDGET", t.nms_mask_budget, 512);
  t.soft_nms_large_group = env_size("SNIPER_SOFT_NMS_LARGE_GROUP", t.soft_nms_large_group, 0);
  return t;
}

}  // namespace sniper
