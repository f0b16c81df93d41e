#pragma once

// One verified pull into a store, outside the daemon and blocking (bench/pull_once): the same
// pipeline as the daemon's (daemon/pull.h), on an io_context and blocking pool of its own.

#include <string_view>

#include "common/error.h"
#include "daemon/config.h"
#include "daemon/pull_types.h"
#include "store/store.h"
#include "verify/policy_set.h"

namespace digestd::daemon {

Result<PullResult> PullOffline(store::Store& store, verify::PolicySet& policies,
                               const Config& config, std::string_view reference,
                               PullOptions options);

}  // namespace digestd::daemon
