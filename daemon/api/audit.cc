// The audit log: reading it (NDJSON, each event with its sequence number) and its retention.

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "daemon/api/api.h"
#include "daemon/auditor.h"
#include "daemon/blocking.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> ReadAudit(Context& ctx, const Request& req) {
  std::uint64_t since = 0;
  std::size_t limit = 1000;
  const std::string s = QueryValue(req.query, "since");
  const std::string l = QueryValue(req.query, "limit");
  try {
    if (!s.empty()) since = std::stoull(s);
    if (!l.empty()) limit = std::min<std::size_t>(std::stoull(l), 10000);
  } catch (const std::exception&) {
    co_return ErrorReply(Status::kBadRequest, "since and limit must be numbers");
  }
  auto events = ctx.deps.store.ReadAudit(since, limit);
  if (!events) co_return FromError(events.error());
  std::string body;
  for (const auto& e : *events) {
    // The log is the store's file: read as hostile (an unreadable record is an empty event).
    json j = json::parse(e.json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) j = json::object();
    j["seq"] = e.seq;
    body += Dump(j) + "\n";
  }
  co_return Reply{.status = Status::kOk, .body = body, .content_type = "application/x-ndjson",
                  .stream = nullptr};
}

asio::awaitable<void> RetainAudit(std::shared_ptr<Context> ctx) {
  asio::steady_timer timer(ctx->io);
  Auditor* auditor = ctx->deps.auditor;
  const BlockingFn prune = [auditor]() -> Result<void> {
    auto r = auditor->Prune();
    if (!r) return r.error();
    return {};
  };
  while (!ctx->stopping) {
    auto err = co_await OffThread(ctx->deps.blocking, prune);
    if (err) ctx->log->error("audit retention: {}", err->ToString());
    timer.expires_after(std::chrono::seconds(60));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace digestd::daemon::api
