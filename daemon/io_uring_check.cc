#include "daemon/io_uring_check.h"
#include "daemon/errors.h"

#include <liburing.h>

#include <cstring>
#include <string>

namespace digestd::daemon {

Result<void> CheckIoUring() {
  io_uring ring{};
  const int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0) {
    return DaemonError(Errc::kUnsupported,
                     std::string("io_uring is not available to this process (") +
                         std::strerror(-rc) +
                         "); digestd needs it for network and file I/O. Check that the kernel has "
                         "CONFIG_IO_URING, that sysctl kernel.io_uring_disabled is 0, and that no "
                         "seccomp profile (container runtime, systemd SystemCallFilter=) blocks "
                         "io_uring_setup/io_uring_enter.",
                     -rc);
  }
  // One no-op through the ring proves submission and completion work too.
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_nop(sqe);
  int err = io_uring_submit(&ring);
  io_uring_cqe* cqe = nullptr;
  if (err >= 0) err = io_uring_wait_cqe(&ring, &cqe);
  if (err >= 0 && cqe != nullptr) io_uring_cqe_seen(&ring, cqe);
  io_uring_queue_exit(&ring);
  if (err < 0) {
    return DaemonError(Errc::kUnsupported,
                     std::string("io_uring set up but cannot complete a request (") +
                         std::strerror(-err) + ")",
                     -err);
  }
  return {};
}

}  // namespace digestd::daemon
