// Leases: what a workload (a tenant's container) holds in the store, released (and wiped) when
// the workload goes.

#include <optional>

#include "daemon/api/api.h"
#include "daemon/blocking.h"
#include "verify/reference.h"

namespace digestd::daemon::api {

asio::awaitable<Reply> ListLeases(Context& ctx, const Request&) {
  auto leases = ctx.deps.store.ListLeases();
  if (!leases) co_return FromError(leases.error());
  json out = json::array();
  for (const auto& l : *leases) {
    json digests = json::array();
    for (const auto& d : l.digests) digests.push_back(d.ToString());
    out.push_back({{"id", l.id}, {"tenant", l.tenant}, {"container", l.container},
                   {"digests", digests}, {"created", l.created}});
  }
  co_return JsonReply(Status::kOk, out);
}

asio::awaitable<Reply> CreateLease(Context& ctx, const Request& req) {
  auto body = BodyObject(req.body);
  if (!body) co_return FromError(body.error());
  auto id = StringField(*body, "id", true, 128);
  if (!id) co_return FromError(id.error());
  auto tenant = StringField(*body, "tenant", true, 128);
  if (!tenant) co_return FromError(tenant.error());
  // The container the lease is for: only a release naming it (the poststop hook with that
  // container's state) may release the lease on the container's behalf.
  auto container = StringField(*body, "container", false, 128);
  if (!container) co_return FromError(container.error());
  store::Lease lease{.id = *id, .tenant = *tenant, .container = *container};
  // Images by digest or by a reference pulled before.
  auto images = body->find("images");
  if (images == body->end() || !images->is_array() || images->empty() || images->size() > 1000) {
    co_return ErrorReply(Status::kBadRequest,
                         "field \"images\" must be a non-empty array of digests or references");
  }
  for (const auto& item : *images) {
    if (!item.is_string()) co_return ErrorReply(Status::kBadRequest, "images must be strings");
    const std::string& text = item.get_ref<const std::string&>();
    if (auto d = verify::Digest::Parse(text)) {
      if (!ctx.deps.store.Contains(*d)) co_return ErrorReply(Status::kNotFound, text + " is not in the store");
      lease.digests.push_back(*d);
      continue;
    }
    auto ref = verify::Reference::Parse(text);
    if (!ref) co_return FromError(ref.error());
    auto rec = ctx.deps.store.GetRef(ref->String());
    if (!rec) co_return ErrorReply(Status::kNotFound, text + " has not been pulled");
    lease.digests.push_back(rec->digest);
  }
  if (ctx.deps.store.GetLease(lease.id)) {
    co_return ErrorReply(Status::kConflict, "lease " + lease.id + " exists");
  }
  if (auto r = ctx.deps.store.PutLease(lease); !r) co_return FromError(r.error());
  json digests = json::array();
  for (const auto& d : lease.digests) digests.push_back(d.ToString());
  store::AuditEvent event{.type = "lease.created", .tenant = lease.tenant};
  event.details = {{"lease", lease.id}, {"container", lease.container}, {"digests", digests}};
  ctx.Audit(req, std::move(event));
  co_return JsonReply(Status::kOk, json{{"id", lease.id}, {"tenant", lease.tenant},
                                        {"container", lease.container}, {"digests", digests}});
}

asio::awaitable<Reply> ReleaseLease(Context& ctx, const Request& req) {
  const std::string id = req.params.at(0);
  const std::string w = QueryValue(req.query, "wipe");
  const bool wipe = w == "1" || w == "true";
  // A release on a container's behalf (the poststop hook) names the container (and maybe the
  // tenant) from the container's state; the store checks them against the lease.
  std::optional<store::LeaseOwner> owner;
  if (const std::string c = QueryValue(req.query, "container");
      !c.empty() || req.query.find("container=") != std::string::npos) {
    owner = store::LeaseOwner{.container = c, .tenant = QueryValue(req.query, "tenant")};
  }
  std::optional<store::WipeReport> report;
  store::Store* store = &ctx.deps.store;
  const store::LeaseOwner* owner_ptr = owner ? &*owner : nullptr;
  const BlockingFn release = [store, id, wipe, owner_ptr, &report]() -> Result<void> {
    auto r = store->ReleaseLease(id, wipe, owner_ptr);
    if (!r) return r.error();
    report = std::move(*r);
    return {};
  };
  auto err = co_await OffThread(ctx.deps.blocking, release);
  if (err && err->code() == Errc::kPermission) {
    store::AuditEvent event{.type = "lease.release.refused",
                            .tenant = owner ? owner->tenant : "",
                            .reason = err->context()};
    event.details = {{"lease", id}, {"container", owner ? owner->container : ""}};
    ctx.Refusal(req.peer, std::move(event));
  }
  if (err) co_return FromError(*err);
  json blobs = json::array();
  for (const auto& d : report->blobs) blobs.push_back(d.ToString());  // mount told by the store
  json out{{"lease", report->lease}, {"tenant", report->tenant}, {"wiped", report->wiped},
           {"blobs", blobs}, {"blob_bytes", report->blob_bytes}, {"files", report->files},
           {"file_bytes", report->file_bytes}, {"refs_removed", report->refs_removed}};
  store::AuditEvent event{.type = wipe ? "lease.wiped" : "lease.released", .tenant = report->tenant};
  event.details = out;
  ctx.Audit(req, std::move(event));
  co_return JsonReply(Status::kOk, out);
}

}  // namespace digestd::daemon::api
