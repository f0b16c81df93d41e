#include "daemon/http_client.h"
#include "daemon/errors.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <limits>

namespace digestd::daemon {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr std::size_t kErrorBodyCap = 64u << 10;

Error NetError(std::string context, const error_code& ec) {
  std::string what = ec == beast::error::timeout ? "timed out" : ec.message();
  return DaemonError(Errc::kIo, context + ": " + what);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string Url::Authority() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string h = v6 ? "[" + host + "]" : host;
  if ((tls && port == "443") || (!tls && port == "80")) return h;
  return h + ":" + port;
}

std::string Url::Origin() const { return std::string(tls ? "https://" : "http://") + Authority(); }

Result<Url> Url::Parse(std::string_view text) {
  auto bad = [&](std::string why) {
    return DaemonError(Errc::kInvalidArgument, "bad URL " + Quote(text) + ": " + why);
  };
  if (text.size() > 8192) return bad("too long");
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return bad("control, space or non-ASCII character");
    }
  }
  Url u;
  std::string_view rest;
  if (text.starts_with("https://")) {
    u.tls = true;
    rest = text.substr(8);
  } else if (text.starts_with("http://")) {
    u.tls = false;
    rest = text.substr(7);
  } else {
    return bad("want http:// or https://");
  }
  const auto slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (u.target.front() == '?') u.target = "/" + u.target;
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return bad("missing host or userinfo present");
  }
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 address");
    u.host = std::string(authority.substr(1, close - 1));
    authority = authority.substr(close + 1);
    if (!authority.empty() && authority.front() != ':') return bad("junk after IPv6 address");
    u.port = authority.empty() ? "" : std::string(authority.substr(1));
  } else {
    const auto colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    u.port = colon == std::string_view::npos ? "" : std::string(authority.substr(colon + 1));
  }
  if (u.host.empty()) return bad("empty host");
  if (u.port.empty()) u.port = u.tls ? "443" : "80";
  if (u.port.size() > 5 || u.port.find_first_not_of("0123456789") != std::string::npos) {
    return bad("bad port");
  }
  return u;
}

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  const std::string n = Lower(name);
  for (const auto& [k, v] : headers) {
    if (k == n) return v;
  }
  return std::nullopt;
}

struct HttpClient::Connection {
  std::string origin;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  beast::tcp_stream& Lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
};

struct HttpClient::TlsContexts {
  std::map<std::string, std::unique_ptr<ssl::context>> by_ca;

  Result<ssl::context*> Get(const std::string& ca_file) {
    auto it = by_ca.find(ca_file);
    if (it != by_ca.end()) return it->second.get();
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    error_code ec;
    ctx->set_default_verify_paths(ec);
    if (ec) return NetError("TLS: system CAs", ec);
    if (!ca_file.empty()) {
      ctx->load_verify_file(ca_file, ec);
      if (ec) return NetError("TLS: CA file " + Quote(ca_file), ec);
    }
    ctx->set_verify_mode(ssl::verify_peer);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    auto* raw = ctx.get();
    by_ca.emplace(ca_file, std::move(ctx));
    return raw;
  }
};

HttpClient::HttpClient(asio::io_context& io, HttpOptions options)
    : io_(io), options_(options), tls_(std::make_unique<TlsContexts>()) {}
HttpClient::~HttpClient() = default;

asio::awaitable<Result<HttpClient::ConnectionPtr>> HttpClient::Connect(const Url& url,
                                                                       const std::string& ca_file) {
  error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints =
      co_await resolver.async_resolve(url.host, url.port, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return NetError("resolve " + url.Authority(), ec);
  auto conn = std::make_unique<Connection>();
  conn->origin = url.Origin();
  if (url.tls) {
    auto ctx = tls_->Get(ca_file);
    if (!ctx) co_return ctx.error();
    conn->tls.emplace(io_, **ctx);
  } else {
    conn->plain.emplace(io_);
  }
  auto& lowest = conn->Lowest();
  lowest.expires_after(options_.connect_timeout);
  co_await lowest.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return NetError("connect " + url.Authority(), ec);
  lowest.socket().set_option(tcp::no_delay(true), ec);
  ++connections_opened_;
  if (url.tls) {
    // SNI and hostname verification against the name we dialled.
    // SSL_set_tlsext_host_name is a macro with a C cast; call what it expands to.
    if (SSL_ctrl(conn->tls->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                 TLSEXT_NAMETYPE_host_name, const_cast<char*>(url.host.c_str())) != 1) {
      co_return DaemonError(Errc::kIo, "TLS: cannot set SNI for " + url.host);
    }
    conn->tls->set_verify_callback(ssl::host_name_verification(url.host));
    lowest.expires_after(options_.connect_timeout);
    co_await conn->tls->async_handshake(ssl::stream_base::client,
                                        asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return NetError("TLS handshake with " + url.Authority(), ec);
  }
  co_return conn;
}

void HttpClient::Release(ConnectionPtr conn) {
  auto& idle = idle_[conn->origin];
  if (idle.size() < options_.max_idle_per_origin) idle.push_back(std::move(conn));
}

namespace {

// One request/response on an open connection. `fresh` tells whether a failure before any response
// byte may be retried on a new connection (a pooled one can have been closed by the server).
template <class Stream>
asio::awaitable<Result<HttpResponse>> RoundTrip(Stream& stream, beast::tcp_stream& lowest,
                                                beast::flat_buffer& buffer, const Url& url,
                                                std::string_view method, const Headers& headers,
                                                std::size_t max_body, const BodySink* sink,
                                                const HeadFn* on_head, const HttpOptions& opt,
                                                bool* keep_alive, bool* nothing_received,
                                                const std::string& body) {
  error_code ec;
  http::request<http::string_body> req;
  req.method_string(std::string(method));
  req.target(url.target);
  req.version(11);
  req.set(http::field::host, url.Authority());
  req.set(http::field::user_agent, "digestd/0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == "PUT" || method == "POST") {
    req.body() = body;
    req.prepare_payload();
  }
  lowest.expires_after(opt.first_byte_timeout);
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return NetError(std::string(method) + " " + url.Origin() + url.target, ec);

  http::response_parser<http::buffer_body> parser;
  parser.header_limit(64u << 10);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (method == "HEAD") parser.skip(true);
  co_await http::async_read_header(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return NetError("reading response to " + url.Origin() + url.target, ec);
  *nothing_received = false;

  HttpResponse resp;
  resp.status = static_cast<int>(parser.get().result_int());
  for (const auto& f : parser.get()) {
    resp.headers.emplace_back(Lower(f.name_string()), std::string(f.value()));
  }
  const bool streaming = sink != nullptr && resp.status >= 200 && resp.status < 300;
  if (streaming && on_head != nullptr) {
    if (auto r = (*on_head)(resp); !r) {
      *keep_alive = false;
      co_return r.error();
    }
  }
  const std::size_t cap = streaming ? std::numeric_limits<std::size_t>::max()
                          : sink    ? kErrorBodyCap
                                    : max_body;
  if (!streaming) {
    if (auto len = parser.content_length(); len && *len > cap) {
      *keep_alive = false;
      co_return DaemonError(Errc::kTooLarge,
                          url.Origin() + url.target + ": response body of " + std::to_string(*len) +
                              " bytes is over the limit of " + std::to_string(cap));
    }
  }
  // Beast sizes each socket read by the flat_buffer's free capacity (at least 512 bytes, at most
  // 64 KiB). Without room reserved, every read took ~512 bytes: a million io_uring round trips
  // for 512 MiB, and 160 MB/s instead of GB/s.
  buffer.reserve(256u << 10);
  std::vector<char> buf(opt.stream_chunk);
  // The body's overall deadline (HttpOptions::body_deadline_min, min_rate_bytes_per_s), counted
  // in time spent waiting for the peer only.
  using Clock = std::chrono::steady_clock;
  const auto body_start = Clock::now();
  Clock::duration own_wait{};  // time the sink spent on our disk
  const std::uint64_t rate = std::max<std::uint64_t>(opt.min_rate_bytes_per_s, 1);
  const auto declared = parser.content_length();
  std::uint64_t received = 0;
  auto allowed = [&]() {
    const std::uint64_t size = std::max<std::uint64_t>(declared.value_or(0), received);
    return std::chrono::duration_cast<Clock::duration>(opt.body_deadline_min) +
           std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(size * 1000 / rate));
  };
  while (!parser.is_done()) {
    parser.get().body().data = buf.data();
    parser.get().body().size = buf.size();
    const auto peer_time = Clock::now() - body_start - own_wait;
    const auto left = allowed() - peer_time;
    if (left <= Clock::duration::zero()) {
      *keep_alive = false;
      co_return MakeError(
          Module::kDaemon, Errc::kIo,
          url.Origin() + url.target + ": body too slow: " + std::to_string(received) +
              " bytes in " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(peer_time).count()) +
              " s, under the minimum of " + std::to_string(rate) + " bytes/s after " +
              std::to_string(opt.body_deadline_min.count() / 1000) +
              " s (timeouts.min_rate_bytes_per_s, timeouts.blob_deadline_min_ms)");
    }
    const auto stall = std::chrono::duration_cast<Clock::duration>(opt.stall_timeout);
    lowest.expires_after(std::min(stall, left));
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec == beast::error::timeout && Clock::now() - body_start - own_wait >= allowed()) {
      continue;  // reported above with the figures
    }
    const std::size_t n = buf.size() - parser.get().body().size;
    received += n;
    if (n > 0) {
      if (streaming) {
        const std::span<const std::byte> chunk = std::as_bytes(std::span(buf.data(), n));
        // The sink may wait for the disk (the store's follower); that is not the peer stalling,
        // so the stall timer is off until the next read re-arms it.
        lowest.expires_never();
        const auto sink_start = Clock::now();
        auto written = co_await (*sink)(chunk);
        own_wait += Clock::now() - sink_start;
        if (!written) {
          *keep_alive = false;
          co_return written.error();
        }
        resp.body_bytes += n;
      } else {
        if (resp.body.size() + n > cap) {
          *keep_alive = false;
          if (sink) break;  // an error body: what we have is enough to report
          co_return DaemonError(Errc::kTooLarge,
                              url.Origin() + url.target + ": response body over the limit of " +
                                  std::to_string(cap));
        }
        resp.body.append(buf.data(), n);
      }
    }
    if (ec) {
      *keep_alive = false;
      co_return NetError("connection lost after " +
                             std::to_string(streaming ? resp.body_bytes : resp.body.size()) +
                             " body bytes from " + url.Origin() + url.target,
                         ec);
    }
  }
  *keep_alive = *keep_alive && parser.is_done() && parser.keep_alive();
  co_return resp;
}

}  // namespace

asio::awaitable<Result<HttpResponse>> HttpClient::Exchange(const Url& url, std::string_view method,
                                                           const Headers& headers,
                                                           std::size_t max_body,
                                                           const BodySink* sink,
                                                           const std::string& ca_file,
                                                           const HeadFn* on_head,
                                                           const std::string& body) {
  const std::string origin = url.Origin();
  for (int attempt = 0;; ++attempt) {
    ConnectionPtr conn;
    bool pooled = false;
    if (auto it = idle_.find(origin); it != idle_.end() && !it->second.empty()) {
      conn = std::move(it->second.back());
      it->second.pop_back();
      pooled = true;
    } else {
      auto c = co_await Connect(url, ca_file);
      if (!c) co_return c.error();
      conn = std::move(*c);
    }
    bool keep_alive = true, nothing_received = true;
    // No co_await inside ?: — GCC 12 destroys the result twice there (a coroutine codegen bug).
    Result<HttpResponse> r = DaemonError(Errc::kInternal, "unset");
    if (conn->tls) {
      r = co_await RoundTrip(*conn->tls, conn->Lowest(), conn->buffer, url, method, headers,
                             max_body, sink, on_head, options_, &keep_alive, &nothing_received,
                             body);
    } else {
      r = co_await RoundTrip(*conn->plain, conn->Lowest(), conn->buffer, url, method, headers,
                             max_body, sink, on_head, options_, &keep_alive, &nothing_received,
                             body);
    }
    if (!r && pooled && nothing_received && attempt == 0) continue;  // stale keep-alive
    if (r && keep_alive) Release(std::move(conn));
    co_return r;
  }
}

asio::awaitable<Result<HttpResponse>> HttpClient::Fetch(const Url& url, std::string_view method,
                                                        const Headers& headers,
                                                        std::size_t max_body, std::string ca_file,
                                                        std::string body) {
  co_return co_await Exchange(url, method, headers, max_body, nullptr, ca_file, nullptr, body);
}

asio::awaitable<Result<HttpResponse>> HttpClient::Stream(const Url& url, const Headers& headers,
                                                         const BodySink& sink,
                                                         std::string ca_file,
                                                         const HeadFn* on_head) {
  co_return co_await Exchange(url, "GET", headers, 0, &sink, ca_file, on_head, std::string());
}

}  // namespace digestd::daemon
