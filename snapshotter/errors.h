#pragma once

// The snapshotter module's errors: one digestd::Error (common/error.h) tagged Module::kSnapshotter, made here and
// nowhere else in the module (internal to snapshotter/).

#include <string>

#include "common/error.h"

namespace digestd {

inline Error SnapshotterError(Errc code, std::string context, int sys_errno = 0) {
  return MakeError(Module::kSnapshotter, code, std::move(context), sys_errno);
}

}  // namespace digestd
