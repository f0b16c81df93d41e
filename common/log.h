#pragma once

// Logging, configured here and nowhere else: one spdlog logger per module (named as
// ToString(Module): "store", "daemon", ...), or per area of a module ("daemon.api",
// "daemon.pull"), each writing `<time> <level> <name>: <message>` to stderr (the journal under
// systemd). Thread-safe.

#include <memory>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/error.h"

namespace digestd {

// The logger of `module`, or of one `area` of it; created on first use.
std::shared_ptr<spdlog::logger> Logger(Module module, std::string_view area = {});

}  // namespace digestd
