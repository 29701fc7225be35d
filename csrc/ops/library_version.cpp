// Exported version symbol of the op library (see include/sniper/ops.h).
#include <sniper/ops.h>

#ifndef SNIPER_VERSION
#define SNIPER_VERSION "0.1.0"
#endif

namespace sniper {

const char* library_version() { return SNIPER_VERSION; }

}  // namespace sniper
