// What the mount tells /v1/metrics (docs/operations.md explains each).

#include "common/metrics.h"
#include "fusefs/fuse_mount.h"

namespace digestd::fusefs {

void FuseMount::RegisterMetrics(metrics::Registry& registry) const {
  using metrics::Kind;
  const FuseMount* m = this;
  const FuseStats* f = &stats();
  registry.AddFamily({"digestd_fuse_ops_total", "FUSE requests answered.", Kind::kCounter}, [f] {
    return std::vector<metrics::Sample>{{metrics::Label("op", "lookup"), f->lookups.load()},
                                        {metrics::Label("op", "getattr"), f->getattrs.load()},
                                        {metrics::Label("op", "readdir"), f->readdirs.load()},
                                        {metrics::Label("op", "read"), f->reads.load()}};
  });
  auto counter = [&](const char* name, const char* help, const std::atomic<std::uint64_t>* v) {
    registry.Add({name, help, Kind::kCounter}, [v] { return v->load(); });
  };
  counter("digestd_fuse_read_bytes_total", "Bytes read through the daemon (not passthrough).",
          &f->read_bytes);
  registry.Add({"digestd_fuse_passthrough", "1 when the kernel accepted FUSE passthrough for the mount.",
                Kind::kGauge},
               [m] { return m->passthrough_active() ? 1u : 0u; });
  counter("digestd_fuse_passthrough_opens_total", "Opens served by the backing file (passthrough).",
          &f->passthrough_opens);
  counter("digestd_fuse_passthrough_fallbacks_total",
          "Opens where passthrough was refused (read path used).", &f->passthrough_fallbacks);
  counter("digestd_fuse_errors_total", "FUSE replies with an error other than ENOENT.", &f->errors);
  counter("digestd_fuse_fd_evictions_total",
          "Times an open ran out of fds and the colder half of the mount's fd cache was closed.",
          &f->fd_evictions);
  counter("digestd_fuse_views_dropped_total",
          "Views dropped because what they showed was removed from the store.", &f->views_dropped);
  registry.AddHistogram(
      {"digestd_fuse_request_seconds",
       "Latency of FUSE requests (lookup, getattr, readlink, readdir, read).", Kind::kCounter},
      [f] {
        metrics::Histogram h;
        for (std::size_t i = 0; i < FuseStats::kBuckets; ++i) {
          if (i + 1 < FuseStats::kBuckets) h.bounds.push_back(FuseStats::kLatencyBounds[i]);
          h.counts.push_back(f->latency_buckets[i].load());
        }
        h.sum = static_cast<double>(f->latency_sum_ns.load()) / 1e9;
        h.count = f->latency_count.load();
        return h;
      });
}

}  // namespace digestd::fusefs
