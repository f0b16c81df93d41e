// GET /v1/health: is the store writable, where things are, how full.

#include "daemon/api/api.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> GetHealth(Context& ctx, const Request&) {
  const auto& deps = ctx.deps;
  const auto usage = deps.store.GetUsage();
  const auto& recovery = deps.store.recovery();
  co_return JsonReply(Status::kOk, json{{"status", deps.store.degraded() ? "degraded" : "ok"},
                                        {"store", deps.store.root().string()},
                                        {"mountpoint", deps.config.daemon.mountpoint.string()},
                                        {"blobs", usage.blobs},
                                        {"bytes", usage.bytes},
                                        {"files", usage.files},
                                        {"file_bytes", usage.file_bytes},
                                        {"quota_bytes", deps.config.quota_bytes},
                                        {"images_broken", recovery.images_broken},
                                        {"quarantined", recovery.quarantined}});
}

}  // namespace digestd::daemon::api
