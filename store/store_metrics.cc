// What the store tells /v1/metrics (docs/operations.md explains each).

#include "common/metrics.h"
#include "store/store.h"

namespace digestd::store {

void Store::RegisterMetrics(metrics::Registry& registry) const {
  using metrics::Kind;
  const Store* s = this;
  auto gauge = [&](const char* name, const char* help, std::function<std::uint64_t()> read) {
    registry.Add({name, help, Kind::kGauge}, std::move(read));
  };
  auto counter = [&](const char* name, const char* help, std::function<std::uint64_t()> read) {
    registry.Add({name, help, Kind::kCounter}, std::move(read));
  };
  gauge("digestd_audit_events", "Events in the audit log.", [s] { return s->GetAuditStats().events; });
  gauge("digestd_audit_bytes", "Bytes of the audit log's events.",
        [s] { return s->GetAuditStats().bytes; });
  gauge("digestd_cache_bytes", "Bytes of verified blobs in the store.",
        [s] { return s->GetUsage().bytes; });
  gauge("digestd_cache_objects", "Verified blobs in the store.", [s] { return s->GetUsage().blobs; });
  gauge("digestd_cache_file_bytes",
        "Bytes of unpacked file objects in the store (the quota counts them).",
        [s] { return s->GetUsage().file_bytes; });
  gauge("digestd_cache_files", "Unpacked file objects in the store.",
        [s] { return s->GetUsage().files; });
  counter("digestd_scrub_bytes_total", "Bytes re-hashed by digestctl scrub.",
          [s] { return s->counters().scrub_bytes; });
  counter("digestd_scrub_problems_total", "Damaged blobs and file objects scrub found.",
          [s] { return s->counters().scrub_problems; });
  counter("digestd_scrub_passes_total", "Scrub passes completed.",
          [s] { return s->counters().scrub_passes; });
  counter("digestd_store_index_write_failures_total",
          "Index writes that failed (I/O errors); the index reopens itself at the next write.",
          [s] { return s->counters().index_write_failures; });
  gauge("digestd_store_degraded", "1 while the index is read-only after a write error.",
        [s] { return s->degraded() ? 1u : 0u; });
  gauge("digestd_store_images_broken", "Images recovery found not whole at start (pull them again).",
        [s] { return static_cast<std::uint64_t>(s->recovery().images_broken.size()); });
  counter("digestd_store_digest_mismatches_total", "Content that did not hash to its digest.",
          [s] { return s->counters().digest_mismatches; });
  counter("digestd_store_corrupt_records_total", "Index records that failed validation.",
          [s] { return s->counters().corrupt_records; });
}

}  // namespace digestd::store
