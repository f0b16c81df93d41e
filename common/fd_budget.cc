#include "common/fd_budget.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace digestd {

std::uint64_t FdLimit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  return rl.rlim_cur == RLIM_INFINITY ? (std::uint64_t{1} << 20) : rl.rlim_cur;
}

std::uint64_t RaiseFdLimit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);  // best effort: the limit read back is what counts
  }
  return FdLimit();
}

std::size_t ContentCacheBudget(std::uint64_t limit) {
  return static_cast<std::size_t>(std::clamp<std::uint64_t>(limit / 4, 16, 65536));
}

AcceptBackoff::AcceptBackoff(std::shared_ptr<spdlog::logger> log, std::string what)
    : log_(std::move(log)), what_(std::move(what)) {}

bool AcceptBackoff::IsShortage(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

std::chrono::milliseconds AcceptBackoff::OnShortage(int err) {
  failures_.fetch_add(1, std::memory_order_relaxed);
  ++since_log_;
  delay_ = std::clamp(delay_ * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
  const auto now = std::chrono::steady_clock::now();
  if (last_log_ == std::chrono::steady_clock::time_point{} ||
      now - last_log_ >= std::chrono::seconds(10)) {
    log_->error("{}: accept failed: {} ({} times since the last report); backing off {} ms",
                what_, std::strerror(err), since_log_, delay_.count());
    last_log_ = now;
    since_log_ = 0;
  }
  return delay_;
}

void AcceptBackoff::OnSuccess() { delay_ = std::chrono::milliseconds(0); }

}  // namespace digestd
