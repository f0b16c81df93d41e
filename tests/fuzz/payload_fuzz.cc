// Fuzz target: signature payloads and envelopes (simple signing, containers signature files,
// DSSE, in-toto statements, sigstore bundles, base64).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "verify/base64.h"
#include "verify/cosign.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace v = digestd::verify;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)v::ParseSimpleSigningPayload(in);
  (void)v::ParseContainersSigstoreSignature(in);
  (void)v::ParseDsseEnvelope(in);
  (void)v::ParseInTotoStatement(in);
  (void)v::ParseSigstoreBundle(in);
  if (auto raw = v::Base64Decode(in)) {
    if (v::Base64Encode(*raw) != in) std::abort();  // strict: one encoding per byte string
  }
  return 0;
}
