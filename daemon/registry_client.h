#pragma once

// OCI distribution client: /v2/ ping, bearer-token and Basic auth (anonymous, or credentials from
// a containers/docker auth.json), manifests with the full Accept list, blobs streamed into the
// store with redirects (Authorization never crosses hosts; depth capped), Range resume after a
// dropped connection (the store's running hash carries on), retries with backoff on 429/5xx and
// network errors honouring Retry-After, a per-registry concurrency limit, and mirrors tried in
// order for content addressed by digest. Only digests we compute are trusted: a
// Docker-Content-Digest header that disagrees is an error, and a mirror that serves wrong bytes is
// skipped, logged and counted.
//
// Threading: runs on one io_context; not thread-safe.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/error.h"
#include "daemon/config.h"
#include "daemon/http_client.h"
#include "daemon/blocking.h"
#include "verify/digest.h"
#include "verify/reference.h"

namespace spdlog {
class logger;
}

namespace digestd::daemon {

// Where FetchBlob delivers a blob (daemon/store_sink.h puts it into an image transaction): the
// registry client moves bytes and never sees the store.
class BlobSink {
 public:
  virtual ~BlobSink() = default;
  // Before each attempt (an endpoint): true to receive the blob from its first byte; false when
  // there is nothing to fetch (stored already, or fetched by another pull).
  virtual asio::awaitable<Result<bool>> Open() = 0;
  // The next bytes, at `offset` (in order, without gaps).
  virtual asio::awaitable<Result<void>> Write(std::uint64_t offset,
                                              std::span<const std::byte> data) = 0;
  // Every byte delivered: check and keep them. An error may be the endpoint's fault (wrong
  // bytes): another endpoint may follow with Open().
  virtual asio::awaitable<Result<void>> Finish() = 0;
  // The attempt failed; what it wrote is discarded.
  virtual void Abandon() = 0;
};

// A counting semaphore for coroutines on one io_context.
class AsyncSemaphore {
 public:
  AsyncSemaphore(asio::io_context& io, int permits) : io_(io), available_(permits) {}
  asio::awaitable<void> Acquire();
  void Release();

 private:
  asio::io_context& io_;
  int available_;
  std::deque<std::shared_ptr<asio::steady_timer>> waiters_;
};

struct RegistryStats {
  std::uint64_t requests = 0;
  std::uint64_t retries = 0;
  std::uint64_t resumes = 0;           // Range requests after a dropped connection
  std::uint64_t redirects = 0;
  std::uint64_t mirror_failures = 0;   // a mirror failed or served wrong bytes
  std::uint64_t bytes = 0;             // blob body bytes received
};

struct FetchedManifest {
  std::string bytes;
  std::string media_type;  // Content-Type as served
  verify::Digest digest;   // computed from bytes
  std::string source;      // host it came from
};

// Called with blob body bytes as they arrive (for progress reporting).
using ProgressFn = std::function<void(const verify::Digest&, std::uint64_t received)>;

class RegistryClient {
 public:
  RegistryClient(asio::io_context& io, const Config& config);
  ~RegistryClient();

  // Fetches a manifest. By tag: at the origin (or a mirror allowed to resolve tags). By digest:
  // mirrors first, then the origin; the bytes must hash to the digest. Bodies over the configured
  // manifest cap are refused. kNotFound when no endpoint has it.
  asio::awaitable<Result<FetchedManifest>> GetManifest(const verify::Reference& repo,
                                                       std::string_view tag_or_digest);

  // The OCI referrers index of `digest`: the referrers API, else the "sha256-<hex>" tag fallback.
  // nullopt when the registry has neither.
  asio::awaitable<Result<std::optional<std::string>>> GetReferrers(const verify::Reference& repo,
                                                                   const verify::Digest& digest);

  // A small blob (config, signature payload), read whole and checked against its digest and size.
  asio::awaitable<Result<std::string>> GetSmallBlob(const verify::Reference& repo,
                                                    const verify::Digest& digest,
                                                    std::uint64_t size, std::size_t cap);

  // Streams a blob into `sink`: mirrors first (a mirror whose bytes the sink refuses is skipped);
  // resumes with Range after a dropped connection.
  asio::awaitable<Result<void>> FetchBlob(const verify::Reference& repo,
                                          const verify::Digest& digest, std::uint64_t size,
                                          BlobSink& sink, const ProgressFn& progress);

  // Uploads a blob (monolithic: POST then PUT ?digest=) unless the registry has it already.
  asio::awaitable<Result<void>> PushBlob(const verify::Reference& repo, std::string bytes);
  // PUTs a manifest under `tag_or_digest`; returns the digest of its bytes.
  asio::awaitable<Result<verify::Digest>> PutManifest(const verify::Reference& repo,
                                                      std::string tag_or_digest, std::string bytes,
                                                      std::string media_type);

  const RegistryStats& stats() const { return stats_; }
  HttpClient& http() { return http_; }

 private:
  struct Endpoint {
    Url base;              // scheme + authority; target is replaced per request
    std::string ca_file;
    std::string registry;  // the registry whose auth applies ("docker.io")
    bool is_mirror = false;
    bool resolve_tags = true;
  };
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  struct Request {
    std::string method = "GET";
    std::string target;
    Headers headers;
    std::size_t max_body = 0;
    const BodySink* sink = nullptr;
    const HeadFn* on_head = nullptr;
    std::string body;  // for PUT/POST
  };

  std::vector<Endpoint> EndpointsFor(const std::string& registry, bool by_digest) const;
  AsyncSemaphore& LimitFor(const std::string& registry);
  // Sends with auth, redirects and retries. A sink, when given, receives 2xx bodies.
  asio::awaitable<Result<HttpResponse>> Send(const Endpoint& ep, const std::string& repository,
                                             Request req);
  asio::awaitable<Result<std::string>> Authorize(const Endpoint& ep, const std::string& repository,
                                                 const std::string& challenge);
  std::optional<std::string> BasicCredentials(const std::string& registry) const;

  asio::io_context& io_;
  const Config& config_;
  HttpClient http_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<std::string, Token> tokens_;  // key: registry + " " + scope
  std::map<std::string, std::unique_ptr<AsyncSemaphore>> limits_;
  RegistryStats stats_;
};

}  // namespace digestd::daemon
