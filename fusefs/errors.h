#pragma once

// The fusefs module's errors: one digestd::Error (common/error.h) tagged Module::kFuse, made here and
// nowhere else in the module (internal to fusefs/).

#include <string>

#include "common/error.h"

namespace digestd {

inline Error FuseError(Errc code, std::string context, int sys_errno = 0) {
  return MakeError(Module::kFuse, code, std::move(context), sys_errno);
}

}  // namespace digestd
