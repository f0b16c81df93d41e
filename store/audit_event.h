#pragma once

// The audit log's one event schema. Every event digestd records, whoever records it (the
// daemon's Auditor for API requests, pulls and re-evaluation; the store for recovery, scrub,
// quota and wipes; the mount for damaged content), is an AuditEvent, serialised here and nowhere
// else:
//
//   {"type": "deny.added", "time": 1796590895, "actor": 0, "pid": 4242,
//    "reference": "...", "digest": "sha256:...", "tenant": "...", "reason": "...",
//    ...details}
//
// `type`, `time` and `actor` are always present; `actor` is the peer's uid (a number) for what a
// client asked, or the name of the part of digestd that acted on its own ("digestd", "store",
// "mount"). `pid`, `reference`, `digest`, `tenant` and `reason` appear when set. `details` holds
// what only that type carries (counts, lists); it never replaces a typed field. docs/api.md
// lists the types.

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace digestd::store {

struct AuditEvent {
  std::string type;
  std::int64_t time = 0;                  // unix seconds; 0: the writer's clock sets it
  std::optional<std::int64_t> actor_uid;  // a client's uid
  std::string component = "digestd";      // who acted when no client did
  std::optional<std::int64_t> pid;        // the client's pid
  std::string reference;
  std::string digest;
  std::string tenant;
  std::string reason;
  nlohmann::json details = nlohmann::json::object();

  // The event as one JSON object (never throws: invalid UTF-8 is replaced by U+FFFD).
  std::string ToJson() const;
};

}  // namespace digestd::store
