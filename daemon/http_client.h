#pragma once

// HTTP/1.1 client for registries: Boost.Beast over Boost.Asio, whose io_uring backend carries
// every socket operation (the daemon target defines BOOST_ASIO_HAS_IO_URING and
// BOOST_ASIO_DISABLE_EPOLL). TLS through OpenSSL with SNI and hostname verification, the system
// CAs plus an optional per-registry CA file; plain HTTP only when the caller says so.
// Keep-alive connections are pooled per origin. Bodies are either read whole (capped) or streamed
// to a sink in bounded chunks; nothing large is held in memory.
//
// Threading: all methods run on the io_context the client was built with; not thread-safe.
// Errors: values (Result); never exceptions across the coroutine boundary.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "common/error.h"

namespace digestd::daemon {

namespace asio = boost::asio;

struct Url {
  bool tls = true;
  std::string host;  // without brackets for IPv6
  std::string port;  // "443", "5000"
  std::string target = "/";
  // "host[:port]" as it goes in the Host header and identifies the origin.
  std::string Authority() const;
  std::string Origin() const;  // "https://host:port"
  // Parses an absolute http(s) URL (a redirect target, a token realm).
  static Result<Url> Parse(std::string_view text);
};

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  int status = 0;
  Headers headers;   // names lower-cased
  std::string body;  // the body for Fetch; for Stream only when the status was not 2xx (capped)
  std::uint64_t body_bytes = 0;  // bytes handed to the sink by Stream
  std::optional<std::string> Header(std::string_view name) const;
};

struct HttpOptions {
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds first_byte_timeout{30'000};
  std::chrono::milliseconds stall_timeout{30'000};
  // A whole response body must arrive within body_deadline_min plus its size (Content-Length,
  // or the bytes so far when there is none) at min_rate_bytes_per_s. Time the sink spends
  // waiting for our own disk does not count. Without it, a peer sending one byte per
  // stall_timeout holds a pull forever.
  std::chrono::milliseconds body_deadline_min{60'000};
  std::uint64_t min_rate_bytes_per_s = 256 << 10;
  std::size_t max_idle_per_origin = 8;
  std::size_t stream_chunk = 256u << 10;  // body bytes per sink call at most
};

// Receives streamed body bytes (asynchronously: the body is not read further until it completes);
// an error aborts the transfer (the connection is dropped). The span is valid until completion.
using BodySink = std::function<asio::awaitable<Result<void>>(std::span<const std::byte>)>;
// Sees a 2xx response's status and headers before its body streams; an error aborts.
using HeadFn = std::function<Result<void>(const HttpResponse&)>;

class HttpClient {
 public:
  HttpClient(asio::io_context& io, HttpOptions options);
  ~HttpClient();

  // Sends `method url` with `headers` and reads the whole response body, refusing bodies over
  // max_body (kTooLarge). `ca_file` adds trusted CAs for this origin (TLS only).
  asio::awaitable<Result<HttpResponse>> Fetch(const Url& url, std::string_view method,
                                              const Headers& headers, std::size_t max_body,
                                              std::string ca_file = {}, std::string body = {});

  // GETs `url`; when the status is 2xx, streams the body to `sink`, else reads up to 64 KiB of it
  // into HttpResponse::body. A connection lost mid-body is kIo with HttpResponse unavailable; the
  // caller knows how many bytes its sink got and may resume with a Range request.
  asio::awaitable<Result<HttpResponse>> Stream(const Url& url, const Headers& headers,
                                               const BodySink& sink, std::string ca_file = {},
                                               const HeadFn* on_head = nullptr);

  // Connections opened so far (for tests and metrics: keep-alive reuse keeps this low).
  std::uint64_t connections_opened() const { return connections_opened_; }

 private:
  struct Connection;
  using ConnectionPtr = std::unique_ptr<Connection>;
  asio::awaitable<Result<ConnectionPtr>> Connect(const Url& url, const std::string& ca_file);
  asio::awaitable<Result<HttpResponse>> Exchange(const Url& url, std::string_view method,
                                                 const Headers& headers, std::size_t max_body,
                                                 const BodySink* sink, const std::string& ca_file,
                                                 const HeadFn* on_head, const std::string& body);
  void Release(ConnectionPtr conn);

  asio::io_context& io_;
  HttpOptions options_;
  std::map<std::string, std::vector<ConnectionPtr>> idle_;
  struct TlsContexts;
  std::unique_ptr<TlsContexts> tls_;
  std::uint64_t connections_opened_ = 0;
};

}  // namespace digestd::daemon
