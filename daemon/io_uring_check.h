#pragma once

// Start-up check that the kernel lets this process use io_uring (it may be compiled out, disabled
// by the kernel.io_uring_disabled sysctl, or blocked by a seccomp profile). digestd's network and
// file I/O run on it, so without it digestd refuses to start with a message that says why.

#include "common/error.h"

namespace digestd::daemon {

Result<void> CheckIoUring();

}  // namespace digestd::daemon
