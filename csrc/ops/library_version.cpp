// Exported version symbol of the op library (see include/sniper/ops.h).
#include <sniper/ops.h>
#include <sniper/version.h>

namespace sniper {

const char* library_version() { return SNIPER_VERSION; }

}  // namespace sniper
