#pragma once

// Reads a whole (small) file, refusing anything over `max_bytes`: configuration, policy, trust
// and key files, and signature material are all read through this, so none can exhaust memory.

#include <cstddef>
#include <filesystem>
#include <string>

#include "common/error.h"

namespace digestd {

// kNotFound when unreadable, kTooLarge over the cap, kIo on a short read.
Result<std::string> ReadFileCapped(const std::filesystem::path& path, std::size_t max_bytes);

}  // namespace digestd
