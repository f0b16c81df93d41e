#pragma once

// The control API's inside, for its handlers. Three layers, each in its own place:
//   - the transport (daemon/control_server.cc): Beast over the Unix socket, request limits,
//     malformed requests, keep-alive and chunked streaming; it hands a parsed Request to
//   - the route table (daemon/api/routes.cc): method, path pattern, required role, handler;
//     it refuses peers without the role (403 + audit) and unknown endpoints (404);
//   - one handler file per resource (daemon/api/<resource>.cc), which sees Requests and Replies
//     and never Beast.
// docs/api.md's endpoint table is checked against Routes() by tests/unit/daemon/api_test.cc.
//
// Thread safety: everything here runs on the io_context's thread; blocking work goes to
// deps.blocking through OffThread (daemon/blocking.h).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "common/metrics.h"
#include "daemon/control_server.h"
#include "store/audit_event.h"

namespace digestd::daemon::api {

namespace asio = boost::asio;
using nlohmann::json;

enum class Method { kGet, kHead, kPost, kPut, kDelete, kOther };
std::string_view MethodName(Method m);

// The statuses the API answers with (docs/api.md, "Limits and errors").
enum class Status : unsigned {
  kOk = 200,
  kBadRequest = 400,
  kForbidden = 403,
  kNotFound = 404,
  kRequestTimeout = 408,
  kConflict = 409,
  kPayloadTooLarge = 413,
  kHeaderFieldsTooLarge = 431,
  kInternal = 500,
  kNotImplemented = 501,
  kBadGateway = 502,
};

struct Request {
  Peer peer;
  Role role = Role::kNone;
  Method method = Method::kOther;
  std::string method_text;  // as sent
  std::string path;         // the target up to '?'
  std::string query;        // after '?'
  std::string body;
  std::string accept;               // the Accept header
  std::vector<std::string> params;  // what the route's {placeholders} matched, in order
};

// Writes one chunk of a streamed reply; false once the client is gone.
class ChunkWriter {
 public:
  virtual ~ChunkWriter() = default;
  virtual asio::awaitable<bool> Write(std::string chunk) = 0;
};

// A reply produced while it is sent (NDJSON progress of a pull): the transport sends the head,
// then what Produce writes, in chunks, then closes the connection.
class StreamBody {
 public:
  virtual ~StreamBody() = default;
  virtual asio::awaitable<void> Produce(ChunkWriter& out) = 0;
};

struct Reply {
  Status status = Status::kOk;
  std::string body;
  std::string content_type = "application/json";
  std::shared_ptr<StreamBody> stream;  // set: body is ignored
};

// JSON text that never throws (invalid UTF-8 from a request is replaced): Auditor::Dump.
std::string Dump(const json& j);
Reply JsonReply(Status status, const json& j);
Reply ErrorReply(Status status, std::string_view message);
// {"error": ..., "code": ...} with the status the error's code maps to.
Reply FromError(const Error& e);
Status StatusFor(const Error& e);

// "a=1&b=2" -> value of `key`, or "".
std::string QueryValue(std::string_view query, std::string_view key);
// A request body that must be a JSON object (an empty body is {}).
Result<json> BodyObject(const std::string& body);
// A string field: absent -> "" (or an error when required); not a string or over `max` -> error.
Result<std::string> StringField(const json& j, const char* name, bool required, std::size_t max);

// What every handler shares: the daemon's parts, the API's counters, and the audit helpers.
class Context : public std::enable_shared_from_this<Context> {
 public:
  Context(asio::io_context& i, ControlDeps d) : io(i), deps(std::move(d)) {}

  asio::io_context& io;
  ControlDeps deps;
  std::shared_ptr<spdlog::logger> log = Logger(Module::kDaemon, "api");
  bool stopping = false;

  metrics::Counter requests;
  metrics::Counter forbidden;
  metrics::Counter bad_requests;
  metrics::Counter pulls_ok;
  metrics::Counter pulls_failed;
  metrics::Counter pull_bytes;
  metrics::Counter gc_runs;
  metrics::Counter gc_bytes_freed;
  void CountPullFailure(const Error& e);

  // An event `request`'s peer caused (its uid is the actor, its pid recorded).
  void Audit(const Request& request, store::AuditEvent event);
  // A refusal of that peer: recorded within its per-minute budget, counted beyond it.
  void Refusal(const Peer& peer, store::AuditEvent event);

  // The API's own metrics (requests, refusals, pulls, gc).
  void RegisterMetrics(metrics::Registry& registry);

 private:
  std::mutex mu_;
  std::map<std::string, std::uint64_t> pull_failures_;  // by error code
};

using Handler = asio::awaitable<Reply> (*)(Context&, const Request&);

struct Route {
  Method method;
  // Literal segments and {name} placeholders; a placeholder at the end takes the rest of the
  // path (the handler validates it: a digest, a lease id).
  std::string_view pattern;
  Role role;  // the least role that may call it
  Handler handler;
};

// Every endpoint, in the order docs/api.md lists them.
const std::vector<Route>& Routes();

// The route for `method` and `path` (nullptr if none) and what its placeholders matched;
// `path_known` says whether any route has that path (with another method).
struct RouteMatch {
  const Route* route = nullptr;
  std::vector<std::string> params;
  bool path_known = false;
};
RouteMatch FindRoute(Method method, std::string_view path);

// Where an image's tree and its overlay lowerdir list are under the mount ("rootfs",
// "lowerdir_file").
void AddImagePaths(const Context& ctx, const verify::Digest& image, json& out);

// Role check, audit of refusals, then the handler.
asio::awaitable<Reply> Dispatch(Context& ctx, Request& request);

// The handlers, one file per resource.
asio::awaitable<Reply> GetHealth(Context& ctx, const Request& req);         // health.cc
asio::awaitable<Reply> GetMetrics(Context& ctx, const Request& req);        // metrics.cc
asio::awaitable<Reply> ListImages(Context& ctx, const Request& req);        // images.cc
asio::awaitable<Reply> InspectImage(Context& ctx, const Request& req);      // images.cc
asio::awaitable<Reply> RemoveImage(Context& ctx, const Request& req);       // images.cc
asio::awaitable<Reply> ListBlobs(Context& ctx, const Request& req);         // images.cc
asio::awaitable<Reply> ListLayers(Context& ctx, const Request& req);        // images.cc
asio::awaitable<Reply> PostPull(Context& ctx, const Request& req);          // pulls.cc
asio::awaitable<Reply> EvalPolicy(Context& ctx, const Request& req);        // policy.cc
asio::awaitable<Reply> ReloadPolicy(Context& ctx, const Request& req);      // policy.cc
asio::awaitable<Reply> ReadAudit(Context& ctx, const Request& req);         // audit.cc
asio::awaitable<Reply> ListDenied(Context& ctx, const Request& req);        // deny.cc
asio::awaitable<Reply> AddDeny(Context& ctx, const Request& req);           // deny.cc
asio::awaitable<Reply> RemoveDeny(Context& ctx, const Request& req);        // deny.cc
asio::awaitable<Reply> CollectGarbage(Context& ctx, const Request& req);    // gc.cc
asio::awaitable<Reply> Scrub(Context& ctx, const Request& req);             // gc.cc
asio::awaitable<Reply> ListLeases(Context& ctx, const Request& req);        // leases.cc
asio::awaitable<Reply> CreateLease(Context& ctx, const Request& req);       // leases.cc
asio::awaitable<Reply> ReleaseLease(Context& ctx, const Request& req);      // leases.cc

// Audit retention: at start and then every minute, off the io thread, until ctx.stopping
// (audit.cc).
asio::awaitable<void> RetainAudit(std::shared_ptr<Context> ctx);

}  // namespace digestd::daemon::api
