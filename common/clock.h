#pragma once

// The one clock seam. Everything judged by the calendar (key validity windows and revocations,
// lease, blob and pull times, audit event times and their retention) reads time through a Clock;
// the daemon's parts default to the store's (StoreOptions::clock, itself SystemSeconds unless a
// test sets it), so a test that moves the store's clock moves time for all of them. Nothing else
// reads the system clock except through the functions below.

#include <atomic>
#include <cstdint>
#include <functional>

namespace digestd {

using Clock = std::function<std::int64_t()>;  // unix seconds

// The system's wall clock.
std::int64_t SystemSeconds();
std::int64_t SystemNanoseconds();  // timestamps only reported (containerd's snapshot times)

// A clock a test sets and moves; safe to read from any thread.
class ManualClock {
 public:
  explicit ManualClock(std::int64_t start) : now_(start) {}
  std::int64_t Now() const { return now_.load(); }
  void Set(std::int64_t t) { now_.store(t); }
  void Advance(std::int64_t seconds) { now_.fetch_add(seconds); }
  Clock AsClock() const {
    return [this] { return Now(); };
  }

 private:
  std::atomic<std::int64_t> now_;
};

}  // namespace digestd
