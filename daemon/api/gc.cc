// Store maintenance an admin asks for: garbage collection and scrub (re-hashing what is stored).

#include <optional>

#include "daemon/api/api.h"
#include "daemon/blocking.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> CollectGarbage(Context& ctx, const Request& req) {
  auto body = BodyObject(req.body);
  if (!body) co_return FromError(body.error());
  bool dry_run = false;
  if (auto it = body->find("dry_run"); it != body->end()) {
    if (!it->is_boolean()) co_return ErrorReply(Status::kBadRequest, "field \"dry_run\" must be true or false");
    dry_run = it->get<bool>();
  }
  std::optional<store::GcReport> report;
  store::Store* store = &ctx.deps.store;
  const BlockingFn gc = [store, dry_run, &report]() -> Result<void> {
    auto r = store->CollectGarbage(dry_run);
    if (!r) return r.error();
    report = std::move(*r);
    return {};
  };
  if (auto err = co_await OffThread(ctx.deps.blocking, gc)) co_return FromError(*err);
  if (!dry_run) {
    ctx.gc_runs.Add();
    ctx.gc_bytes_freed.Add(report->bytes_freed);
  }
  json swept = json::array();
  for (const auto& b : report->swept) swept.push_back(b.digest.ToString());
  store::AuditEvent event{.type = "gc"};
  event.details = {{"dry_run", dry_run}, {"bytes_freed", report->bytes_freed},
                   {"blobs", report->swept.size()}};
  ctx.Audit(req, std::move(event));
  co_return JsonReply(Status::kOk, json{{"dry_run", dry_run}, {"swept", swept},
                                        {"bytes_freed", report->bytes_freed},
                                        {"files_swept", report->files_swept},
                                        {"live_blobs", report->live_blobs}});
}

asio::awaitable<Reply> Scrub(Context& ctx, const Request& req) {
  auto body = BodyObject(req.body);
  if (!body) co_return FromError(body.error());
  store::ScrubOptions opts;
  for (const auto& [key, value] : body->items()) {
    if (key == "max_bytes" || key == "rate_bytes_per_s") {
      if (!value.is_number_unsigned()) {
        co_return ErrorReply(Status::kBadRequest, "field \"" + key + "\" must be a non-negative integer");
      }
      (key == "max_bytes" ? opts.max_bytes : opts.rate_bytes_per_s) = value.get<std::uint64_t>();
    } else if (key == "repair" || key == "restart") {
      if (!value.is_boolean()) {
        co_return ErrorReply(Status::kBadRequest, "field \"" + key + "\" must be true or false");
      }
      (key == "repair" ? opts.repair : opts.restart) = value.get<bool>();
    } else {
      co_return ErrorReply(Status::kBadRequest, "unknown field \"" + key + "\"");
    }
  }
  std::optional<store::ScrubReport> report;
  store::Store* store = &ctx.deps.store;
  const BlockingFn scrub = [store, opts, &report]() -> Result<void> {
    auto r = store->Scrub(opts);
    if (!r) return r.error();
    report = std::move(*r);
    return {};
  };
  if (auto err = co_await OffThread(ctx.deps.blocking, scrub)) co_return FromError(*err);
  json problems = json::array();
  for (const auto& p : report->problems) {
    problems.push_back({{"what", p.what}, {"detail", p.detail}, {"repaired", p.repaired}});
  }
  store::AuditEvent event{.type = "store.scrub"};
  event.details = {{"repair", opts.repair}, {"bytes_hashed", report->bytes_hashed},
                   {"problems", report->problems.size()}};
  ctx.Audit(req, std::move(event));
  co_return JsonReply(Status::kOk, json{{"blobs_checked", report->blobs_checked},
                                        {"files_checked", report->files_checked},
                                        {"bytes_hashed", report->bytes_hashed},
                                        {"pass_complete", report->pass_complete},
                                        {"resume_at", report->resume_at},
                                        {"problems", problems}});
}

}  // namespace digestd::daemon::api
