#pragma once

// File descriptors are a resource every local user can make digestd spend (each file read
// through the mount, each connection to a socket). This is the one place that knows the
// process's budget, and the one way an accept loop reacts when it runs out.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <spdlog/logger.h>

namespace digestd {

// Raises the soft RLIMIT_NOFILE to the hard limit (systemd's default soft limit is 1024 while
// the hard one is far higher; the unit sets LimitNOFILE too) and returns the soft limit now in
// force. Never lowers anything.
std::uint64_t RaiseFdLimit();

// The soft RLIMIT_NOFILE in force.
std::uint64_t FdLimit();

// How many backing fds the FUSE content cache may keep open for a process limit of `limit`:
// a quarter of it, at most 65536 and at least 16 — the rest stays for sockets, the store and
// RocksDB, the passthrough opens in flight, and the threads.
std::size_t ContentCacheBudget(std::uint64_t limit);

// An accept loop that fails with EMFILE/ENFILE (or ENOBUFS/ENOMEM) must not spin: the pending
// connection stays queued, so accept() fails again at once. AcceptBackoff says how long to wait
// before trying again (doubling from 10 ms to 1 s while the condition lasts), counts every
// failure, and logs at most once per 10 s (with the count of failures since).
// Thread safety: one loop per object; failures() may be read from any thread.
class AcceptBackoff {
 public:
  AcceptBackoff(std::shared_ptr<spdlog::logger> log, std::string what);
  // Whether `err` is a resource shortage to back off from (EMFILE, ENFILE, ENOBUFS, ENOMEM).
  static bool IsShortage(int err);
  // Records a shortage; returns how long to wait before the next accept.
  std::chrono::milliseconds OnShortage(int err);
  // A successful accept: the next shortage starts from the shortest delay again.
  void OnSuccess();
  std::uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<spdlog::logger> log_;
  std::string what_;
  std::chrono::milliseconds delay_{0};
  std::chrono::steady_clock::time_point last_log_{};
  std::uint64_t since_log_ = 0;
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace digestd
