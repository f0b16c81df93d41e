// The control API's route table: every endpoint, the least role that may call it, and its
// handler. docs/api.md's "Endpoints at a glance" table must list exactly these (a unit test
// compares them).

#include "daemon/api/api.h"

namespace digestd::daemon::api {

const std::vector<Route>& Routes() {
  static const std::vector<Route> routes = {
      {Method::kGet, "/v1/health", Role::kReader, &GetHealth},
      {Method::kGet, "/v1/metrics", Role::kReader, &GetMetrics},
      {Method::kPost, "/v1/pull", Role::kAdmin, &PostPull},
      {Method::kGet, "/v1/images", Role::kReader, &ListImages},
      {Method::kGet, "/v1/images/{digest}", Role::kReader, &InspectImage},
      {Method::kDelete, "/v1/images/{digest}", Role::kAdmin, &RemoveImage},
      {Method::kGet, "/v1/blobs", Role::kReader, &ListBlobs},
      {Method::kGet, "/v1/layers", Role::kReader, &ListLayers},
      {Method::kGet, "/v1/audit", Role::kReader, &ReadAudit},
      {Method::kGet, "/v1/deny", Role::kReader, &ListDenied},
      {Method::kPost, "/v1/deny", Role::kAdmin, &AddDeny},
      {Method::kDelete, "/v1/deny/{digest}", Role::kAdmin, &RemoveDeny},
      {Method::kPost, "/v1/gc", Role::kAdmin, &CollectGarbage},
      {Method::kPost, "/v1/scrub", Role::kAdmin, &Scrub},
      // Read-only in effect, but it names what the policy would do: readers may ask.
      {Method::kPost, "/v1/policy/eval", Role::kReader, &EvalPolicy},
      {Method::kPost, "/v1/policy/reload", Role::kAdmin, &ReloadPolicy},
      {Method::kGet, "/v1/leases", Role::kReader, &ListLeases},
      {Method::kPost, "/v1/leases", Role::kAdmin, &CreateLease},
      {Method::kDelete, "/v1/leases/{id}", Role::kAdmin, &ReleaseLease},
  };
  return routes;
}

namespace {

// Matches `path` against `pattern`; fills `params` with what the placeholders took.
bool Matches(std::string_view pattern, std::string_view path, std::vector<std::string>* params) {
  params->clear();
  while (!pattern.empty()) {
    const auto brace = pattern.find('{');
    if (brace == std::string_view::npos) return path == pattern;
    if (path.substr(0, brace) != pattern.substr(0, brace)) return false;
    path.remove_prefix(brace);
    const auto close = pattern.find('}', brace);
    pattern.remove_prefix(close + 1);
    if (pattern.empty()) {  // the last placeholder takes the rest
      params->emplace_back(path);
      return true;
    }
    const auto slash = path.find('/');
    if (slash == std::string_view::npos || slash == 0) return false;
    params->emplace_back(path.substr(0, slash));
    path.remove_prefix(slash);
  }
  return path.empty();
}

int Rank(Role r) {
  switch (r) {
    case Role::kNone: return 0;
    case Role::kReader: return 1;
    case Role::kAdmin: return 2;
  }
  return 0;
}

}  // namespace

RouteMatch FindRoute(Method method, std::string_view path) {
  RouteMatch m;
  std::vector<std::string> params;
  for (const auto& r : Routes()) {
    if (!Matches(r.pattern, path, &params)) continue;
    m.path_known = true;
    if (r.method == method) {
      m.route = &r;
      m.params = std::move(params);
      return m;
    }
  }
  return m;
}

asio::awaitable<Reply> Dispatch(Context& ctx, Request& req) {
  req.role = RoleFor(ctx.deps.config.daemon, req.peer);
  RouteMatch match = FindRoute(req.method, req.path);
  // Unknown endpoints are refused like known ones to peers who could not call them anyway (a
  // peer without a role learns nothing about what exists; a reader may not write anything).
  const bool read = req.method == Method::kGet || req.method == Method::kHead;
  const Role needed = match.route ? match.route->role : (read ? Role::kReader : Role::kAdmin);
  if (req.role == Role::kNone || Rank(req.role) < Rank(needed)) {
    ctx.forbidden.Add();
    store::AuditEvent event{.type = "api.forbidden"};
    event.details = {{"path", req.path}, {"method", req.method_text},
                     {"role", std::string(RoleName(req.role))}};
    ctx.Refusal(req.peer, std::move(event));
    co_return ErrorReply(Status::kForbidden, "uid " + std::to_string(req.peer.uid) + " (role " +
                                                 std::string(RoleName(req.role)) + ") may not " +
                                                 req.method_text + " " + req.path);
  }
  if (!match.route) {
    co_return ErrorReply(Status::kNotFound, "no endpoint " + req.method_text + " " + req.path);
  }
  req.params = std::move(match.params);
  co_return co_await match.route->handler(ctx, req);
}

}  // namespace digestd::daemon::api
