#include "daemon/control_server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>

#include "common/fd_budget.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "fusefs/fuse_mount.h"
#include "verify/oci.h"

namespace digestd::daemon {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;
using Stream = beast::basic_stream<local, asio::any_io_executor, beast::unlimited_rate_policy>;
using boost::system::error_code;
using nlohmann::json;

constexpr std::size_t kHeaderLimit = 16u << 10;
constexpr std::size_t kBodyLimit = 1u << 20;
constexpr auto kRequestTimeout = std::chrono::seconds(30);
// Connections served at once; past it new ones are closed at accept (counted).
constexpr std::size_t kMaxConnections = 4096;

struct Reply {
  http::status status = http::status::ok;
  std::string body;
  std::string content_type = "application/json";
};

Reply JsonReply(http::status status, const json& j) {
  // Never throws: text from a request (a path with invalid UTF-8) is replaced, not fatal.
  return Reply{status, Auditor::Dump(j) + "\n", "application/json"};
}

Reply ErrorReply(http::status status, std::string_view message) {
  return JsonReply(status, json{{"error", std::string(message)}});
}

http::status StatusFor(const Error& e) {
  switch (e.code()) {
    case Errc::kInvalidArgument: return http::status::bad_request;
    case Errc::kNotFound: return http::status::not_found;
    case Errc::kPermission: return http::status::forbidden;
    case Errc::kTooLarge: return http::status::payload_too_large;
    case Errc::kBusy: return http::status::conflict;
    case Errc::kDigestMismatch:
    case Errc::kSizeMismatch:
    case Errc::kCorrupt: return http::status::bad_gateway;
    case Errc::kIo: return http::status::bad_gateway;
    default: return http::status::internal_server_error;
  }
}

Reply FromError(const Error& e) {
  return JsonReply(StatusFor(e), json{{"error", e.ToString()}, {"code", std::string(ToString(e.code()))}});
}

Peer PeerOf(int fd) {
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  Peer p{.pid = 0, .uid = static_cast<uid_t>(-1), .gid = static_cast<gid_t>(-1)};
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    p = Peer{.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
  }
  return p;
}

// "a=1&b=2" -> value of `key`, or "".
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

// Parses a request body that must be a JSON object (an empty body is {}).
Result<json> BodyObject(const std::string& body) {
  if (body.empty()) return json::object();
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return MakeError(Module::kDaemon, Errc::kInvalidArgument, "body is not valid JSON");
  if (!j.is_object()) return MakeError(Module::kDaemon, Errc::kInvalidArgument, "body must be a JSON object");
  return j;
}

// A string field: absent -> `fallback`; present but not a string, or too long -> error.
Result<std::string> StringField(const json& j, const char* name, bool required, std::size_t max) {
  auto it = j.find(name);
  if (it == j.end()) {
    if (required) return MakeError(Module::kDaemon, Errc::kInvalidArgument, std::string("missing field \"") + name + "\"");
    return std::string();
  }
  if (!it->is_string()) return MakeError(Module::kDaemon, Errc::kInvalidArgument, std::string("field \"") + name + "\" must be a string");
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max) return MakeError(Module::kDaemon, Errc::kInvalidArgument, std::string("field \"") + name + "\" is too long");
  return s;
}

// A request target we route: printable ASCII or well-formed UTF-8, no controls or spaces.
bool ValidTarget(std::string_view t) {
  if (t.empty() || t.size() > 8192) return false;
  for (std::size_t i = 0; i < t.size();) {
    const auto c = static_cast<unsigned char>(t[i]);
    if (c < 0x80) {
      if (c <= 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
    else return false;
    for (std::size_t k = 1; k <= n; ++k) {
      if (i + k >= t.size()) return false;
      const auto cc = static_cast<unsigned char>(t[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

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

}  // namespace

Role RoleFor(const DaemonConfig& config, const Peer& peer) {
  auto has = [](const std::vector<std::uint32_t>& v, std::uint32_t id) {
    return std::find(v.begin(), v.end(), id) != v.end();
  };
  if (has(config.admin_uids, peer.uid) || has(config.admin_gids, peer.gid)) return Role::kAdmin;
  if (has(config.reader_uids, peer.uid) || has(config.reader_gids, peer.gid)) return Role::kReader;
  return Role::kNone;
}

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin: return "admin";
    case Role::kReader: return "reader";
    case Role::kNone: return "none";
  }
  return "none";
}

struct ControlServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& i, ControlDeps d) : io(i), deps(std::move(d)) {}

  asio::io_context& io;
  ControlDeps deps;
  std::optional<local::acceptor> acceptor;
  std::shared_ptr<spdlog::logger> log = Logger("api");
  bool stopping = false;
  bool inherited = false;  // the listener came from the service manager

  // Metrics of the API itself.
  std::uint64_t requests = 0;
  std::uint64_t forbidden = 0;
  std::uint64_t bad_requests = 0;
  std::uint64_t pulls_ok = 0;
  std::uint64_t pulls_failed = 0;
  std::uint64_t pull_bytes = 0;
  std::map<std::string, std::uint64_t> pull_failures;  // by error code
  std::uint64_t gc_runs = 0;
  std::uint64_t gc_bytes_freed = 0;
  std::size_t open_connections = 0;
  std::uint64_t connections_refused = 0;
  AcceptBackoff backoff{Logger("api"), "control socket"};

  void Audit(std::string_view type, const Peer& peer, json fields) {
    fields["actor"] = static_cast<std::int64_t>(peer.uid);
    fields["pid"] = static_cast<std::int64_t>(peer.pid);
    deps.auditor->Record(type, fields);
  }
  // A refused request: recorded within the peer's per-minute budget, counted beyond it.
  void AuditRefusal(std::string_view type, const Peer& peer, json fields) {
    fields["actor"] = static_cast<std::int64_t>(peer.uid);
    fields["pid"] = static_cast<std::int64_t>(peer.pid);
    deps.auditor->Refusal(static_cast<std::int64_t>(peer.uid), type, fields);
  }

  // After a committed pull: re-evaluation (a pull can change what other images share). The
  // kernel holds no negative entry for the new digests: the mount never lets it cache one for a
  // name that can appear.
  void AfterPull() {
    if (deps.revalidate) deps.revalidate();
  }

  json PullResultJson(const PullResult& r) const {
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
    const std::string mnt = deps.config.daemon.mountpoint.string();
    j["rootfs"] = mnt + "/images/sha256/" + std::string(r.image_manifest.hex()) + "/rootfs";
    j["lowerdir_file"] = mnt + "/images/sha256/" + std::string(r.image_manifest.hex()) + "/lowerdir";
    return j;
  }

  Result<json> Inspect(const verify::Digest& manifest) {
    DIGESTD_ASSIGN_OR_RETURN(auto record, deps.store.GetImageRecord(manifest));
    json out{{"manifest", manifest.ToString()},
             {"denied", deps.store.IsDenied(manifest)},
             {"withdrawn", deps.hidden != nullptr && deps.hidden->Contains(manifest)}};
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
    DIGESTD_ASSIGN_OR_RETURN(auto info, deps.store.Stat(image));
    DIGESTD_ASSIGN_OR_RETURN(auto bytes, deps.store.ReadBlob(image, verify::kDefaultManifestCap));
    DIGESTD_ASSIGN_OR_RETURN(auto m, verify::ParseImageManifest(bytes, info.media_type));
    out["media_type"] = m.media_type;
    std::uint64_t total = info.size + static_cast<std::uint64_t>(m.config.size);
    out["config"] = {{"digest", m.config.digest.ToString()}, {"size", m.config.size}};
    if (auto cbytes = deps.store.ReadBlob(m.config.digest, verify::kDefaultManifestCap)) {
      if (auto c = verify::ParseImageConfig(*cbytes)) out["platform"] = c->platform.String();
    }
    json layers = json::array();
    for (const auto& l : m.layers) {
      json lj{{"digest", l.digest.ToString()}, {"size", l.size}, {"media_type", l.media_type},
              {"denied", deps.store.IsDenied(l.digest)}};
      if (auto t = deps.store.GetTreeInfo(l.digest); t && *t) {
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
    if (auto all = deps.store.ListRefs()) {
      for (const auto& r : *all) {
        if (r.digest == manifest) refs.push_back(r.reference);
      }
    }
    out["references"] = refs;
    json leases = json::array();
    if (auto all = deps.store.ListLeases()) {
      for (const auto& l : *all) {
        if (std::find(l.digests.begin(), l.digests.end(), manifest) != l.digests.end() ||
            std::find(l.digests.begin(), l.digests.end(), image) != l.digests.end()) {
          leases.push_back(l.id);
        }
      }
    }
    out["leases"] = leases;
    const std::string mnt = deps.config.daemon.mountpoint.string();
    out["rootfs"] = mnt + "/images/sha256/" + std::string(image.hex()) + "/rootfs";
    out["lowerdir_file"] = mnt + "/images/sha256/" + std::string(image.hex()) + "/lowerdir";
    return out;
  }

  std::string Metrics() const {
    std::string m;
    auto line = [&](const char* name, const char* help, const char* type, std::uint64_t v,
                    const std::string& labels = "") {
      m += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
      m += std::string(name) + labels + " " + std::to_string(v) + "\n";
    };
    const auto usage = deps.store.GetUsage();
    const auto sc = deps.store.counters();
    line("digestd_api_requests_total", "Control API requests.", "counter", requests);
    line("digestd_api_forbidden_total", "Requests refused by role.", "counter", forbidden);
    line("digestd_api_bad_requests_total", "Malformed requests answered with a 4xx.", "counter",
         bad_requests);
    line("digestd_api_connections", "Control socket connections open now.", "gauge",
         open_connections);
    line("digestd_api_connections_refused_total",
         "Connections closed at accept because kMaxConnections were open.", "counter",
         connections_refused);
    line("digestd_accept_backoffs_total",
         "accept() failures from fd or memory shortage, each backed off (never fatal).", "counter",
         backoff.failures(), "{socket=\"control\"}");
    if (deps.other_accept_failures) {
      m += "digestd_accept_backoffs_total{socket=\"snapshotter\"} " +
           std::to_string(deps.other_accept_failures()) + "\n";
    }
    line("digestd_fd_limit", "The process's soft RLIMIT_NOFILE.", "gauge", FdLimit());
    const auto audit = deps.store.GetAuditStats();
    line("digestd_audit_events", "Events in the audit log.", "gauge", audit.events);
    line("digestd_audit_bytes", "Bytes of the audit log's events.", "gauge", audit.bytes);
    line("digestd_audit_pruned_total", "Audit events removed by retention.", "counter",
         deps.auditor->pruned());
    line("digestd_audit_suppressed_total",
         "Refusals not recorded because their peer was over audit.refusals_per_minute.",
         "counter", deps.auditor->suppressed());
    line("digestd_audit_write_failures_total", "Audit events that could not be written.",
         "counter", deps.auditor->write_failures());
    line("digestd_pulls_total", "Pulls that committed an image.", "counter", pulls_ok, "{result=\"ok\"}");
    m += "digestd_pulls_total{result=\"failed\"} " + std::to_string(pulls_failed) + "\n";
    m += "# HELP digestd_pull_failures_total Failed pulls by reason (policy: permission; bad content: digest-mismatch, size-mismatch, corrupt; network: io).\n"
         "# TYPE digestd_pull_failures_total counter\n";
    for (const auto& [reason, n] : pull_failures) {
      m += "digestd_pull_failures_total{reason=\"" + reason + "\"} " + std::to_string(n) + "\n";
    }
    line("digestd_gc_runs_total", "Garbage collections run (not dry runs).", "counter", gc_runs);
    line("digestd_gc_bytes_freed_total", "Bytes of blobs freed by garbage collection.", "counter", gc_bytes_freed);
    line("digestd_pull_bytes_total", "Bytes fetched by successful pulls.", "counter", pull_bytes);
    line("digestd_handoff_failures_total",
         "Pulled images that could not be handed to containerd's content store.", "counter",
         deps.puller.handoff_failures());
    line("digestd_hidden_digests", "Digests withdrawn from the mount by the last policy/trust re-evaluation.",
         "gauge", deps.hidden ? deps.hidden->size() : 0);
    line("digestd_cache_bytes", "Bytes of verified blobs in the store.", "gauge", usage.bytes);
    line("digestd_cache_objects", "Verified blobs in the store.", "gauge", usage.blobs);
    line("digestd_cache_file_bytes", "Bytes of unpacked file objects in the store (the quota counts them).",
         "gauge", usage.file_bytes);
    line("digestd_cache_files", "Unpacked file objects in the store.", "gauge", usage.files);
    line("digestd_scrub_bytes_total", "Bytes re-hashed by digestctl scrub.", "counter", sc.scrub_bytes);
    line("digestd_scrub_problems_total", "Damaged blobs and file objects scrub found.", "counter",
         sc.scrub_problems);
    line("digestd_scrub_passes_total", "Scrub passes completed.", "counter", sc.scrub_passes);
    line("digestd_store_index_write_failures_total",
         "Index writes that failed (I/O errors); the index reopens itself at the next write.",
         "counter", sc.index_write_failures);
    line("digestd_store_degraded", "1 while the index is read-only after a write error.", "gauge",
         deps.store.degraded() ? 1 : 0);
    line("digestd_store_images_broken", "Images recovery found not whole at start (pull them again).",
         "gauge", deps.store.recovery().images_broken.size());
    line("digestd_store_digest_mismatches_total", "Content that did not hash to its digest.", "counter", sc.digest_mismatches);
    line("digestd_store_corrupt_records_total", "Index records that failed validation.", "counter", sc.corrupt_records);
    if (deps.mount) {
      const auto& f = deps.mount->stats();
      line("digestd_fuse_ops_total", "FUSE requests answered.", "counter", f.lookups.load(), "{op=\"lookup\"}");
      m += "digestd_fuse_ops_total{op=\"getattr\"} " + std::to_string(f.getattrs.load()) + "\n";
      m += "digestd_fuse_ops_total{op=\"readdir\"} " + std::to_string(f.readdirs.load()) + "\n";
      m += "digestd_fuse_ops_total{op=\"read\"} " + std::to_string(f.reads.load()) + "\n";
      line("digestd_fuse_read_bytes_total", "Bytes read through the daemon (not passthrough).", "counter", f.read_bytes.load());
      line("digestd_fuse_passthrough", "1 when the kernel accepted FUSE passthrough for the mount.", "gauge",
           deps.mount->passthrough_active() ? 1 : 0);
      line("digestd_fuse_passthrough_opens_total", "Opens served by the backing file (passthrough).", "counter",
           f.passthrough_opens.load());
      line("digestd_fuse_passthrough_fallbacks_total", "Opens where passthrough was refused (read path used).",
           "counter", f.passthrough_fallbacks.load());
      line("digestd_fuse_errors_total", "FUSE replies with an error other than ENOENT.", "counter", f.errors.load());
      line("digestd_fuse_fd_evictions_total",
           "Times an open ran out of fds and the colder half of the mount's fd cache was closed.",
           "counter", f.fd_evictions.load());
      line("digestd_fuse_views_dropped_total",
           "Views dropped because what they showed was removed from the store.", "counter",
           f.views_dropped.load());
      m += "# HELP digestd_fuse_request_seconds Latency of FUSE requests (lookup, getattr, readlink, readdir, read).\n"
           "# TYPE digestd_fuse_request_seconds histogram\n";
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < fusefs::FuseStats::kBuckets; ++i) {
        cumulative += f.latency_buckets[i].load();
        const std::string le = i + 1 < fusefs::FuseStats::kBuckets
                                   ? fmt::format("{}", fusefs::FuseStats::kLatencyBounds[i])
                                   : std::string("+Inf");
        m += "digestd_fuse_request_seconds_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
      }
      m += "digestd_fuse_request_seconds_sum " + fmt::format("{}", static_cast<double>(f.latency_sum_ns.load()) / 1e9) + "\n";
      m += "digestd_fuse_request_seconds_count " + std::to_string(f.latency_count.load()) + "\n";
    }
    return m;
  }

  asio::awaitable<void> Accept() {
    auto self = shared_from_this();
    asio::steady_timer pause(io);
    for (;;) {
      error_code ec;
      local::socket sock = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) co_return;
        // Out of fds (or memory): the connection stays queued and accept fails again at once;
        // wait instead of spinning, log once in a while, count every time.
        const int err = ec.category() == boost::system::system_category() ? ec.value() : 0;
        const auto delay = AcceptBackoff::IsShortage(err) ? backoff.OnShortage(err)
                                                          : std::chrono::milliseconds(100);
        if (!AcceptBackoff::IsShortage(err)) log->warn("accept: {}", ec.message());
        pause.expires_after(delay);
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (stopping) co_return;
        continue;
      }
      backoff.OnSuccess();
      if (open_connections >= kMaxConnections) {
        // Bounded like every other resource a client can make us hold: the newest is refused.
        ++connections_refused;
        error_code ignored;
        sock.close(ignored);
        continue;
      }
      ++open_connections;
      asio::co_spawn(io, self->Serve(std::move(sock)), [self](std::exception_ptr) {
        --self->open_connections;
      });
    }
  }

  asio::awaitable<void> Write(Stream& stream, const Reply& r, unsigned version, bool keep_alive) {
    http::response<http::string_body> res{r.status, version};
    res.set(http::field::content_type, r.content_type);
    res.set(http::field::server, "digestd");
    res.keep_alive(keep_alive);
    res.body() = r.body;
    res.prepare_payload();
    error_code ec;
    stream.expires_after(kRequestTimeout);
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  }

  asio::awaitable<void> Serve(local::socket sock) {
    auto self = shared_from_this();
    const Peer peer = PeerOf(sock.native_handle());
    Stream stream(std::move(sock));
    beast::flat_buffer buffer;
    buffer.reserve(kHeaderLimit);
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(kBodyLimit);
      error_code ec;
      stream.expires_after(kRequestTimeout);
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::end_of_stream || ec == asio::error::eof ||
          ec == asio::error::connection_reset) {
        co_return;
      }
      if (ec) {
        ++bad_requests;
        // An idle keep-alive connection timing out is no refusal; anything malformed is.
        if (ec != beast::error::timeout) {
          AuditRefusal("api.bad_request", peer, {{"reason", ec.message()}});
        }
        Reply r;
        if (ec == http::error::body_limit) {
          r = ErrorReply(http::status::payload_too_large, "request body over 1 MiB");
        } else if (ec == http::error::header_limit) {
          r = ErrorReply(http::status::request_header_fields_too_large, "request headers over 16 KiB");
        } else if (ec == beast::error::timeout) {
          r = ErrorReply(http::status::request_timeout, "request not received within 30 s");
        } else {
          r = ErrorReply(http::status::bad_request, "malformed HTTP request: " + ec.message());
        }
        co_await Write(stream, r, 11, false);
        co_return;
      }
      stream.expires_never();
      auto req = parser.release();
      ++requests;
      if (!ValidTarget(req.target())) {
        // Answered and audited like any other refusal (the path is recorded with its invalid
        // bytes replaced); the connection is closed.
        ++bad_requests;
        AuditRefusal("api.bad_request", peer,
                     {{"path", std::string(req.target())},
                      {"reason", "request target is not printable UTF-8"}});
        co_await Write(stream,
                       ErrorReply(http::status::bad_request,
                                  "request target must be printable UTF-8 without spaces"),
                       req.version(), false);
        co_return;
      }
      bool streamed = false;
      Reply reply = co_await Route(peer, req, stream, &streamed);
      const bool keep = req.keep_alive() && !streamed;
      if (!streamed) co_await Write(stream, reply, req.version(), keep);
      if (!keep) {
        error_code ignored;
        stream.socket().shutdown(local::socket::shutdown_send, ignored);
        co_return;
      }
    }
  }

  asio::awaitable<Reply> Route(const Peer& peer, const http::request<http::string_body>& req,
                               Stream& stream, bool* streamed) {
    const std::string target(req.target());
    const auto qpos = target.find('?');
    const std::string path = target.substr(0, qpos);
    const std::string query = qpos == std::string::npos ? "" : target.substr(qpos + 1);
    const bool write = req.method() != http::verb::get && req.method() != http::verb::head &&
                       std::string_view(req.target()).substr(0, 15) != "/v1/policy/eval";
    const Role role = RoleFor(deps.config.daemon, peer);
    if (role == Role::kNone || (write && role != Role::kAdmin)) {
      ++forbidden;
      AuditRefusal("api.forbidden", peer,
            {{"path", path}, {"method", std::string(req.method_string())},
             {"role", std::string(RoleName(role))}});
      co_return ErrorReply(http::status::forbidden,
                           "uid " + std::to_string(peer.uid) + " (role " +
                               std::string(RoleName(role)) + ") may not " +
                               std::string(req.method_string()) + " " + path);
    }
    const auto method = req.method();
    if (path == "/v1/health" && method == http::verb::get) {
      const auto usage = deps.store.GetUsage();
      const auto& recovery = deps.store.recovery();
      co_return JsonReply(http::status::ok,
                          json{{"status", deps.store.degraded() ? "degraded" : "ok"},
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
    if (path == "/v1/metrics" && method == http::verb::get) {
      co_return Reply{http::status::ok, Metrics(), "text/plain; version=0.0.4"};
    }
    if (path == "/v1/images" && method == http::verb::get) {
      auto refs = deps.store.ListRefs();
      if (!refs) co_return FromError(refs.error());
      json out = json::array();
      for (const auto& r : *refs) {
        json item{{"reference", r.reference}, {"digest", r.digest.ToString()},
                  {"resolved_at", r.resolved_at}};
        // What the image holds in the store: its blobs, and the bytes its layers unpack to.
        if (auto size = deps.store.SizeOf(r.digest)) {
          item["bytes"] = size->bytes;
          item["unpacked_bytes"] = size->file_bytes;
        }
        out.push_back(std::move(item));
      }
      co_return JsonReply(http::status::ok, out);
    }
    if (path.starts_with("/v1/images/") && method == http::verb::get) {
      auto digest = verify::Digest::Parse(path.substr(11));
      if (!digest) co_return FromError(digest.error());
      if (!deps.store.Contains(*digest)) co_return ErrorReply(http::status::not_found, digest->ToString() + " is not in the store");
      auto j = Inspect(*digest);
      if (!j) co_return FromError(j.error());
      co_return JsonReply(http::status::ok, *j);
    }
    if (path.starts_with("/v1/images/") && method == http::verb::delete_) {
      // Drops every reference to the image; GC then removes whatever no lease still pins.
      auto digest = verify::Digest::Parse(path.substr(11));
      if (!digest) co_return FromError(digest.error());
      auto refs = deps.store.ListRefs();
      if (!refs) co_return FromError(refs.error());
      json removed = json::array();
      for (const auto& r : *refs) {
        if (r.digest == *digest) removed.push_back(r.reference);
      }
      // References and image record go together (image records are roots of their own).
      if (auto rr = deps.store.RemoveImage(*digest); !rr) {
        if (rr.error().code() != Errc::kNotFound || !deps.store.Contains(*digest)) {
          co_return FromError(rr.error());
        }
      }
      std::optional<store::GcReport> report;
      store::Store* store = &deps.store;
      const BlockingFn gc = [store, &report]() -> Result<void> {
        auto r = store->CollectGarbage(false);
        if (!r) return r.error();
        report = std::move(*r);
        return {};
      };
      auto err = co_await OffThread(deps.blocking, gc);
      if (err) co_return FromError(*err);
      ++gc_runs;
      gc_bytes_freed += report->bytes_freed;
      json swept = json::array();
      // The store's removal listener has told the mount what went (views, fds, kernel entries).
      for (const auto& b : report->swept) swept.push_back(b.digest.ToString());
      Audit("image.removed", peer, {{"digest", digest->ToString()}, {"references", removed}, {"swept", swept}});
      co_return JsonReply(http::status::ok, json{{"references_removed", removed}, {"swept", swept},
                                                 {"bytes_freed", report->bytes_freed}});
    }
    if (path == "/v1/blobs" && method == http::verb::get) {
      std::optional<verify::Digest> after;
      if (const std::string a = QueryValue(query, "after"); !a.empty()) {
        auto d = verify::Digest::Parse(a);
        if (!d) co_return FromError(d.error());
        after = *d;
      }
      auto page = deps.store.ListBlobs(after, 1000);
      if (!page) co_return FromError(page.error());
      json items = json::array();
      for (const auto& b : page->items) {
        items.push_back({{"digest", b.digest.ToString()}, {"size", b.size}, {"media_type", b.media_type},
                         {"created", b.created}, {"last_used", b.last_used}, {"tenant", b.tenant},
                         {"denied", deps.store.IsDenied(b.digest)}});
      }
      json out{{"blobs", items}};
      if (page->next) out["next"] = page->next->ToString();
      co_return JsonReply(http::status::ok, out);
    }
    if (path == "/v1/layers" && method == http::verb::get) {
      auto trees = deps.store.ListTrees();
      if (!trees) co_return FromError(trees.error());
      json out = json::array();
      for (const auto& t : *trees) {
        out.push_back({{"layer", t.layer.ToString()}, {"diff_id", t.diff_id.ToString()},
                       {"entries", t.entries}, {"file_bytes", t.file_bytes}, {"created", t.created},
                       {"denied", deps.store.IsDenied(t.layer)}});
      }
      co_return JsonReply(http::status::ok, out);
    }
    if (path == "/v1/policy/eval" && method == http::verb::post) {
      // Read-only in effect, but it names what the policy would do: admins and readers alike.
      auto body = BodyObject(req.body());
      if (!body) co_return FromError(body.error());
      auto reference = StringField(*body, "reference", true, 512);
      if (!reference) co_return FromError(reference.error());
      auto ref = verify::Reference::Parse(*reference);
      if (!ref) co_return FromError(ref.error());
      const auto snapshot = deps.policies.Current();
      const verify::Decision d = snapshot.policy->Explain(*ref);
      co_return JsonReply(http::status::ok, json::parse(d.ToJson()));
    }
    if (path == "/v1/audit" && method == http::verb::get) {
      std::uint64_t since = 0;
      std::size_t limit = 1000;
      const std::string s = QueryValue(query, "since");
      const std::string l = QueryValue(query, "limit");
      try {
        if (!s.empty()) since = std::stoull(s);
        if (!l.empty()) limit = std::min<std::size_t>(std::stoull(l), 10000);
      } catch (const std::exception&) {
        co_return ErrorReply(http::status::bad_request, "since and limit must be numbers");
      }
      auto events = deps.store.ReadAudit(since, limit);
      if (!events) co_return FromError(events.error());
      std::string body;
      for (const auto& e : *events) {
        json j = json::parse(e.json, nullptr, false);
        if (j.is_discarded() || !j.is_object()) j = json::object();
        j["seq"] = e.seq;
        body += Auditor::Dump(j) + "\n";
      }
      co_return Reply{http::status::ok, body, "application/x-ndjson"};
    }
    if (path == "/v1/deny" && method == http::verb::get) {
      auto list = deps.store.ListDenied();
      if (!list) co_return FromError(list.error());
      json out = json::array();
      for (const auto& d : *list) {
        out.push_back({{"digest", d.digest.ToString()}, {"reason", d.reason}, {"created", d.created}});
      }
      co_return JsonReply(http::status::ok, out);
    }
    if (path == "/v1/deny" && method == http::verb::post) {
      auto body = BodyObject(req.body());
      if (!body) co_return FromError(body.error());
      auto digest_text = StringField(*body, "digest", true, 200);
      if (!digest_text) co_return FromError(digest_text.error());
      auto reason = StringField(*body, "reason", false, 1024);
      if (!reason) co_return FromError(reason.error());
      auto digest = verify::Digest::Parse(*digest_text);
      if (!digest) co_return FromError(digest.error());
      if (auto r = deps.store.Deny(*digest, *reason); !r) co_return FromError(r.error());
      if (deps.mount) deps.mount->Invalidate(*digest);
      // Layers that only denied images use are withdrawn with them.
      if (deps.revalidate) deps.revalidate();
      Audit("deny.added", peer, {{"digest", digest->ToString()}, {"reason", *reason}});
      co_return JsonReply(http::status::ok, json{{"denied", digest->ToString()}});
    }
    if (path.starts_with("/v1/deny/") && method == http::verb::delete_) {
      auto digest = verify::Digest::Parse(path.substr(9));
      if (!digest) co_return FromError(digest.error());
      if (auto r = deps.store.Undeny(*digest); !r) co_return FromError(r.error());
      if (deps.revalidate) deps.revalidate();  // its layers come back (the mount caches no withheld name)
      Audit("deny.removed", peer, {{"digest", digest->ToString()}});
      co_return JsonReply(http::status::ok, json{{"allowed", digest->ToString()}});
    }
    if (path == "/v1/gc" && method == http::verb::post) {
      auto body = BodyObject(req.body());
      if (!body) co_return FromError(body.error());
      bool dry_run = false;
      if (auto it = body->find("dry_run"); it != body->end()) {
        if (!it->is_boolean()) co_return ErrorReply(http::status::bad_request, "field \"dry_run\" must be true or false");
        dry_run = it->get<bool>();
      }
      std::optional<store::GcReport> report;
      std::optional<Error> gc_error;
      store::Store* store = &deps.store;
      const BlockingFn gc = [store, dry_run, &report]() -> Result<void> {
        auto r = store->CollectGarbage(dry_run);
        if (!r) return r.error();
        report = std::move(*r);
        return {};
      };
      gc_error = co_await OffThread(deps.blocking, gc);
      if (gc_error) co_return FromError(*gc_error);
      if (!dry_run) {
        ++gc_runs;
        gc_bytes_freed += report->bytes_freed;
      }
      json swept = json::array();
      for (const auto& b : report->swept) swept.push_back(b.digest.ToString());
      Audit("gc", peer, {{"dry_run", dry_run}, {"bytes_freed", report->bytes_freed}, {"blobs", report->swept.size()}});
      co_return JsonReply(http::status::ok, json{{"dry_run", dry_run}, {"swept", swept},
                                                 {"bytes_freed", report->bytes_freed},
                                                 {"files_swept", report->files_swept},
                                                 {"live_blobs", report->live_blobs}});
    }
    if (path == "/v1/scrub" && method == http::verb::post) {
      auto body = BodyObject(req.body());
      if (!body) co_return FromError(body.error());
      store::ScrubOptions opts;
      for (const auto& [key, value] : body->items()) {
        if (key == "max_bytes" || key == "rate_bytes_per_s") {
          if (!value.is_number_unsigned()) {
            co_return ErrorReply(http::status::bad_request,
                                 "field \"" + key + "\" must be a non-negative integer");
          }
          (key == "max_bytes" ? opts.max_bytes : opts.rate_bytes_per_s) =
              value.get<std::uint64_t>();
        } else if (key == "repair" || key == "restart") {
          if (!value.is_boolean()) {
            co_return ErrorReply(http::status::bad_request,
                                 "field \"" + key + "\" must be true or false");
          }
          (key == "repair" ? opts.repair : opts.restart) = value.get<bool>();
        } else {
          co_return ErrorReply(http::status::bad_request, "unknown field \"" + key + "\"");
        }
      }
      std::optional<store::ScrubReport> report;
      store::Store* store = &deps.store;
      const BlockingFn scrub = [store, opts, &report]() -> Result<void> {
        auto r = store->Scrub(opts);
        if (!r) return r.error();
        report = std::move(*r);
        return {};
      };
      if (auto err = co_await OffThread(deps.blocking, scrub)) co_return FromError(*err);
      json problems = json::array();
      for (const auto& p : report->problems) {
        problems.push_back({{"what", p.what}, {"detail", p.detail}, {"repaired", p.repaired}});
      }
      Audit("store.scrub", peer, {{"repair", opts.repair}, {"bytes_hashed", report->bytes_hashed},
                                  {"problems", report->problems.size()}});
      co_return JsonReply(http::status::ok,
                          json{{"blobs_checked", report->blobs_checked},
                               {"files_checked", report->files_checked},
                               {"bytes_hashed", report->bytes_hashed},
                               {"pass_complete", report->pass_complete},
                               {"resume_at", report->resume_at},
                               {"problems", problems}});
    }
    if (path == "/v1/policy/reload" && method == http::verb::post) {
      if (!deps.reload) co_return ErrorReply(http::status::not_implemented, "reload not available");
      auto r = deps.reload();
      Audit("policy.reload", peer, {{"ok", r.has_value()}, {"reason", r ? "" : r.error().ToString()}});
      if (!r) co_return FromError(r.error());
      co_return JsonReply(http::status::ok, json{{"reloaded", true}});
    }
    if (path == "/v1/leases" && method == http::verb::get) {
      auto leases = deps.store.ListLeases();
      if (!leases) co_return FromError(leases.error());
      json out = json::array();
      for (const auto& l : *leases) {
        json digests = json::array();
        for (const auto& d : l.digests) digests.push_back(d.ToString());
        out.push_back({{"id", l.id}, {"tenant", l.tenant}, {"container", l.container},
                       {"digests", digests}, {"created", l.created}});
      }
      co_return JsonReply(http::status::ok, out);
    }
    if (path == "/v1/leases" && method == http::verb::post) {
      auto body = BodyObject(req.body());
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
        co_return ErrorReply(http::status::bad_request,
                             "field \"images\" must be a non-empty array of digests or references");
      }
      for (const auto& item : *images) {
        if (!item.is_string()) co_return ErrorReply(http::status::bad_request, "images must be strings");
        const std::string& text = item.get_ref<const std::string&>();
        if (auto d = verify::Digest::Parse(text)) {
          if (!deps.store.Contains(*d)) co_return ErrorReply(http::status::not_found, text + " is not in the store");
          lease.digests.push_back(*d);
          continue;
        }
        auto ref = verify::Reference::Parse(text);
        if (!ref) co_return FromError(ref.error());
        auto rec = deps.store.GetRef(ref->String());
        if (!rec) co_return ErrorReply(http::status::not_found, text + " has not been pulled");
        lease.digests.push_back(rec->digest);
      }
      if (deps.store.GetLease(lease.id)) {
        co_return ErrorReply(http::status::conflict, "lease " + lease.id + " exists");
      }
      if (auto r = deps.store.PutLease(lease); !r) co_return FromError(r.error());
      json digests = json::array();
      for (const auto& d : lease.digests) digests.push_back(d.ToString());
      Audit("lease.created", peer, {{"lease", lease.id}, {"tenant", lease.tenant},
                                    {"container", lease.container}, {"digests", digests}});
      co_return JsonReply(http::status::ok, json{{"id", lease.id}, {"tenant", lease.tenant},
                                                 {"container", lease.container},
                                                 {"digests", digests}});
    }
    if (path.starts_with("/v1/leases/") && method == http::verb::delete_) {
      const std::string id = path.substr(11);
      const std::string w = QueryValue(query, "wipe");
      const bool wipe = w == "1" || w == "true";
      // A release on a container's behalf (the poststop hook) names the container (and maybe
      // the tenant) from the container's state; the store checks them against the lease.
      std::optional<store::LeaseOwner> owner;
      if (const std::string c = QueryValue(query, "container"); !c.empty() ||
          query.find("container=") != std::string::npos) {
        owner = store::LeaseOwner{.container = c, .tenant = QueryValue(query, "tenant")};
      }
      std::optional<store::WipeReport> report;
      store::Store* store = &deps.store;
      const store::LeaseOwner* owner_ptr = owner ? &*owner : nullptr;
      const BlockingFn release = [store, id, wipe, owner_ptr, &report]() -> Result<void> {
        auto r = store->ReleaseLease(id, wipe, owner_ptr);
        if (!r) return r.error();
        report = std::move(*r);
        return {};
      };
      auto err = co_await OffThread(deps.blocking, release);
      if (err && err->code() == Errc::kPermission) {
        AuditRefusal("lease.release.refused", peer,
                     {{"lease", id}, {"container", owner ? owner->container : ""},
                      {"tenant", owner ? owner->tenant : ""}, {"reason", err->context()}});
      }
      if (err) co_return FromError(*err);
      json blobs = json::array();
      for (const auto& d : report->blobs) blobs.push_back(d.ToString());  // mount told by the store
      json out{{"lease", report->lease}, {"tenant", report->tenant}, {"wiped", report->wiped},
               {"blobs", blobs}, {"blob_bytes", report->blob_bytes}, {"files", report->files},
               {"file_bytes", report->file_bytes}, {"refs_removed", report->refs_removed}};
      json audit = out;
      Audit(wipe ? "lease.wiped" : "lease.released", peer, audit);
      co_return JsonReply(http::status::ok, out);
    }
    if (path == "/v1/pull" && method == http::verb::post) {
      co_return co_await Pull(peer, req, query, stream, streamed);
    }
    co_return ErrorReply(http::status::not_found, "no endpoint " + std::string(req.method_string()) + " " + path);
  }

  // Audit retention: at start and then every minute, off the io thread.
  asio::awaitable<void> RetainAudit() {
    auto self = shared_from_this();
    asio::steady_timer timer(io);
    Auditor* auditor = deps.auditor;
    const BlockingFn prune = [auditor]() -> Result<void> {
      auto r = auditor->Prune();
      if (!r) return r.error();
      return {};
    };
    while (!stopping) {
      auto err = co_await OffThread(deps.blocking, prune);
      if (err) log->error("audit retention: {}", err->ToString());
      timer.expires_after(std::chrono::seconds(60));
      error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  struct PullStream {
    explicit PullStream(asio::io_context& io) : wake(io) {}
    std::deque<std::string> lines;
    asio::steady_timer wake;
    bool done = false;
  };

  asio::awaitable<Reply> Pull(const Peer& peer, const http::request<http::string_body>& req,
                              const std::string& query, Stream& stream, bool* streamed) {
    auto body = BodyObject(req.body());
    if (!body) co_return FromError(body.error());
    auto reference = StringField(*body, "reference", true, 512);
    if (!reference) co_return FromError(reference.error());
    auto tenant = StringField(*body, "tenant", false, 128);
    if (!tenant) co_return FromError(tenant.error());
    PullOptions opts;
    opts.tenant = *tenant;
    opts.actor_uid = static_cast<std::int64_t>(peer.uid);
    const bool stream_events =
        QueryValue(query, "stream") == "1" ||
        req[http::field::accept].find("application/x-ndjson") != std::string::npos;
    if (!stream_events) {
      const std::string ref = *reference;
      auto r = co_await deps.puller.Pull(ref, opts);
      if (!r) {
        ++pulls_failed;
        ++pull_failures[std::string(ToString(r.error().code()))];
        co_return FromError(r.error());
      }
      ++pulls_ok;
      pull_bytes += r->bytes_fetched;
      AfterPull();
      co_return JsonReply(http::status::ok, PullResultJson(*r));
    }

    // Streamed: NDJSON progress events as they happen, then the result (or error) line.
    *streamed = true;
    http::response<http::empty_body> head{http::status::ok, req.version()};
    head.set(http::field::content_type, "application/x-ndjson");
    head.set(http::field::server, "digestd");
    head.keep_alive(false);
    head.chunked(true);
    http::response_serializer<http::empty_body> sr{head};
    error_code ec;
    co_await http::async_write_header(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
    auto state = std::make_shared<PullStream>(io);
    opts.on_event = [state](const PullEvent& e) {
      state->lines.push_back(Auditor::Dump(EventJson(e)));
      state->wake.cancel();
    };
    auto self = shared_from_this();
    const std::string ref = *reference;
    asio::co_spawn(
        io,
        [self, state, ref, opts]() -> asio::awaitable<void> {
          auto r = co_await self->deps.puller.Pull(ref, opts);
          json last;
          if (r) {
            ++self->pulls_ok;
            self->pull_bytes += r->bytes_fetched;
            self->AfterPull();
            last = self->PullResultJson(*r);
            last["type"] = "result";
          } else {
            ++self->pulls_failed;
            ++self->pull_failures[std::string(ToString(r.error().code()))];
            last = json{{"type", "error"}, {"error", r.error().ToString()},
                        {"code", std::string(ToString(r.error().code()))}};
          }
          state->lines.push_back(Auditor::Dump(last));
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
        auto chunk = http::make_chunk(asio::buffer(line));
        co_await asio::async_write(stream, chunk, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) client_gone = true;
      }
      if (state->done) break;
      state->wake.expires_at(asio::steady_timer::time_point::max());
      error_code wait_ec;
      co_await state->wake.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
    }
    if (!client_gone) {
      auto last = http::make_chunk_last();
      co_await asio::async_write(stream, last, asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return Reply{};
  }
};

ControlServer::ControlServer(asio::io_context& io, ControlDeps deps)
    : impl_(std::make_shared<Impl>(io, std::move(deps))) {}

ControlServer::~ControlServer() { Stop(); }

Result<void> ControlServer::Start(UniqueFd listener) {
  auto& s = *impl_;
  const std::string path = s.deps.config.daemon.socket.string();
  s.inherited = static_cast<bool>(listener);
  gid_t group = ::getegid();
  if (!s.deps.config.daemon.socket_group.empty()) {
    auto g = GroupId(s.deps.config.daemon.socket_group, Module::kDaemon);
    if (!g) return std::move(g).error().Wrap("daemon.socket_group");
    group = *g;
  }
  UniqueFd fd = std::move(listener);
  if (!fd) {
    DIGESTD_ASSIGN_OR_RETURN(fd, ListenUnixSocket(path, 0660, group, Module::kDaemon));
  }
  error_code ec;
  s.acceptor.emplace(s.io);
  s.acceptor->assign(local{}, fd.Get(), ec);
  if (ec) return MakeError(Module::kDaemon, Errc::kIo, "listen on " + Quote(path) + ": " + ec.message());
  fd.Release();  // the acceptor owns it now
  asio::co_spawn(s.io, impl_->Accept(), asio::detached);
  asio::co_spawn(s.io, impl_->RetainAudit(), asio::detached);
  s.log->info("control socket {} (0660, gid {})", path, group);
  return {};
}

std::size_t ControlServer::connections() const { return impl_->open_connections; }

void ControlServer::Stop() {
  auto& s = *impl_;
  if (s.stopping) return;
  s.stopping = true;
  if (s.acceptor) {
    error_code ec;
    s.acceptor->close(ec);
    if (!s.inherited) ::unlink(s.deps.config.daemon.socket.c_str());
  }
}

}  // namespace digestd::daemon
