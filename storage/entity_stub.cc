// Placeholder for the feature entity type (ValueType::kFeature), which the
// features issue fills in. Until then no record holds one.
#include "storage/record.h"

namespace fkv {
void DestroyEntity(EntityRecord*) {}
}  // namespace fkv
