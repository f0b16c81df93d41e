// Fuzz target: image reference parsing. Invariants: never crash; anything accepted has a canonical
// form that parses back to the same reference.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "verify/reference.h"
#include "verify/scope.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto ref = digestd::verify::Reference::Parse(in);
  if (ref) {
    auto again = digestd::verify::Reference::Parse(ref->String());
    if (!again || !(*again == *ref)) std::abort();
    (void)digestd::verify::ScopeCandidates(*ref);
  }
  (void)digestd::verify::ValidateScope(in);
  return 0;
}
