// The policy: what it would decide for a reference, and reloading it (with trust).

#include "daemon/api/api.h"
#include "verify/reference.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> EvalPolicy(Context& ctx, const Request& req) {
  auto body = BodyObject(req.body);
  if (!body) co_return FromError(body.error());
  auto reference = StringField(*body, "reference", true, 512);
  if (!reference) co_return FromError(reference.error());
  auto ref = verify::Reference::Parse(*reference);
  if (!ref) co_return FromError(ref.error());
  const auto snapshot = ctx.deps.policies.Current();
  const verify::Decision d = snapshot.policy->Explain(*ref);
  co_return JsonReply(Status::kOk, json::parse(d.ToJson()));
}

asio::awaitable<Reply> ReloadPolicy(Context& ctx, const Request& req) {
  if (!ctx.deps.visibility) co_return ErrorReply(Status::kNotImplemented, "reload not available");
  auto r = ctx.deps.visibility->ReloadPolicy();
  store::AuditEvent event{.type = "policy.reload"};
  if (!r) event.reason = r.error().ToString();
  event.details = {{"ok", r.has_value()}};
  ctx.Audit(req, std::move(event));
  if (!r) co_return FromError(r.error());
  co_return JsonReply(Status::kOk, json{{"reloaded", true}});
}

}  // namespace digestd::daemon::api
