#pragma once

// The org policy: a JSON file modelled on containers-policy.json(5) plus digestd's org rules
// (format and examples in docs/policy.md). Loading is strict: an unknown or duplicate key, a bad
// scope, a missing key file is refused with the file and the field named. A Policy is immutable
// and thread-safe; reload by loading a new one and swapping (a failed load keeps the old one).
//
// Decisions are values (allow/deny, the scope and requirement that decided, the signer key id and
// the reason), ready to become audit events.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/cosign.h"
#include "verify/digest.h"
#include "verify/public_key.h"
#include "verify/reference.h"
#include "verify/sigstore_root.h"
#include "verify/trust.h"

namespace digestd::verify {

enum class IdentityMatch {
  kMatchExact,
  kMatchRepoDigestOrExact,
  kMatchRepository,
  kExactReference,
  kExactRepository,
  kRemapIdentity,
};

struct SignedIdentity {
  IdentityMatch type = IdentityMatch::kMatchRepoDigestOrExact;
  std::string docker_reference;   // exactReference
  std::string docker_repository;  // exactRepository
  std::string prefix;             // remapIdentity
  std::string signed_prefix;      // remapIdentity
};

struct PolicyKey {
  std::string label;  // where it came from: a keyPath, "keyData", or a trust-file id
  PublicKeyPtr key;
};

enum class RequirementType { kInsecureAcceptAnything, kReject, kSigstoreSigned };

// Keyless signing: who must have signed (the Fulcio certificate's SAN and OIDC issuer) and the
// roots that establish it (a sigstore trusted root, or a Fulcio CA plus Rekor keys).
struct PkiTrust;
struct KeylessRule {
  std::shared_ptr<const SigstoreTrustedRoot> root;  // null for a private PKI
  std::shared_ptr<const PkiTrust> pki;              // containers-policy.json's "pki"
  std::string root_label;  // "trustedRootPath <path>", "fulcio <caPath|caData>" or "pki <...>"
  std::string issuer;      // fulcio.oidcIssuer
  std::string subject;     // fulcio.subjectEmail, or digestd's fulcio.subject (any SAN)
};

struct Requirement {
  RequirementType type = RequirementType::kReject;
  std::vector<PolicyKey> keys;        // keyPath / keyPaths / keyData
  std::vector<std::string> key_ids;   // digestd extension: ids in the trust file
  std::optional<KeylessRule> keyless; // instead of keys
  SignedIdentity identity;
};

struct RequiredAttestation {
  std::string predicate_type;
  std::vector<PolicyKey> keys;
  std::vector<std::string> key_ids;
  std::optional<KeylessRule> keyless;
};

struct OrgRules {
  std::vector<std::string> allowed_registries;  // host[:port]; empty = any
  std::vector<std::string> allowed_namespaces;  // "host/ns" prefixes; empty = any
  bool deny_mutable_tags = false;               // references must carry a digest
  std::vector<Digest> denied_digests;
  std::vector<std::string> deny_references;     // fnmatch(3) patterns on the canonical reference
  std::vector<std::string> deny_signer_key_ids; // key ids or "sha256:<fingerprint>"
  struct KeylessSigner {
    std::string issuer;
    std::string identity;
  };
  std::vector<KeylessSigner> deny_keyless_signers;  // enforced by the keyless verifier
  std::vector<RequiredAttestation> required_attestations;
};

// What was found next to an image in the registry.
struct Evidence {
  std::vector<SimpleSignature> signatures;  // layers of the sha256-<hex>.sig manifest
  std::vector<std::string> bundles;         // sigstore bundles attached as OCI referrers
  std::vector<std::string> attestations;    // DSSE envelopes (cosign attest) or bundles
};

struct Decision {
  bool allowed = false;
  std::string scope;        // "default", "docker:<scope>", or "digestd" for org rules
  std::string requirement;  // "reject", "sigstoreSigned", "deniedDigests", ...
  std::string signer;       // id of the key whose signature was accepted
  std::string reason;
  // {"allowed":..,"scope":..,"requirement":..,"signer":..,"reason":..}
  std::string ToJson() const;
};

class Policy {
 public:
  static Result<Policy> Parse(std::string_view json_text, std::string_view source,
                              const std::filesystem::path& base_dir);
  static Result<Policy> LoadFile(const std::filesystem::path& path);

  // Org rules that need nothing fetched: registry and namespace allowlists, mutable tags, denied
  // digests (when the reference has one) and denied reference patterns. Runs before any network
  // I/O; `allowed` means "go on", not "accepted".
  Decision PreCheck(const Reference& ref) const;
  // A dry run before any network access: PreCheck, then what the reference's scope requires
  // (rejected, allowed without signature, or allowed if signed by one of the named keys).
  Decision Explain(const Reference& ref) const;

  // The full decision for an image whose manifest hashed to `manifest_digest`: org rules, the
  // scope's requirements (all must hold), denied signers and required attestations. `trust` may be
  // null (then keyIds cannot resolve and no validity windows apply). `now` is unix seconds.
  Decision Evaluate(const Reference& ref, const Digest& manifest_digest, const Evidence& evidence,
                    const TrustRoot* trust, std::int64_t now) const;

  // The scope that applies to `ref` ("default" when none) and its requirements.
  std::pair<std::string, const std::vector<Requirement>*> ScopeFor(const Reference& ref) const;

  const OrgRules& org() const { return org_; }

  // For a recorded signer id of a keyless or PKI signature ("keyless <identity> (<issuer>)",
  // "pki <subject>", as decisions name them): whether denySigners.keyless now refuses it.
  // nullopt when the id is not a keyless one (a key id or fingerprint).
  std::optional<bool> DeniesKeylessSigner(std::string_view signer_id) const;

 private:
  std::vector<Requirement> default_;
  std::vector<std::pair<std::string, std::vector<Requirement>>> docker_;
  OrgRules org_;
};

// Whether the identity a signature claims satisfies `rule` for the image reference `image`.
Result<void> MatchSignedIdentity(const SignedIdentity& rule, const Reference& image,
                                 std::string_view signed_reference);

}  // namespace digestd::verify
