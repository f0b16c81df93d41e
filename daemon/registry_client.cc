#include "daemon/registry_client.h"
#include "daemon/errors.h"

#include <algorithm>
#include <boost/asio/random_access_file.hpp>
#include <boost/asio/read_at.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/write_at.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "common/log.h"
#include "verify/base64.h"
#include "verify/hasher.h"
#include "verify/oci.h"

namespace digestd::daemon {
namespace {

using verify::Digest;
using verify::Reference;

std::string UrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

// Parses `Bearer realm="...",service="...",scope="..."` (or Basic ...). Lower-cases the scheme.
std::pair<std::string, std::map<std::string, std::string>> ParseChallenge(std::string_view h) {
  std::map<std::string, std::string> params;
  const auto sp = h.find(' ');
  std::string scheme(h.substr(0, sp));
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view rest = sp == std::string_view::npos ? "" : h.substr(sp + 1);
  while (!rest.empty()) {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == ',')) rest.remove_prefix(1);
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos) break;
    std::string key(rest.substr(0, eq));
    for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    rest.remove_prefix(eq + 1);
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      rest.remove_prefix(1);
      while (!rest.empty() && rest.front() != '"') {
        if (rest.front() == '\\' && rest.size() > 1) rest.remove_prefix(1);
        value.push_back(rest.front());
        rest.remove_prefix(1);
      }
      if (!rest.empty()) rest.remove_prefix(1);
    } else {
      const auto comma = rest.find(',');
      value = std::string(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? "" : rest.substr(comma);
    }
    params[key] = value;
  }
  return {scheme, params};
}

std::optional<std::chrono::milliseconds> RetryAfter(const HttpResponse& r) {
  auto h = r.Header("retry-after");
  if (!h || h->empty() || h->size() > 6 || h->find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(std::min(60, std::stoi(*h)) * 1000);
}

bool IsRedirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace

asio::awaitable<void> AsyncSemaphore::Acquire() {
  if (available_ > 0) {
    --available_;
    co_return;
  }
  auto timer = std::make_shared<asio::steady_timer>(io_, asio::steady_timer::time_point::max());
  waiters_.push_back(timer);
  boost::system::error_code ec;
  co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
  // Woken by Release(), which handed its permit over.
}

void AsyncSemaphore::Release() {
  if (!waiters_.empty()) {
    auto t = waiters_.front();
    waiters_.pop_front();
    t->cancel();
    return;
  }
  ++available_;
}

RegistryClient::RegistryClient(asio::io_context& io, const Config& config)
    : io_(io),
      config_(config),
      http_(io, HttpOptions{.connect_timeout = config.connect_timeout,
                            .first_byte_timeout = config.first_byte_timeout,
                            .stall_timeout = config.stall_timeout,
                            .body_deadline_min = config.blob_deadline_min,
                            .min_rate_bytes_per_s = config.min_rate_bytes_per_s}),
      log_(Logger(Module::kDaemon, "registry")) {}

RegistryClient::~RegistryClient() = default;

std::vector<RegistryClient::Endpoint> RegistryClient::EndpointsFor(const std::string& registry,
                                                                   bool by_digest) const {
  std::vector<Endpoint> out;
  const RegistryConfig* rc = config_.FindRegistry(registry);
  auto make = [&](const std::string& host, bool insecure, const std::string& ca) {
    auto url = Url::Parse(std::string(insecure ? "http://" : "https://") + host + "/");
    Endpoint ep{.base = url ? *url : Url{}, .ca_file = ca, .registry = registry};
    return ep;
  };
  if (rc) {
    for (const auto& m : rc->mirrors) {
      if (!by_digest && !m.resolve_tags) continue;
      Endpoint ep = make(m.host, m.insecure, m.ca_file);
      ep.is_mirror = true;
      ep.resolve_tags = m.resolve_tags;
      out.push_back(std::move(ep));
    }
  }
  const std::string origin = registry == verify::kDockerHub ? "registry-1.docker.io" : registry;
  out.push_back(make(origin, rc && rc->insecure, rc ? rc->ca_file : ""));
  return out;
}

AsyncSemaphore& RegistryClient::LimitFor(const std::string& registry) {
  auto& slot = limits_[registry];
  if (!slot) {
    const RegistryConfig* rc = config_.FindRegistry(registry);
    slot = std::make_unique<AsyncSemaphore>(io_, rc ? rc->max_concurrency : 4);
  }
  return *slot;
}

std::optional<std::string> RegistryClient::BasicCredentials(const std::string& registry) const {
  const RegistryConfig* rc = config_.FindRegistry(registry);
  const std::string file = rc && !rc->auth_file.empty() ? rc->auth_file : config_.auth_file;
  if (file.empty()) return std::nullopt;
  auto text = ReadFileCapped(file, 1u << 20);
  if (!text) {
    log_->warn("auth file unreadable: {}", text.error().ToString());
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto auths = j.find("auths");
  if (auths == j.end() || !auths->is_object()) return std::nullopt;
  for (const std::string& key : {registry, "https://" + registry, "http://" + registry}) {
    auto e = auths->find(key);
    if (e == auths->end() || !e->is_object()) continue;
    auto a = e->find("auth");
    if (a != e->end() && a->is_string()) return a->get<std::string>();  // base64 user:pass
  }
  return std::nullopt;
}

asio::awaitable<Result<std::string>> RegistryClient::Authorize(const Endpoint& ep,
                                                               const std::string& repository,
                                                               const std::string& challenge) {
  auto [scheme, params] = ParseChallenge(challenge);
  const auto basic = BasicCredentials(ep.registry);
  if (scheme == "basic") {
    if (!basic) {
      co_return DaemonError(Errc::kPermission, "registry " + ep.base.Authority() +
                                                " wants Basic credentials and none are configured");
    }
    co_return "Basic " + *basic;
  }
  if (scheme != "bearer") {
    co_return DaemonError(Errc::kUnsupported, "unsupported auth challenge " + Quote(challenge));
  }
  const std::string scope =
      params.count("scope") ? params["scope"] : "repository:" + repository + ":pull";
  const std::string key = ep.registry + " " + scope;
  if (auto it = tokens_.find(key);
      it != tokens_.end() && it->second.expires > std::chrono::steady_clock::now()) {
    co_return "Bearer " + it->second.value;
  }
  auto realm = Url::Parse(params["realm"]);
  if (!realm) co_return realm.error();
  if (!realm->tls && ep.base.tls) {
    co_return DaemonError(Errc::kPermission, "token realm " + Quote(params["realm"]) +
                                              " is plain HTTP for a TLS registry; refusing");
  }
  realm->target += (realm->target.find('?') == std::string::npos ? "?" : "&");
  if (params.count("service")) realm->target += "service=" + UrlEncode(params["service"]) + "&";
  realm->target += "scope=" + UrlEncode(scope);
  Headers h;
  if (basic) h.emplace_back("Authorization", "Basic " + *basic);
  ++stats_.requests;
  auto r = co_await http_.Fetch(*realm, "GET", h, 1u << 20, ep.ca_file);
  if (!r) co_return std::move(r).error().Wrap("token from " + realm->Origin());
  if (r->status != 200) {
    co_return DaemonError(Errc::kPermission, "token server " + realm->Origin() + " answered " +
                                              std::to_string(r->status));
  }
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  std::string token;
  if (!j.is_discarded() && j.is_object()) {
    for (const char* f : {"token", "access_token"}) {
      if (auto t = j.find(f); t != j.end() && t->is_string() && !t->get<std::string>().empty()) {
        token = t->get<std::string>();
        break;
      }
    }
  }
  if (token.empty() || token.size() > 16384) {
    co_return DaemonError(Errc::kPermission, "token server " + realm->Origin() + " sent no token");
  }
  int expires = 60;
  if (auto e = j.find("expires_in"); e != j.end() && e->is_number_integer()) {
    expires = std::clamp(e->get<int>(), 10, 3600);
  }
  // Refresh a little early so a token never expires mid-request.
  tokens_[key] = Token{token, std::chrono::steady_clock::now() + std::chrono::seconds(expires - 5)};
  co_return "Bearer " + token;
}

asio::awaitable<Result<HttpResponse>> RegistryClient::Send(const Endpoint& ep,
                                                           const std::string& repository,
                                                           Request req) {
  AsyncSemaphore& limit = LimitFor(ep.registry);
  co_await limit.Acquire();
  struct Permit {
    AsyncSemaphore& s;
    ~Permit() { s.Release(); }
  } permit{limit};

  Url url = ep.base;
  url.target = req.target;
  bool same_origin = true;
  bool auth_tried = false;
  int redirects = 0;
  std::optional<std::string> auth;
  const std::string scope =
      "repository:" + repository + (req.method == "GET" || req.method == "HEAD" ? ":pull" : ":pull,push");
  if (auto it = tokens_.find(ep.registry + " " + scope);
      it != tokens_.end() && it->second.expires > std::chrono::steady_clock::now()) {
    auth = "Bearer " + it->second.value;
  }
  for (int attempt = 0;;) {
    Headers h = req.headers;
    // Credentials go only to the registry itself, never to a redirect target on another host.
    if (auth && same_origin) h.emplace_back("Authorization", *auth);
    ++stats_.requests;
    // No co_await inside ?: — GCC 12 destroys the result twice there (a coroutine codegen bug).
    Result<HttpResponse> r = DaemonError(Errc::kInternal, "unset");
    if (req.sink) {
      r = co_await http_.Stream(url, h, *req.sink, ep.ca_file, req.on_head);
    } else {
      r = co_await http_.Fetch(url, req.method, h, req.max_body, ep.ca_file, req.body);
    }
    if (!r) {
      // Network errors are retried here only without a sink; streamed bodies resume above us.
      if (r.error().code() == Errc::kIo && req.sink == nullptr && attempt < config_.retries) {
        ++stats_.retries;
        co_await Sleep(io_, std::chrono::milliseconds(100 << std::min(attempt, 6)));
        ++attempt;
        continue;
      }
      co_return r;
    }
    if (r->status == 401 && !auth_tried && same_origin) {
      auth_tried = true;
      auto challenge = r->Header("www-authenticate");
      if (!challenge) {
        co_return DaemonError(Errc::kPermission, url.Origin() + " answered 401 without a challenge");
      }
      auto a = co_await Authorize(ep, repository, *challenge);
      if (!a) co_return a.error();
      auth = *a;
      continue;
    }
    if (IsRedirect(r->status) && (req.method == "GET")) {
      auto loc = r->Header("location");
      if (!loc) co_return DaemonError(Errc::kIo, url.Origin() + " redirected without a Location");
      if (++redirects > 5) {
        co_return DaemonError(Errc::kIo, "too many redirects (> 5) fetching " + req.target +
                                          " from " + ep.base.Authority());
      }
      Result<Url> next = loc->starts_with("/") ? Url::Parse(url.Origin() + *loc) : Url::Parse(*loc);
      if (!next) co_return next.error();
      if (!next->tls && url.tls) {
        co_return DaemonError(Errc::kPermission, "refusing a redirect from HTTPS to plain HTTP (" +
                                                  Quote(*loc) + ")");
      }
      same_origin = same_origin && next->Origin() == ep.base.Origin();
      url = *next;
      ++stats_.redirects;
      continue;
    }
    if ((r->status == 429 || r->status >= 500) && attempt < config_.retries) {
      ++stats_.retries;
      auto delay = RetryAfter(*r).value_or(std::chrono::milliseconds(100 << std::min(attempt, 6)));
      log_->info("retry status={} target={} delay_ms={}", r->status, req.target, delay.count());
      co_await Sleep(io_, delay);
      ++attempt;
      continue;
    }
    co_return r;
  }
}

asio::awaitable<Result<FetchedManifest>> RegistryClient::GetManifest(const Reference& repo,
                                                                     std::string_view tag_or_digest) {
  auto expect = Digest::Parse(tag_or_digest);
  const bool by_digest = expect.has_value();
  Error last = DaemonError(Errc::kNotFound, "manifest " + std::string(tag_or_digest) + " of " +
                                             repo.Name() + " not found");
  for (const auto& ep : EndpointsFor(repo.registry(), by_digest)) {
    Request req{.target = "/v2/" + repo.repository() + "/manifests/" + std::string(tag_or_digest),
                .headers = {{"Accept", std::string(verify::media::kManifestAccept)}},
                .max_body = config_.manifest_max_bytes};
    auto r = co_await Send(ep, repo.repository(), std::move(req));
    auto fail = [&](Error e) {
      if (ep.is_mirror) {
        ++stats_.mirror_failures;
        log_->warn("mirror failed host={} manifest={} err={}", ep.base.Authority(),
                   std::string(tag_or_digest), e.ToString());
      }
      last = std::move(e);
    };
    if (!r) {
      fail(r.error());
      if (!ep.is_mirror) co_return last;
      continue;
    }
    if (r->status != 200) {
      fail(DaemonError(r->status == 404 ? Errc::kNotFound : Errc::kIo,
                    ep.base.Authority() + " answered " + std::to_string(r->status) +
                        " for manifest " + std::string(tag_or_digest) + " of " + repo.Name()));
      if (!ep.is_mirror) co_return last;
      continue;
    }
    const auto alg = by_digest ? expect->algorithm() : verify::DigestAlgorithm::kSha256;
    const Digest computed = verify::Hasher::Of(alg, r->body);
    FetchedManifest m{.bytes = std::move(r->body),
                      .media_type = r->Header("content-type").value_or(""),
                      .digest = computed,
                      .source = ep.base.Authority()};
    // Strip parameters ("; charset=utf-8") from the media type.
    if (auto semi = m.media_type.find(';'); semi != std::string::npos) m.media_type.resize(semi);
    if (by_digest && m.digest != *expect) {
      fail(DaemonError(Errc::kDigestMismatch, ep.base.Authority() + " served manifest bytes hashing to " +
                                               m.digest.ToString() + " for " + expect->ToString()));
      if (!ep.is_mirror) co_return last;
      continue;
    }
    if (auto dcd = r->Header("docker-content-digest")) {
      auto claimed = Digest::Parse(*dcd);
      if (claimed && claimed->algorithm() == m.digest.algorithm() && *claimed != m.digest) {
        fail(DaemonError(Errc::kDigestMismatch,
                      ep.base.Authority() + " claims Docker-Content-Digest " + claimed->ToString() +
                          " but the manifest bytes hash to " + m.digest.ToString()));
        if (!ep.is_mirror) co_return last;
        continue;
      }
    }
    co_return m;
  }
  co_return last;
}

asio::awaitable<Result<std::optional<std::string>>> RegistryClient::GetReferrers(
    const Reference& repo, const Digest& digest) {
  const auto eps = EndpointsFor(repo.registry(), false);
  const Endpoint& origin = eps.back();
  Request req{.target = "/v2/" + repo.repository() + "/referrers/" + digest.ToString(),
              .headers = {{"Accept", std::string(verify::media::kOciIndex)}},
              .max_body = config_.manifest_max_bytes};
  auto r = co_await Send(origin, repo.repository(), std::move(req));
  if (r && r->status == 200) co_return std::optional<std::string>(std::move(r->body));
  const std::string tag = "sha256-" + std::string(digest.hex());
  auto fallback = co_await GetManifest(repo, tag);
  if (!fallback) {
    if (fallback.error().code() == Errc::kNotFound) co_return std::optional<std::string>();
    co_return fallback.error();
  }
  co_return std::optional<std::string>(std::move(fallback->bytes));
}

asio::awaitable<Result<void>> RegistryClient::PushBlob(const Reference& repo, std::string bytes) {
  const Endpoint origin = EndpointsFor(repo.registry(), false).back();
  const Digest digest = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, bytes);
  Request head{.method = "HEAD", .target = "/v2/" + repo.repository() + "/blobs/" + digest.ToString()};
  auto exists = co_await Send(origin, repo.repository(), std::move(head));
  if (exists && exists->status == 200) co_return Result<void>();
  Request start{.method = "POST", .target = "/v2/" + repo.repository() + "/blobs/uploads/",
                .max_body = 64u << 10};
  auto r = co_await Send(origin, repo.repository(), std::move(start));
  if (!r) co_return r.error();
  if (r->status != 202) {
    co_return DaemonError(Errc::kIo, "starting a blob upload to " + repo.Name() + " answered " +
                                      std::to_string(r->status));
  }
  auto loc = r->Header("location");
  if (!loc) co_return DaemonError(Errc::kIo, "blob upload without a Location");
  // The upload URL must stay on the registry we are talking to.
  std::string target = *loc;
  if (!target.starts_with("/")) {
    auto u = Url::Parse(target);
    if (!u || u->Origin() != origin.base.Origin()) {
      co_return DaemonError(Errc::kPermission, "blob upload redirected off the registry: " + Quote(*loc));
    }
    target = u->target;
  }
  target += (target.find('?') == std::string::npos ? "?" : "&");
  target += "digest=" + UrlEncode(digest.ToString());
  Request put{.method = "PUT", .target = target,
              .headers = {{"Content-Type", "application/octet-stream"}},
              .max_body = 64u << 10,
              .body = std::move(bytes)};
  auto done = co_await Send(origin, repo.repository(), std::move(put));
  if (!done) co_return done.error();
  if (done->status != 201) {
    co_return DaemonError(Errc::kIo, "blob upload of " + digest.ToString() + " answered " +
                                      std::to_string(done->status));
  }
  co_return Result<void>();
}

asio::awaitable<Result<verify::Digest>> RegistryClient::PutManifest(const Reference& repo,
                                                                    std::string tag_or_digest,
                                                                    std::string bytes,
                                                                    std::string media_type) {
  const Endpoint origin = EndpointsFor(repo.registry(), false).back();
  const Digest digest = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, bytes);
  Request put{.method = "PUT",
              .target = "/v2/" + repo.repository() + "/manifests/" + tag_or_digest,
              .headers = {{"Content-Type", media_type}},
              .max_body = 64u << 10,
              .body = std::move(bytes)};
  auto r = co_await Send(origin, repo.repository(), std::move(put));
  if (!r) co_return r.error();
  if (r->status != 201 && r->status != 200) {
    co_return DaemonError(Errc::kIo, "pushing manifest " + tag_or_digest + " to " + repo.Name() +
                                      " answered " + std::to_string(r->status) + ": " +
                                      r->body.substr(0, 200));
  }
  co_return digest;
}

asio::awaitable<Result<std::string>> RegistryClient::GetSmallBlob(const Reference& repo,
                                                                  const Digest& digest,
                                                                  std::uint64_t size,
                                                                  std::size_t cap) {
  if (size > cap) {
    co_return DaemonError(Errc::kTooLarge, "blob " + digest.ToString() + " of " +
                                            std::to_string(size) + " bytes is over the cap of " +
                                            std::to_string(cap));
  }
  Error last = DaemonError(Errc::kNotFound, "blob " + digest.ToString() + " not found");
  for (const auto& ep : EndpointsFor(repo.registry(), true)) {
    Request req{.target = "/v2/" + repo.repository() + "/blobs/" + digest.ToString(),
                .max_body = static_cast<std::size_t>(size)};
    auto r = co_await Send(ep, repo.repository(), std::move(req));
    Error e = DaemonError(Errc::kIo, "");
    if (!r) {
      e = r.error();
    } else if (r->status != 200) {
      e = DaemonError(r->status == 404 ? Errc::kNotFound : Errc::kIo,
                   ep.base.Authority() + " answered " + std::to_string(r->status) + " for blob " +
                       digest.ToString());
    } else if (r->body.size() != size ||
               verify::Hasher::Of(digest.algorithm(), r->body) != digest) {
      e = DaemonError(Errc::kDigestMismatch, ep.base.Authority() + " served wrong bytes for " +
                                              digest.ToString());
    } else {
      co_return std::move(r->body);
    }
    if (ep.is_mirror) {
      ++stats_.mirror_failures;
      log_->warn("mirror failed host={} blob={} err={}", ep.base.Authority(), digest.ToString(),
                 e.ToString());
    }
    last = std::move(e);
  }
  co_return last;
}

asio::awaitable<Result<void>> RegistryClient::FetchBlob(const Reference& repo,
                                                        const Digest& digest, std::uint64_t size,
                                                        BlobSink& blob, const ProgressFn& progress) {
  Error last = DaemonError(Errc::kNotFound, "blob " + digest.ToString() + " not found");
  for (const auto& ep : EndpointsFor(repo.registry(), true)) {
    auto open = co_await blob.Open();
    if (!open) co_return open.error();
    if (!*open) co_return Result<void>();  // nothing to fetch: stored or held already
    std::uint64_t received = 0;  // bytes written to the store for this blob
    std::uint64_t skip = 0;      // bytes of a restarted body that we already have
    BodySink sink = [&](std::span<const std::byte> data) -> asio::awaitable<Result<void>> {
      if (skip > 0) {
        const auto n = std::min<std::uint64_t>(skip, data.size());
        data = data.subspan(static_cast<std::size_t>(n));
        skip -= n;
      }
      if (data.empty()) co_return Result<void>();
      if (data.size() > size - received) {
        co_return DaemonError(Errc::kTooLarge, "blob " + digest.ToString() +
                                                " exceeds its expected size of " +
                                                std::to_string(size) + " bytes");
      }
      auto w = co_await blob.Write(received, data);
      if (!w) co_return w.error();
      received += data.size();
      stats_.bytes += data.size();
      if (progress) progress(digest, received);
      co_return Result<void>();
    };
    std::uint64_t range_from = 0;
    HeadFn on_head = [&](const HttpResponse& head) -> Result<void> {
      std::optional<std::uint64_t> length;
      if (auto cl = head.Header("content-length")) {
        if (cl->empty() || cl->size() > 19 || cl->find_first_not_of("0123456789") != std::string::npos) {
          return DaemonError(Errc::kIo, "bad Content-Length " + Quote(*cl));
        }
        length = std::stoull(*cl);
      }
      if (head.status == 206) {
        // Content-Range: bytes <first>-<last>/<total>
        auto cr = head.Header("content-range").value_or("");
        std::uint64_t first = 0;
        if (std::sscanf(cr.c_str(), "bytes %lu-", &first) != 1 || first != range_from) {
          return DaemonError(Errc::kIo, "resume of " + digest.ToString() + " got Content-Range " +
                                         Quote(cr) + ", wanted bytes from " +
                                         std::to_string(range_from));
        }
        skip = 0;
        if (length && *length != size - range_from) {
          return DaemonError(Errc::kSizeMismatch, "Content-Length " + std::to_string(*length) +
                                                   " does not fit the rest of " +
                                                   digest.ToString());
        }
      } else {
        // A full body: drop what we already have (the running hash must not see it twice).
        skip = range_from;
        if (length && *length != size) {
          return DaemonError(Errc::kSizeMismatch, "Content-Length " + std::to_string(*length) +
                                                   " is not the descriptor size " +
                                                   std::to_string(size) + " of " +
                                                   digest.ToString());
        }
      }
      return {};
    };
    std::optional<Error> failure;
    for (int resume = 0;;) {
      range_from = received;
      Request req{.target = "/v2/" + repo.repository() + "/blobs/" + digest.ToString(),
                  .sink = &sink,
                  .on_head = &on_head};
      if (received > 0) req.headers.emplace_back("Range", "bytes=" + std::to_string(received) + "-");
      auto r = co_await Send(ep, repo.repository(), std::move(req));
      if (r && (r->status == 200 || r->status == 206)) {
        if (received == size) break;
        failure = DaemonError(Errc::kSizeMismatch, ep.base.Authority() + " ended " +
                                                    digest.ToString() + " after " +
                                                    std::to_string(received) + " of " +
                                                    std::to_string(size) + " bytes");
      } else if (r) {
        failure = DaemonError(r->status == 404 ? Errc::kNotFound : Errc::kIo,
                           ep.base.Authority() + " answered " + std::to_string(r->status) +
                               " for blob " + digest.ToString());
        break;
      } else {
        failure = r.error();
        // Only a lost connection is worth resuming; size and digest errors are final.
        if (r.error().code() != Errc::kIo) break;
      }
      if (resume++ >= config_.retries) break;
      ++stats_.resumes;
      log_->info("resume blob={} from={} err={}", digest.Short(), received,
                 failure->ToString());
      co_await Sleep(io_, std::chrono::milliseconds(100 << std::min(resume, 6)));
      failure.reset();
    }
    if (!failure) {
      auto done = co_await blob.Finish();
      if (done) co_return Result<void>();
      failure = done.error();
    } else {
      blob.Abandon();
    }
    if (ep.is_mirror) {
      ++stats_.mirror_failures;
      log_->warn("mirror failed host={} blob={} err={}", ep.base.Authority(), digest.ToString(),
                 failure->ToString());
    }
    last = *failure;
    if (!ep.is_mirror) break;
  }
  co_return last;
}

}  // namespace digestd::daemon
