#pragma once

// What a pull is asked for and what it gives back, without the pipeline (daemon/pull.h) and so
// without Asio: for callers outside daemon/ (daemon/offline_pull.h).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "verify/digest.h"
#include "verify/policy.h"
#include "verify/reference.h"

namespace digestd::daemon {

struct PullEvent {
  std::string type;  // "resolving", "resolved", "policy", "blob", "committed"
  std::string detail;
  std::string digest;
  std::uint64_t bytes = 0;
  std::uint64_t total = 0;
};

struct PullOptions {
  std::string tenant;       // recorded on blobs; empty = shared
  std::int64_t actor_uid = -1;
  std::function<void(const PullEvent&)> on_event;
};

struct PullResult {
  verify::Reference reference;
  verify::Digest manifest;        // what the reference resolved to (maybe an index)
  verify::Digest image_manifest;  // the platform's image manifest
  verify::Digest config;
  std::vector<verify::Digest> layers;
  verify::Decision decision;
  std::uint64_t bytes_fetched = 0;
  std::string tenant;  // the pull's tenant (PullOptions::tenant); empty for shared pulls
};

}  // namespace digestd::daemon
