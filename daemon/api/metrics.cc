// GET /v1/metrics: the process's one metrics registry (common/metrics.h), rendered here. Each
// module registers what it measures (store/store_metrics.cc, fusefs/fuse_metrics.cc, the
// Auditor, the Puller, the API's Context and transport, the snapshotter's accept loop).

#include "daemon/api/api.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> GetMetrics(Context& ctx, const Request&) {
  co_return Reply{.status = Status::kOk,
                  .body = ctx.deps.metrics->Render(),
                  .content_type = "text/plain; version=0.0.4",
                  .stream = nullptr};
}

}  // namespace digestd::daemon::api
