// Replies, request helpers and the handlers' shared Context.

#include "daemon/api/api.h"
#include "daemon/errors.h"

#include "daemon/auditor.h"

namespace digestd::daemon::api {

std::string_view MethodName(Method m) {
  switch (m) {
    case Method::kGet: return "GET";
    case Method::kHead: return "HEAD";
    case Method::kPost: return "POST";
    case Method::kPut: return "PUT";
    case Method::kDelete: return "DELETE";
    case Method::kOther: return "OTHER";
  }
  return "OTHER";
}

std::string Dump(const json& j) { return Auditor::Dump(j); }

Reply JsonReply(Status status, const json& j) {
  return Reply{.status = status, .body = Dump(j) + "\n", .content_type = "application/json", .stream = nullptr};
}

void AddImagePaths(const Context& ctx, const verify::Digest& image, json& out) {
  const std::string base = ctx.deps.config.daemon.mountpoint.string() + "/images/sha256/" +
                           std::string(image.hex());
  out["rootfs"] = base + "/rootfs";
  out["lowerdir_file"] = base + "/lowerdir";
}

Reply ErrorReply(Status status, std::string_view message) {
  return JsonReply(status, json{{"error", std::string(message)}});
}

Status StatusFor(const Error& e) {
  switch (e.code()) {
    case Errc::kInvalidArgument: return Status::kBadRequest;
    case Errc::kNotFound: return Status::kNotFound;
    case Errc::kPermission: return Status::kForbidden;
    case Errc::kTooLarge: return Status::kPayloadTooLarge;
    case Errc::kBusy: return Status::kConflict;
    case Errc::kDigestMismatch:
    case Errc::kSizeMismatch:
    case Errc::kCorrupt:
    case Errc::kIo: return Status::kBadGateway;
    default: return Status::kInternal;
  }
}

Reply FromError(const Error& e) {
  return JsonReply(StatusFor(e), json{{"error", e.ToString()}, {"code", std::string(ToString(e.code()))}});
}

std::string QueryValue(std::string_view query, std::string_view key) {
  std::size_t pos = 0;
  while (pos <= query.size()) {
    auto amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    const auto part = query.substr(pos, amp - pos);
    const auto eq = part.find('=');
    if (part.substr(0, eq) == key) return eq == std::string_view::npos ? "" : std::string(part.substr(eq + 1));
    pos = amp + 1;
  }
  return "";
}

Result<json> BodyObject(const std::string& body) {
  if (body.empty()) return json::object();
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DaemonError(Errc::kInvalidArgument, "body is not valid JSON");
  if (!j.is_object()) return DaemonError(Errc::kInvalidArgument, "body must be a JSON object");
  return j;
}

Result<std::string> StringField(const json& j, const char* name, bool required, std::size_t max) {
  auto it = j.find(name);
  if (it == j.end()) {
    if (required) return DaemonError(Errc::kInvalidArgument, std::string("missing field \"") + name + "\"");
    return std::string();
  }
  if (!it->is_string()) return DaemonError(Errc::kInvalidArgument, std::string("field \"") + name + "\" must be a string");
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max) return DaemonError(Errc::kInvalidArgument, std::string("field \"") + name + "\" is too long");
  return s;
}

void Context::CountPullFailure(const Error& e) {
  pulls_failed.Add();
  std::lock_guard lock(mu_);
  ++pull_failures_[std::string(ToString(e.code()))];
}

void Context::Audit(const Request& request, store::AuditEvent event) {
  event.actor_uid = static_cast<std::int64_t>(request.peer.uid);
  event.pid = static_cast<std::int64_t>(request.peer.pid);
  deps.auditor->Record(std::move(event));
}

void Context::Refusal(const Peer& peer, store::AuditEvent event) {
  event.actor_uid = static_cast<std::int64_t>(peer.uid);
  event.pid = static_cast<std::int64_t>(peer.pid);
  deps.auditor->Refusal(std::move(event));
}

void Context::RegisterMetrics(metrics::Registry& r) {
  using metrics::Kind;
  auto counter = [&r](const char* name, const char* help, const metrics::Counter* c,
                      std::string labels = "") {
    r.Add({name, help, Kind::kCounter}, [c] { return c->value(); }, std::move(labels));
  };
  counter("digestd_api_requests_total", "Control API requests.", &requests);
  counter("digestd_api_forbidden_total", "Requests refused by role.", &forbidden);
  counter("digestd_api_bad_requests_total", "Malformed requests answered with a 4xx.", &bad_requests);
  const char* pulls_help = "Pulls that committed an image.";
  counter("digestd_pulls_total", pulls_help, &pulls_ok, metrics::Label("result", "ok"));
  counter("digestd_pulls_total", pulls_help, &pulls_failed, metrics::Label("result", "failed"));
  r.AddFamily({"digestd_pull_failures_total",
               "Failed pulls by reason (policy: permission; bad content: digest-mismatch, "
               "size-mismatch, corrupt; network: io).",
               Kind::kCounter},
              [this] {
                std::lock_guard lock(mu_);
                std::vector<metrics::Sample> out;
                for (const auto& [reason, n] : pull_failures_) {
                  out.push_back({metrics::Label("reason", reason), n});
                }
                return out;
              });
  counter("digestd_pull_bytes_total", "Bytes fetched by successful pulls.", &pull_bytes);
  counter("digestd_gc_runs_total", "Garbage collections run (not dry runs).", &gc_runs);
  counter("digestd_gc_bytes_freed_total", "Bytes of blobs freed by garbage collection.", &gc_bytes_freed);
}

}  // namespace digestd::daemon::api
