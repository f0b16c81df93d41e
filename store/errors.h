#pragma once

// The store module's errors: one digestd::Error (common/error.h) tagged Module::kStore, made here and
// nowhere else in the module (internal to store/).

#include <string>

#include "common/error.h"

namespace digestd {

inline Error StoreError(Errc code, std::string context, int sys_errno = 0) {
  return MakeError(Module::kStore, code, std::move(context), sys_errno);
}

}  // namespace digestd
