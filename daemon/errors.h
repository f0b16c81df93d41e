#pragma once

// The daemon module's errors: one digestd::Error (common/error.h) tagged Module::kDaemon, made here and
// nowhere else in the module (internal to daemon/).

#include <string>

#include "common/error.h"

namespace digestd {

inline Error DaemonError(Errc code, std::string context, int sys_errno = 0) {
  return MakeError(Module::kDaemon, code, std::move(context), sys_errno);
}

}  // namespace digestd
