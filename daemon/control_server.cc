#include "daemon/control_server.h"
#include "daemon/errors.h"

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

#include "common/fd_budget.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "daemon/api/api.h"

namespace digestd::daemon {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;
using Stream = beast::basic_stream<local, asio::any_io_executor, beast::unlimited_rate_policy>;
using boost::system::error_code;
using api::Status;

constexpr std::size_t kHeaderLimit = 16u << 10;
constexpr std::size_t kBodyLimit = 1u << 20;
constexpr auto kRequestTimeout = std::chrono::seconds(30);
// Connections served at once; past it new ones are closed at accept (counted).
constexpr std::size_t kMaxConnections = 4096;

Peer PeerOf(int fd) {
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  Peer p{.pid = 0, .uid = static_cast<uid_t>(-1), .gid = static_cast<gid_t>(-1)};
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    p = Peer{.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
  }
  return p;
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

api::Method MethodOf(http::verb v) {
  switch (v) {
    case http::verb::get: return api::Method::kGet;
    case http::verb::head: return api::Method::kHead;
    case http::verb::post: return api::Method::kPost;
    case http::verb::put: return api::Method::kPut;
    case http::verb::delete_: return api::Method::kDelete;
    default: return api::Method::kOther;
  }
}

// Writes chunks of a streamed reply to the connection.
class BeastChunks : public api::ChunkWriter {
 public:
  explicit BeastChunks(Stream& stream) : stream_(stream) {}
  asio::awaitable<bool> Write(std::string chunk) override {
    error_code ec;
    auto c = http::make_chunk(asio::buffer(chunk));
    co_await asio::async_write(stream_, c, asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec;
  }

 private:
  Stream& stream_;
};

}  // namespace

Role RoleFor(const DaemonConfig& config, const Peer& peer) {
  auto has = [](const std::vector<std::uint32_t>& v, std::uint32_t id) {
    return std::find(v.begin(), v.end(), id) != v.end();
  };
  if (has(config.admin_uids, peer.uid) || has(config.admin_gids, peer.gid)) return Role::kAdmin;
  if (has(config.reader_uids, peer.uid) || has(config.reader_gids, peer.gid)) return Role::kReader;
  return Role::kNone;
}

std::function<bool(uid_t, gid_t)> AdminsOnly(const DaemonConfig& config) {
  const DaemonConfig* c = &config;
  return [c](uid_t uid, gid_t gid) { return RoleFor(*c, {.uid = uid, .gid = gid}) == Role::kAdmin; };
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
  Impl(asio::io_context& i, ControlDeps d) : io(i), ctx(std::make_shared<api::Context>(i, std::move(d))) {
    if (!ctx->deps.metrics) ctx->deps.metrics = &own_metrics;
  }

  asio::io_context& io;
  metrics::Registry own_metrics;
  std::shared_ptr<api::Context> ctx;
  std::optional<local::acceptor> acceptor;
  bool inherited = false;  // the listener came from the service manager
  std::size_t open_connections = 0;
  metrics::Counter connections_refused;
  AcceptBackoff backoff{Logger(Module::kDaemon, "api"), "control socket"};

  void RegisterMetrics(metrics::Registry& r) {
    ctx->RegisterMetrics(r);
    r.Add({"digestd_api_connections", "Control socket connections open now.", metrics::Kind::kGauge},
          [this] { return static_cast<std::uint64_t>(open_connections); });
    r.Add({"digestd_api_connections_refused_total",
           "Connections closed at accept because kMaxConnections were open.", metrics::Kind::kCounter},
          [this] { return connections_refused.value(); });
    r.Add({"digestd_accept_backoffs_total",
           "accept() failures from fd or memory shortage, each backed off (never fatal).",
           metrics::Kind::kCounter},
          [this] { return backoff.failures(); }, metrics::Label("socket", "control"));
    r.Add({"digestd_fd_limit", "The process's soft RLIMIT_NOFILE.", metrics::Kind::kGauge},
          [] { return static_cast<std::uint64_t>(FdLimit()); });
  }

  // A malformed request: counted, audited (within the peer's budget) and answered.
  void BadRequest(const Peer& peer, std::string path, std::string reason) {
    ctx->bad_requests.Add();
    store::AuditEvent event{.type = "api.bad_request", .reason = std::move(reason)};
    if (!path.empty()) event.details = {{"path", std::move(path)}};
    ctx->Refusal(peer, std::move(event));
  }

  asio::awaitable<void> Accept() {
    auto self = shared_from_this();
    asio::steady_timer pause(io);
    for (;;) {
      error_code ec;
      local::socket sock = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ctx->stopping || ec == asio::error::operation_aborted) co_return;
        // Out of fds (or memory): the connection stays queued and accept fails again at once;
        // wait instead of spinning, log once in a while, count every time.
        const int err = ec.category() == boost::system::system_category() ? ec.value() : 0;
        const auto delay = AcceptBackoff::IsShortage(err) ? backoff.OnShortage(err)
                                                          : std::chrono::milliseconds(100);
        if (!AcceptBackoff::IsShortage(err)) ctx->log->warn("accept: {}", ec.message());
        pause.expires_after(delay);
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (ctx->stopping) co_return;
        continue;
      }
      backoff.OnSuccess();
      if (open_connections >= kMaxConnections) {
        // Bounded like every other resource a client can make us hold: the newest is refused.
        connections_refused.Add();
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

  asio::awaitable<void> Write(Stream& stream, const api::Reply& r, unsigned version, bool keep_alive) {
    http::response<http::string_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::content_type, r.content_type);
    res.set(http::field::server, "digestd");
    res.keep_alive(keep_alive);
    res.body() = r.body;
    res.prepare_payload();
    error_code ec;
    stream.expires_after(kRequestTimeout);
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  }

  // A streamed reply: head, the body's chunks as it produces them, the last chunk.
  asio::awaitable<void> WriteStream(Stream& stream, const api::Reply& r, unsigned version) {
    http::response<http::empty_body> head{static_cast<http::status>(r.status), version};
    head.set(http::field::content_type, r.content_type);
    head.set(http::field::server, "digestd");
    head.keep_alive(false);
    head.chunked(true);
    http::response_serializer<http::empty_body> sr{head};
    error_code ec;
    co_await http::async_write_header(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
    BeastChunks chunks(stream);
    co_await r.stream->Produce(chunks);
    auto last = http::make_chunk_last();
    co_await asio::async_write(stream, last, asio::redirect_error(asio::use_awaitable, ec));
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
        api::Reply r;
        if (ec == http::error::body_limit) {
          r = api::ErrorReply(Status::kPayloadTooLarge, "request body over 1 MiB");
        } else if (ec == http::error::header_limit) {
          r = api::ErrorReply(Status::kHeaderFieldsTooLarge, "request headers over 16 KiB");
        } else if (ec == beast::error::timeout) {
          r = api::ErrorReply(Status::kRequestTimeout, "request not received within 30 s");
        } else {
          r = api::ErrorReply(Status::kBadRequest, "malformed HTTP request: " + ec.message());
        }
        // An idle keep-alive connection timing out is no refusal; anything malformed is.
        if (ec == beast::error::timeout) {
          ctx->bad_requests.Add();
        } else {
          BadRequest(peer, "", ec.message());
        }
        co_await Write(stream, r, 11, false);
        co_return;
      }
      stream.expires_never();
      auto req = parser.release();
      ctx->requests.Add();
      if (!ValidTarget(req.target())) {
        // Answered and audited like any other refusal (the path is recorded with its invalid
        // bytes replaced); the connection is closed.
        BadRequest(peer, std::string(req.target()), "request target is not printable UTF-8");
        co_await Write(stream,
                       api::ErrorReply(Status::kBadRequest,
                                       "request target must be printable UTF-8 without spaces"),
                       req.version(), false);
        co_return;
      }
      const std::string target(req.target());
      const auto qpos = target.find('?');
      api::Request request{
          .peer = peer,
          .role = Role::kNone,
          .method = MethodOf(req.method()),
          .method_text = std::string(req.method_string()),
          .path = target.substr(0, qpos),
          .query = qpos == std::string::npos ? "" : target.substr(qpos + 1),
          .body = std::move(req.body()),
          .accept = std::string(req[http::field::accept]),
          .params = {}};
      api::Reply reply = co_await api::Dispatch(*ctx, request);
      if (reply.stream) {
        co_await WriteStream(stream, reply, req.version());
        co_return;
      }
      const bool keep = req.keep_alive();
      co_await Write(stream, reply, req.version(), keep);
      if (!keep) {
        error_code ignored;
        stream.socket().shutdown(local::socket::shutdown_send, ignored);
        co_return;
      }
    }
  }
};

ControlServer::ControlServer(asio::io_context& io, ControlDeps deps)
    : impl_(std::make_shared<Impl>(io, std::move(deps))) {}

ControlServer::~ControlServer() { Stop(); }

Result<void> ControlServer::Start(UniqueFd listener) {
  auto& s = *impl_;
  const std::string path = s.ctx->deps.config.daemon.socket.string();
  s.inherited = static_cast<bool>(listener);
  DIGESTD_ASSIGN_OR_RETURN(const gid_t group, SocketGroup(s.ctx->deps.config.daemon));
  UniqueFd fd = std::move(listener);
  if (!fd) {
    DIGESTD_ASSIGN_OR_RETURN(fd, ListenUnixSocket(path, 0660, group, Module::kDaemon));
  }
  error_code ec;
  s.acceptor.emplace(s.io);
  s.acceptor->assign(local{}, fd.Get(), ec);
  if (ec) return DaemonError(Errc::kIo, "listen on " + Quote(path) + ": " + ec.message());
  fd.Release();  // the acceptor owns it now
  s.RegisterMetrics(*s.ctx->deps.metrics);
  asio::co_spawn(s.io, impl_->Accept(), asio::detached);
  asio::co_spawn(s.io, api::RetainAudit(s.ctx), asio::detached);
  s.ctx->log->info("control socket {} (0660, gid {})", path, group);
  return {};
}

std::size_t ControlServer::connections() const { return impl_->open_connections; }

void ControlServer::Stop() {
  auto& s = *impl_;
  if (s.ctx->stopping) return;
  s.ctx->stopping = true;
  if (s.acceptor) {
    error_code ec;
    s.acceptor->close(ec);
    if (!s.inherited) ::unlink(s.ctx->deps.config.daemon.socket.c_str());
  }
}

}  // namespace digestd::daemon
