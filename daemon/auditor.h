#pragma once

// The daemon's door to the audit log: every event the daemon records (API requests, pulls,
// re-evaluation, hand-over) goes through one Auditor, in the log's one schema
// (store/audit_event.h), and is bounded in what one client can make it record.
//  - Every string field is clipped to kFieldMaxBytes (with the original length said) and any
//    invalid UTF-8 is replaced, so a hostile request path can neither bloat the log nor make the
//    write fail.
//  - Refusals (forbidden or malformed requests, refused peers) are rate-limited per peer uid:
//    at most refusals_per_minute are recorded per uid and minute; the rest are counted
//    (suppressed()) and the next recorded refusal of that uid says how many were left out.
//  - A failed write is logged and counted (write_failures(): the store counts every audit write,
//    its own included), never dropped silently.
//  - Prune() applies the retention ([audit] max_bytes, max_age_days).
//
// Thread safety: every method may be called from any thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json_fwd.hpp>
#include <spdlog/logger.h>

#include "common/error.h"
#include "common/metrics.h"
#include "daemon/config.h"
#include "store/audit_event.h"
#include "store/store.h"

namespace digestd::daemon {

class Auditor {
 public:
  static constexpr std::size_t kFieldMaxBytes = 512;

  // `now`: null reads the store's clock.
  Auditor(store::Store& store, AuditConfig config, Clock now = nullptr);

  // Records `event` ("time" from this auditor's clock; every string clipped).
  void Record(store::AuditEvent event);
  // Records a refusal unless its actor (event.actor_uid; none: one budget shared by every
  // refusal the daemon itself reports) is over its budget this minute.
  void Refusal(store::AuditEvent event);
  // A reporter of refusals of `type` whose peer the caller cannot name (the snapshotter's gRPC
  // server): they share one budget.
  std::function<void(const std::string& reason)> RefusalReporter(std::string type);
  // Retention, blocking (runs on a blocking thread).
  Result<store::AuditPruneReport> Prune();

  std::uint64_t suppressed() const;
  std::uint64_t write_failures() const;
  std::uint64_t pruned() const;
  // digestd_audit_pruned_total, _suppressed_total, _write_failures_total.
  void RegisterMetrics(metrics::Registry& registry) const;

  // JSON text that never throws: invalid UTF-8 is replaced (U+FFFD).
  static std::string Dump(const nlohmann::json& j);

 private:
  store::Store& store_;
  AuditConfig config_;
  Clock now_;
  std::shared_ptr<spdlog::logger> log_;
  mutable std::mutex mu_;
  struct Budget {
    std::int64_t minute = 0;
    int used = 0;
    std::uint64_t suppressed = 0;
  };
  std::unordered_map<std::int64_t, Budget> budgets_;
  std::uint64_t suppressed_ = 0;
  std::uint64_t pruned_ = 0;
};

}  // namespace digestd::daemon
