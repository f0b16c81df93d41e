#pragma once

// Offline verification of sigstore signatures against a trusted root (sigstore's
// trusted_root.json, or one assembled from a policy's Fulcio CA and Rekor key):
//
//  - sigstore bundles v0.1, v0.2, v0.3 with a message signature or a DSSE envelope (one
//    signature), keyless (Fulcio certificate) or key-signed (publicKey hint + a key given here);
//  - cosign's legacy layout: a signature manifest layer with the certificate, chain and Rekor
//    bundle (SET) annotations.
//
// Every check that fails names a distinct reason (BundleFailure) in the error's first word, e.g.
// "certificate-chain: unable to get local issuer certificate".

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/cosign.h"
#include "verify/digest.h"
#include "verify/public_key.h"
#include "verify/sigstore_root.h"

namespace digestd::verify {

enum class BundleFailure {
  kMalformed,            // not a bundle we can read (JSON, media type, fields)
  kSignature,            // the signature does not verify with the leaf's (or the given) key
  kArtifact,             // the artifact is not what was signed (digest, statement subject)
  kCertificateChain,     // no chain to a CA of the trusted root at the trusted time, or a root
                         // certificate inside the bundle's chain
  kCertificateUsage,     // no code-signing EKU
  kCertificateValidity,  // the trusted time lies outside the leaf's validity
  kIdentity,             // SAN does not match
  kIssuer,               // OIDC issuer does not match
  kSct,                  // no embedded SCT verifies against a CT log of the trusted root
  kTlogUnknown,          // entry from a log that is not in the trusted root
  kTlogSet,              // signed entry timestamp invalid or missing where required
  kTlogInclusion,        // inclusion proof or checkpoint invalid or missing where required
  kTlogBody,             // the log entry's body does not match the bundle
  kTlogMissing,          // no transparency log entry
  kTimestamp,            // RFC 3161 timestamps: duplicates, too many
  kNoTrustedTime,        // nothing established when the signature was made
  kKey,                  // key-signed bundle without a key, or a key for a keyless bundle
};
std::string_view ToString(BundleFailure f);

struct BundleArtifact {
  std::optional<std::string> bytes;  // the artifact itself
  std::optional<Digest> digest;      // or only its digest
};

struct BundleExpectation {
  PublicKeyPtr key;      // set: the bundle must be key-signed by this key
  // For a key-signed bundle: when the key may sign. Every trusted time must fall inside
  // (GHSA-wqqc-jjcq-vfxm: a key's window is judged at the signing time, not now).
  std::optional<ValidFor> key_valid;
  std::string identity;  // keyless: required SAN (exact); empty = any
  std::string issuer;    // keyless: required OIDC issuer (exact); empty = any
};

struct BundleVerdict {
  bool keyless = false;
  std::string identity;  // the leaf's first SAN (keyless)
  std::string issuer;
  std::vector<std::int64_t> trusted_times;  // unix seconds: verified SETs and RFC 3161 tokens
  std::optional<InTotoStatement> statement;  // DSSE in-toto bundles
  std::string payload_type;                  // DSSE bundles
  std::string payload;                       // DSSE payload bytes
};

// Verifies a bundle (its JSON text) for `artifact`. `artifact` may be empty for a DSSE bundle when
// the caller checks the statement itself (BundleVerdict::statement).
Result<BundleVerdict> VerifyBundle(std::string_view bundle_json, const BundleArtifact& artifact,
                                   const SigstoreTrustedRoot& root,
                                   const BundleExpectation& expect);

// cosign's legacy keyless layout: `sig` is one layer of a signature manifest (payload + the
// dev.cosignproject.cosign/signature, dev.sigstore.cosign/certificate, .../chain and .../bundle
// annotations). The payload must be signed by the certificate's key, the certificate must chain
// (through the chain annotation's intermediates) to a CA of `root` at the SET's integrated time,
// and the SET must verify with a Rekor key of `root` over an entry that matches. Without a
// bundle annotation there is no trusted time and the signature is refused.
Result<BundleVerdict> VerifyCosignKeyless(const SimpleSignature& sig, const SigstoreTrustedRoot& root,
                                          const BundleExpectation& expect);

// A private PKI (containers-policy.json(5) `pki`): roots and intermediates the organisation
// configures, and the SAN the leaf must carry. There is no transparency log, so the chain is
// checked at `now` (the PKI's own certificate lifetimes bound its signatures) and without
// X509_STRICT; an extended key usage, when present, must include code signing.
struct PkiTrust {
  std::vector<Authority> roots;              // one root certificate each (the anchors)
  std::vector<std::string> intermediates_der;
  std::string subject_email;                 // required email SAN (empty: not checked)
  std::string subject_hostname;              // required DNS SAN (empty: not checked)
};

// cosign's layout signed with a private PKI certificate (signature, certificate and chain
// annotations; no Rekor bundle).
Result<BundleVerdict> VerifyCosignPki(const SimpleSignature& sig, const PkiTrust& pki,
                                      std::int64_t now);

}  // namespace digestd::verify
