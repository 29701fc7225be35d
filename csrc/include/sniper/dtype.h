// Floating dtype codes passed from C++ registration code to CUDA launchers,
// which are compiled without torch headers.
#pragma once

namespace sniper {

enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace sniper
