// The deny list: digests the mount must never serve, whatever admitted them.

#include "daemon/api/api.h"
#include "fusefs/fuse_mount.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> ListDenied(Context& ctx, const Request&) {
  auto list = ctx.deps.store.ListDenied();
  if (!list) co_return FromError(list.error());
  json out = json::array();
  for (const auto& d : *list) {
    out.push_back({{"digest", d.digest.ToString()}, {"reason", d.reason}, {"created", d.created}});
  }
  co_return JsonReply(Status::kOk, out);
}

asio::awaitable<Reply> AddDeny(Context& ctx, const Request& req) {
  auto body = BodyObject(req.body);
  if (!body) co_return FromError(body.error());
  auto digest_text = StringField(*body, "digest", true, 200);
  if (!digest_text) co_return FromError(digest_text.error());
  auto reason = StringField(*body, "reason", false, 1024);
  if (!reason) co_return FromError(reason.error());
  auto digest = verify::Digest::Parse(*digest_text);
  if (!digest) co_return FromError(digest.error());
  if (auto r = ctx.deps.store.Deny(*digest, *reason); !r) co_return FromError(r.error());
  if (ctx.deps.mount) ctx.deps.mount->Invalidate(*digest);
  // Layers that only denied images use are withdrawn with them.
  if (ctx.deps.visibility) ctx.deps.visibility->Revalidate();
  ctx.Audit(req, {.type = "deny.added", .digest = digest->ToString(), .reason = *reason});
  co_return JsonReply(Status::kOk, json{{"denied", digest->ToString()}});
}

asio::awaitable<Reply> RemoveDeny(Context& ctx, const Request& req) {
  auto digest = verify::Digest::Parse(req.params.at(0));
  if (!digest) co_return FromError(digest.error());
  if (auto r = ctx.deps.store.Undeny(*digest); !r) co_return FromError(r.error());
  // Its layers come back (the mount caches no withheld name).
  if (ctx.deps.visibility) ctx.deps.visibility->Revalidate();
  ctx.Audit(req, {.type = "deny.removed", .digest = digest->ToString()});
  co_return JsonReply(Status::kOk, json{{"allowed", digest->ToString()}});
}

}  // namespace digestd::daemon::api
