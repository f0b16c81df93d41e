#pragma once

// Name rules of the systems digestd talks to, for the places that validate them (config loading,
// the snapshotter).

#include <string_view>

namespace digestd {

// containerd's namespace rule: alphanumeric words joined by '.', '_' or '-', at most 76 bytes.
bool ValidContainerdNamespace(std::string_view ns);

}  // namespace digestd
