// What the store holds: images (list, inspect, remove), blobs and unpacked layers.

#include <algorithm>
#include <optional>

#include "daemon/api/api.h"
#include "daemon/blocking.h"
#include "verify/oci.h"

namespace digestd::daemon::api {
namespace {

Result<json> Inspect(const Context& ctx, const verify::Digest& manifest) {
  const auto& store = ctx.deps.store;
  DIGESTD_ASSIGN_OR_RETURN(auto record, store.GetImageRecord(manifest));
  json out{{"manifest", manifest.ToString()},
           {"denied", store.IsDenied(manifest)},
           {"withdrawn", ctx.deps.visibility != nullptr && ctx.deps.visibility->Hidden(manifest)}};
  verify::Digest image = manifest;
  if (record) {
    image = record->image_manifest;
    out["reference"] = record->reference;
    out["pulled_at"] = record->pulled_at;
    out["tenant"] = record->tenant;
    out["actor_uid"] = record->actor_uid;
    out["policy"] = {{"scope", record->scope}, {"requirement", record->requirement},
                     {"signer", record->signer}, {"reason", record->reason}};
  }
  out["image_manifest"] = image.ToString();
  DIGESTD_ASSIGN_OR_RETURN(auto info, store.Stat(image));
  DIGESTD_ASSIGN_OR_RETURN(auto bytes, store.ReadBlob(image, verify::kDefaultManifestCap));
  DIGESTD_ASSIGN_OR_RETURN(auto m, verify::ParseImageManifest(bytes, info.media_type));
  out["media_type"] = m.media_type;
  std::uint64_t total = info.size + static_cast<std::uint64_t>(m.config.size);
  out["config"] = {{"digest", m.config.digest.ToString()}, {"size", m.config.size}};
  if (auto cbytes = store.ReadBlob(m.config.digest, verify::kDefaultManifestCap)) {
    if (auto c = verify::ParseImageConfig(*cbytes)) out["platform"] = c->platform.String();
  }
  json layers = json::array();
  for (const auto& l : m.layers) {
    json lj{{"digest", l.digest.ToString()}, {"size", l.size}, {"media_type", l.media_type},
            {"denied", store.IsDenied(l.digest)}};
    if (auto t = store.GetTreeInfo(l.digest); t && *t) {
      lj["diff_id"] = (*t)->diff_id.ToString();
      lj["entries"] = (*t)->entries;
      lj["file_bytes"] = (*t)->file_bytes;
    }
    total += static_cast<std::uint64_t>(l.size);
    layers.push_back(std::move(lj));
  }
  out["layers"] = layers;
  out["size"] = total;
  json refs = json::array();
  if (auto all = store.ListRefs()) {
    for (const auto& r : *all) {
      if (r.digest == manifest) refs.push_back(r.reference);
    }
  }
  out["references"] = refs;
  json leases = json::array();
  if (auto all = store.ListLeases()) {
    for (const auto& l : *all) {
      if (std::find(l.digests.begin(), l.digests.end(), manifest) != l.digests.end() ||
          std::find(l.digests.begin(), l.digests.end(), image) != l.digests.end()) {
        leases.push_back(l.id);
      }
    }
  }
  out["leases"] = leases;
  AddImagePaths(ctx, image, out);
  return out;
}

}  // namespace

asio::awaitable<Reply> ListImages(Context& ctx, const Request&) {
  auto refs = ctx.deps.store.ListRefs();
  if (!refs) co_return FromError(refs.error());
  json out = json::array();
  for (const auto& r : *refs) {
    json item{{"reference", r.reference}, {"digest", r.digest.ToString()},
              {"resolved_at", r.resolved_at}};
    // What the image holds in the store: its blobs, and the bytes its layers unpack to.
    if (auto size = ctx.deps.store.SizeOf(r.digest)) {
      item["bytes"] = size->bytes;
      item["unpacked_bytes"] = size->file_bytes;
    }
    out.push_back(std::move(item));
  }
  co_return JsonReply(Status::kOk, out);
}

asio::awaitable<Reply> InspectImage(Context& ctx, const Request& req) {
  auto digest = verify::Digest::Parse(req.params.at(0));
  if (!digest) co_return FromError(digest.error());
  if (!ctx.deps.store.Contains(*digest)) {
    co_return ErrorReply(Status::kNotFound, digest->ToString() + " is not in the store");
  }
  auto j = Inspect(ctx, *digest);
  if (!j) co_return FromError(j.error());
  co_return JsonReply(Status::kOk, *j);
}

// Drops every reference to the image; GC then removes whatever no lease still pins.
asio::awaitable<Reply> RemoveImage(Context& ctx, const Request& req) {
  auto digest = verify::Digest::Parse(req.params.at(0));
  if (!digest) co_return FromError(digest.error());
  auto refs = ctx.deps.store.ListRefs();
  if (!refs) co_return FromError(refs.error());
  json removed = json::array();
  for (const auto& r : *refs) {
    if (r.digest == *digest) removed.push_back(r.reference);
  }
  // References and image record go together (image records are roots of their own).
  if (auto rr = ctx.deps.store.RemoveImage(*digest); !rr) {
    if (rr.error().code() != Errc::kNotFound || !ctx.deps.store.Contains(*digest)) {
      co_return FromError(rr.error());
    }
  }
  std::optional<store::GcReport> report;
  store::Store* store = &ctx.deps.store;
  const BlockingFn gc = [store, &report]() -> Result<void> {
    auto r = store->CollectGarbage(false);
    if (!r) return r.error();
    report = std::move(*r);
    return {};
  };
  auto err = co_await OffThread(ctx.deps.blocking, gc);
  if (err) co_return FromError(*err);
  ctx.gc_runs.Add();
  ctx.gc_bytes_freed.Add(report->bytes_freed);
  json swept = json::array();
  // The store's removal listener has told the mount what went (views, fds, kernel entries).
  for (const auto& b : report->swept) swept.push_back(b.digest.ToString());
  store::AuditEvent event{.type = "image.removed", .digest = digest->ToString()};
  event.details = {{"references", removed}, {"swept", swept}};
  ctx.Audit(req, std::move(event));
  co_return JsonReply(Status::kOk, json{{"references_removed", removed}, {"swept", swept},
                                        {"bytes_freed", report->bytes_freed}});
}

asio::awaitable<Reply> ListBlobs(Context& ctx, const Request& req) {
  std::optional<verify::Digest> after;
  if (const std::string a = QueryValue(req.query, "after"); !a.empty()) {
    auto d = verify::Digest::Parse(a);
    if (!d) co_return FromError(d.error());
    after = *d;
  }
  auto page = ctx.deps.store.ListBlobs(after, 1000);
  if (!page) co_return FromError(page.error());
  json items = json::array();
  for (const auto& b : page->items) {
    items.push_back({{"digest", b.digest.ToString()}, {"size", b.size}, {"media_type", b.media_type},
                     {"created", b.created}, {"last_used", b.last_used}, {"tenant", b.tenant},
                     {"denied", ctx.deps.store.IsDenied(b.digest)}});
  }
  json out{{"blobs", items}};
  if (page->next) out["next"] = page->next->ToString();
  co_return JsonReply(Status::kOk, out);
}

asio::awaitable<Reply> ListLayers(Context& ctx, const Request&) {
  auto trees = ctx.deps.store.ListTrees();
  if (!trees) co_return FromError(trees.error());
  json out = json::array();
  for (const auto& t : *trees) {
    out.push_back({{"layer", t.layer.ToString()}, {"diff_id", t.diff_id.ToString()},
                   {"entries", t.entries}, {"file_bytes", t.file_bytes}, {"created", t.created},
                   {"denied", ctx.deps.store.IsDenied(t.layer)}});
  }
  co_return JsonReply(Status::kOk, out);
}

}  // namespace digestd::daemon::api
