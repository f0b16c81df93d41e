#pragma once

// What digestctl prints for people (without --json): times in ISO 8601 UTC, digests shortened
// where a table needs room, the audit log as a table, a policy decision or refusal in one line
// that names the rule and its scope once. --json prints the API's objects unchanged; nothing
// here is used for it.

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace digestd::tools {

// Text from the audit log, a decision or an error can carry bytes a registry or a client chose:
// control characters (terminal escapes, newlines) become '?' before they reach a terminal.
std::string Printable(std::string s);

// Unix seconds as "2026-12-07T23:01:02Z" (UTC); "-" for 0 or less.
std::string IsoUtc(std::int64_t unix_seconds);
// "sha256:0123456789ab" (algorithm and 12 hex digits); other text is returned unchanged.
std::string ShortDigest(std::string_view digest);

// The audit log's NDJSON (GET /v1/audit) as a table: SEQ, TIME (UTC), TYPE, ACTOR, DIGEST,
// and what happened ("<reference>: <reason>", or whichever of the two the event has). Lines that
// are not JSON objects are shown as they are.
std::string AuditTable(std::string_view ndjson);

// A decision object ({"allowed","scope","requirement"/"rule","signer","reason"}) in one line:
// "allowed by rule sigstoreSigned (scope docker:reg/app), signed by team-key" or
// "denied by rule reject (scope default): <reason>".
std::string DecisionLine(const nlohmann::json& decision);

// A pull the policy refused, for stderr: the decision's line and the next step.
std::string RefusalText(std::string_view reference, const nlohmann::json& decision);

}  // namespace digestd::tools
