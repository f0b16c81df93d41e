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
    : store_(store), config_(config), now_(std::move(now)), log_(Logger("audit")) {
  if (!now_) now_ = [] { return static_cast<std::int64_t>(::time(nullptr)); };
}

std::string Auditor::Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void Auditor::Record(std::string_view type, const json& fields) {
  json event = fields.is_object() ? fields : json::object();
  Clip(event, kFieldMaxBytes);
  event["type"] = std::string(type);
  event["time"] = now_();
  const std::string text = Dump(event);
  log_->info("audit {}", text);
  if (auto r = store_.AppendAudit(text); !r) {
    std::lock_guard lock(mu_);
    ++write_failures_;
    log_->error("audit event not written ({} so far): {}: {}", write_failures_, r.error().ToString(),
                text);
  }
}

void Auditor::Refusal(std::int64_t uid, std::string_view type, const json& fields) {
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
  json event = fields.is_object() ? fields : json::object();
  event["uid"] = uid;
  if (left_out > 0) event["suppressed"] = left_out;
  Record(type, event);
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
std::uint64_t Auditor::write_failures() const {
  std::lock_guard lock(mu_);
  return write_failures_;
}
std::uint64_t Auditor::pruned() const {
  std::lock_guard lock(mu_);
  return pruned_;
}

}  // namespace digestd::daemon
