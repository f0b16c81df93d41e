#pragma once

// Signs images in a registry the way cosign does, so operators of private registries can sign
// without extra tools: a simple-signing payload for the manifest digest the reference resolves to,
// signed with the operator's private key (ECDSA P-256/P-384, or Ed25519/RSA), pushed as a layer
// of the "sha256-<hex>.sig" manifest next to the image (added to any signatures already there).
// `cosign verify --key` accepts the result, and so does digestd's policy.

//
// Its own module (signing/, docs/development.md): only digestctl signs, so the daemon does not
// carry it, and the API blocks, so callers never see Asio (the registry client it drives runs on
// an io_context of its own inside SignImage).

#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "daemon/config.h"
#include "verify/digest.h"
#include "verify/reference.h"

namespace digestd::signing {

class SigningKey {
 public:
  // An unencrypted PEM private key ("PRIVATE KEY" or "EC PRIVATE KEY").
  static Result<std::unique_ptr<SigningKey>> FromPem(std::string_view pem);
  ~SigningKey();
  // DER ECDSA (SHA-256 for P-256, SHA-384 for P-384), raw Ed25519, or RSA PKCS#1 v1.5 SHA-256.
  Result<std::string> Sign(std::string_view message) const;
  std::string PublicPem() const;

 private:
  SigningKey() = default;
  void* pkey_ = nullptr;  // EVP_PKEY*
};

struct SignResult {
  verify::Digest manifest;  // what was signed
  std::string signature_tag;  // "sha256-<hex>.sig"
  std::string payload;
};

// Resolves `ref` at its registry (as `config` says to reach it: mirrors, credentials, TLS),
// signs the manifest digest and pushes the signature. Blocks until done.
Result<SignResult> SignImage(const daemon::Config& config, const verify::Reference& ref,
                             const SigningKey& key);

}  // namespace digestd::signing
