// POST /v1/pull: a verified pull. The whole answer at the end, or (with ?stream=1 or
// Accept: application/x-ndjson) the pull's progress as NDJSON events while it runs, then the
// result or error line.

#include <deque>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "daemon/api/api.h"
#include "daemon/pull.h"

namespace digestd::daemon::api {
namespace {

json EventJson(const PullEvent& e) {
  json j{{"type", e.type}};
  if (!e.detail.empty()) j["detail"] = e.detail;
  if (!e.digest.empty()) j["digest"] = e.digest;
  if (e.type == "blob") {
    j["bytes"] = e.bytes;
    j["total"] = e.total;
  }
  return j;
}

json ResultJson(const Context& ctx, const PullResult& r) {
  json layers = json::array();
  for (const auto& l : r.layers) layers.push_back(l.ToString());
  json j{{"reference", r.reference.String()},
         {"manifest", r.manifest.ToString()},
         {"image_manifest", r.image_manifest.ToString()},
         {"config", r.config.ToString()},
         {"layers", layers},
         {"bytes_fetched", r.bytes_fetched},
         {"rule", r.decision.requirement},
         {"scope", r.decision.scope},
         {"signer", r.decision.signer},
         {"reason", r.decision.reason}};
  AddImagePaths(ctx, r.image_manifest, j);
  return j;
}

// Counts the outcome; after a committed pull, re-evaluation (a pull can change what other
// images share). The kernel holds no negative entry for the new digests: the mount never lets
// it cache one for a name that can appear.
void Finished(Context& ctx, const Result<PullResult>& r) {
  if (!r) {
    ctx.CountPullFailure(r.error());
    return;
  }
  ctx.pulls_ok.Add();
  ctx.pull_bytes.Add(r->bytes_fetched);
  if (ctx.deps.visibility) ctx.deps.visibility->Revalidate();
}

// The streamed pull: the pull runs in its own coroutine (it goes on if the client goes away),
// its events queue here and are written as they come.
class PullStream : public StreamBody {
 public:
  PullStream(std::shared_ptr<Context> ctx, std::string ref, PullOptions opts)
      : ctx_(std::move(ctx)), ref_(std::move(ref)), opts_(std::move(opts)) {}

  asio::awaitable<void> Produce(ChunkWriter& out) override {
    struct State {
      explicit State(asio::io_context& io) : wake(io) {}
      std::deque<std::string> lines;
      asio::steady_timer wake;
      bool done = false;
    };
    auto state = std::make_shared<State>(ctx_->io);
    PullOptions opts = opts_;
    opts.on_event = [state](const PullEvent& e) {
      state->lines.push_back(Dump(EventJson(e)));
      state->wake.cancel();
    };
    auto ctx = ctx_;
    const std::string ref = ref_;
    asio::co_spawn(
        ctx->io,
        [ctx, state, ref, opts]() -> asio::awaitable<void> {
          auto r = co_await ctx->deps.puller.Pull(ref, opts);
          Finished(*ctx, r);
          json last;
          if (r) {
            last = ResultJson(*ctx, *r);
            last["type"] = "result";
          } else {
            last = json{{"type", "error"}, {"error", r.error().ToString()},
                        {"code", std::string(ToString(r.error().code()))}};
          }
          state->lines.push_back(Dump(last));
          state->done = true;
          state->wake.cancel();
        },
        asio::detached);
    bool client_gone = false;
    for (;;) {
      while (!state->lines.empty()) {
        std::string line = std::move(state->lines.front()) + "\n";
        state->lines.pop_front();
        if (client_gone) continue;  // the pull goes on; nobody is listening
        if (!co_await out.Write(std::move(line))) client_gone = true;
      }
      if (state->done) break;
      state->wake.expires_at(asio::steady_timer::time_point::max());
      boost::system::error_code ec;
      co_await state->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

 private:
  std::shared_ptr<Context> ctx_;
  std::string ref_;
  PullOptions opts_;
};

}  // namespace

asio::awaitable<Reply> PostPull(Context& ctx, const Request& req) {
  auto body = BodyObject(req.body);
  if (!body) co_return FromError(body.error());
  auto reference = StringField(*body, "reference", true, 512);
  if (!reference) co_return FromError(reference.error());
  auto tenant = StringField(*body, "tenant", false, 128);
  if (!tenant) co_return FromError(tenant.error());
  PullOptions opts;
  opts.tenant = *tenant;
  opts.actor_uid = static_cast<std::int64_t>(req.peer.uid);
  const bool stream = QueryValue(req.query, "stream") == "1" ||
                      req.accept.find("application/x-ndjson") != std::string::npos;
  if (stream) {
    Reply reply{.status = Status::kOk, .body = "", .content_type = "application/x-ndjson",
                .stream = std::make_shared<PullStream>(ctx.shared_from_this(), *reference, opts)};
    co_return reply;
  }
  const std::string ref = *reference;
  auto r = co_await ctx.deps.puller.Pull(ref, opts);
  Finished(ctx, r);
  if (!r) co_return FromError(r.error());
  co_return JsonReply(Status::kOk, ResultJson(ctx, *r));
}

}  // namespace digestd::daemon::api
