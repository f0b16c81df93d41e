// Fuzz target: policy and trust files. Never crash; a loaded policy answers PreCheck.
#include <cstdint>
#include <string_view>

#include "verify/policy.h"
#include "verify/trust.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace v = digestd::verify;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  // Key files resolve under a directory that does not exist: loading stays pure.
  if (auto p = v::Policy::Parse(in, "fuzz.json", "/nonexistent")) {
    auto ref = v::Reference::Parse("reg.example.com/team/app:v1");
    if (ref) (void)p->PreCheck(*ref);
  }
  (void)v::TrustRoot::Parse(in, "fuzz.json", "/nonexistent");
  (void)v::ParseRfc3339(in);
  return 0;
}
