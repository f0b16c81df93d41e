#include "common/unique_fd.h"

#include <unistd.h>

namespace digestd {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) {
    // close() errors are deliberately ignored: on Linux the fd is released even when close fails,
    // and data integrity is established by explicit fsync before any commit, never by close.
    (void)::close(fd_);
  }
  fd_ = fd;
}

}  // namespace digestd
