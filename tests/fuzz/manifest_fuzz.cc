// Fuzz target: OCI/Docker manifests, indexes and configs. Never crash, never accept a negative or
// over-limit size.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "verify/oci.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace v = digestd::verify;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto m = v::ParseImageManifest(in, "")) {
    if (m->config.size < 0) std::abort();
    for (const auto& l : m->layers) {
      if (l.size < 0 || l.size > v::kDefaultMaxBlobSize) std::abort();
    }
  }
  if (auto i = v::ParseImageIndex(in, "")) {
    (void)v::SelectPlatform(*i, v::HostPlatform());
  }
  (void)v::ParseImageConfig(in);
  return 0;
}
