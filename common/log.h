#pragma once

// One named spdlog logger per module ("store", "verify", ...). Loggers write to stderr until the
// daemon's main() configures sinks. Thread-safe.

#include <memory>
#include <string_view>

#include <spdlog/spdlog.h>

namespace digestd {

// Returns the logger for `module`, creating it on first use.
std::shared_ptr<spdlog::logger> Logger(std::string_view module);

}  // namespace digestd
