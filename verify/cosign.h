#pragma once

// The signature formats cosign and containers/image write, parsed strictly. No verification
// policy here (see policy.h); these turn hostile bytes into checked values.
//
//  - Simple signing payload (cosign "container image signature"): the exact bytes are what is
//    signed; never re-serialise them.
//  - A cosign signature manifest's layers: payload blob + base64 signature annotation.
//  - containers/image "sigstore" signature files (dir: transport): 0x00 "sigstore-json\n" JSON.
//  - DSSE envelopes and their PAE, in-toto statements.
//  - Sigstore bundles (v0.1 .. v0.3) as far as key-based verification needs them.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/digest.h"

namespace digestd::verify {

inline constexpr std::string_view kCosignSignatureType = "cosign container image signature";
inline constexpr std::string_view kCosignSignatureAnnotation = "dev.cosignproject.cosign/signature";
inline constexpr std::string_view kInTotoPayloadType = "application/vnd.in-toto+json";
inline constexpr std::string_view kCosignSignPredicate = "https://sigstore.dev/cosign/sign/v1";
inline constexpr std::size_t kMaxSignaturePayload = 64u << 10;
inline constexpr std::size_t kMaxBundle = 1u << 20;

struct SimpleSigningPayload {
  std::string docker_reference;  // critical.identity.docker-reference
  Digest manifest_digest;        // critical.image.docker-manifest-digest
  std::optional<std::string> creator;
  std::optional<std::int64_t> timestamp;
};

// Strict: critical must hold exactly identity, image and type; unknown members of each are
// refused; type must be "cosign container image signature"; optional may be null or an object.
Result<SimpleSigningPayload> ParseSimpleSigningPayload(std::string_view payload);

// One signature as stored in a registry: the layer's media type, its exact blob bytes (the
// payload) and its annotations.
struct SimpleSignature {
  std::string media_type;
  std::string payload;
  std::map<std::string, std::string> annotations;
};

// Reads a containers/image "sigstore" signature file (0x00 "sigstore-json\n" + JSON with
// mimeType, payload (base64), annotations).
Result<SimpleSignature> ParseContainersSigstoreSignature(std::string_view file);

struct DsseSignature {
  std::string keyid;
  std::string sig;  // raw bytes
};
struct DsseEnvelope {
  std::string payload_type;
  std::string payload;  // raw bytes (decoded)
  std::vector<DsseSignature> signatures;
};
Result<DsseEnvelope> ParseDsseEnvelope(std::string_view json_text);
// DSSE pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(body)> <body>".
std::string Pae(std::string_view payload_type, std::string_view payload);

struct InTotoSubject {
  std::string name;
  std::map<std::string, std::string> digest;  // algorithm -> lowercase hex
};
struct InTotoStatement {
  std::string type;
  std::string predicate_type;
  std::vector<InTotoSubject> subjects;
};
Result<InTotoStatement> ParseInTotoStatement(std::string_view payload);
// True when some subject carries `d` (its algorithm and hex).
bool StatementCovers(const InTotoStatement& st, const Digest& d);

struct SigstoreBundle {
  std::string media_type;
  std::optional<DsseEnvelope> dsse;
  // messageSignature form.
  std::optional<Digest> message_digest;
  std::string message_signature;  // raw bytes
  std::string public_key_hint;    // verificationMaterial.publicKey.hint, when key-signed
  bool has_certificate = false;   // keyless material present (verified by the keyless verifier)
};
Result<SigstoreBundle> ParseSigstoreBundle(std::string_view json_text);

}  // namespace digestd::verify
