#include "daemon/auditor.h"

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/log.h"

namespace digestd::daemon {
namespace {

using nlohmann::json;

// Clips every string (keys stay) to `max` bytes, at a UTF-8 character boundary where the text is
// valid; the Dump that follows replaces what is not.
void Clip(json& j, std::size_t max) {
  if (j.is_string()) {
    auto& s = j.get_ref<std::string&>();
    if (s.size() <= max) return;
    const std::size_t original = s.size();
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
    s += "...(" + std::to_string(original) + " bytes)";
    return;
  }
  if (j.is_object() || j.is_array()) {
    for (auto& v : j) Clip(v, max);
  }
}

}  // namespace

Auditor::Auditor(store::Store& store, AuditConfig config, Clock now)
    : store_(store), config_(config), now_(std::move(now)), log_(Logger(Module::kDaemon, "audit")) {
  if (!now_) now_ = [s = &store] { return s->Now(); };  // the store's clock (common/clock.h)
}

std::string Auditor::Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void Auditor::Record(store::AuditEvent event) {
  event.time = now_();
  for (std::string* field : {&event.type, &event.component, &event.reference, &event.digest,
                             &event.tenant, &event.reason}) {
    json j = std::move(*field);
    Clip(j, kFieldMaxBytes);
    *field = std::move(j.get_ref<std::string&>());
  }
  if (!event.details.is_object()) event.details = json::object();
  Clip(event.details, kFieldMaxBytes);
  // The store logs and counts a failed write (write_failures()); the event is in the log below.
  log_->info("audit {}", event.ToJson());
  (void)store_.AppendAudit(event);
}

void Auditor::Refusal(store::AuditEvent event) {
  const std::int64_t uid = event.actor_uid.value_or(-1);
  std::uint64_t left_out = 0;
  {
    std::lock_guard lock(mu_);
    const std::int64_t minute = now_() / 60;
    // Bounded: one entry per uid seen this minute; a new minute starts the map afresh (keeping
    // the counts of what was left out, which the next recorded refusal reports).
    if (budgets_.size() > 4096) {
      for (auto it = budgets_.begin(); it != budgets_.end();) {
        it = it->second.minute != minute && it->second.suppressed == 0 ? budgets_.erase(it)
                                                                        : std::next(it);
      }
    }
    Budget& b = budgets_[uid];
    if (b.minute != minute) {
      b.minute = minute;
      b.used = 0;
    }
    if (b.used >= config_.refusals_per_minute) {
      ++b.suppressed;
      ++suppressed_;
      return;
    }
    ++b.used;
    left_out = b.suppressed;
    b.suppressed = 0;
  }
  if (left_out > 0) event.details["suppressed"] = left_out;
  Record(std::move(event));
}

std::function<void(const std::string&)> Auditor::RefusalReporter(std::string type) {
  return [this, type](const std::string& reason) {
    log_->warn("{}: {}", type, reason);
    Refusal({.type = type, .reason = reason});
  };
}

Result<store::AuditPruneReport> Auditor::Prune() {
  const std::int64_t max_age = config_.max_age_days * 24 * 3600;
  auto r = store_.PruneAudit(config_.max_bytes, max_age);
  if (!r) return r;
  if (r->removed > 0) {
    std::lock_guard lock(mu_);
    pruned_ += r->removed;
    log_->info("audit retention removed {} events ({} bytes); {} events ({} bytes) kept",
               r->removed, r->bytes_removed, r->after.events, r->after.bytes);
  }
  return r;
}

std::uint64_t Auditor::suppressed() const {
  std::lock_guard lock(mu_);
  return suppressed_;
}
std::uint64_t Auditor::write_failures() const { return store_.counters().audit_write_failures; }
std::uint64_t Auditor::pruned() const {
  std::lock_guard lock(mu_);
  return pruned_;
}

void Auditor::RegisterMetrics(metrics::Registry& registry) const {
  registry.Add({"digestd_audit_pruned_total", "Audit events removed by retention.",
                metrics::Kind::kCounter},
               [this] { return pruned(); });
  registry.Add({"digestd_audit_suppressed_total",
                "Refusals not recorded because their peer was over audit.refusals_per_minute.",
                metrics::Kind::kCounter},
               [this] { return suppressed(); });
  registry.Add({"digestd_audit_write_failures_total", "Audit events that could not be written.",
                metrics::Kind::kCounter},
               [this] { return write_failures(); });
}

}  // namespace digestd::daemon
