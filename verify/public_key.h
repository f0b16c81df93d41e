#pragma once

// Public keys for signature verification: ECDSA P-256 (SHA-256) and P-384 (SHA-384), RSA >= 2048
// bits with PKCS#1 v1.5 and SHA-256, and Ed25519, loaded from SPKI PEM. Immutable and thread-safe
// after construction.

#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

namespace digestd::verify {

enum class KeyType { kEcdsaP256, kEcdsaP384, kRsa, kEd25519 };
std::string_view ToString(KeyType type);

class PublicKey;
using PublicKeyPtr = std::shared_ptr<const PublicKey>;

class PublicKey {
 public:
  // Parses one "-----BEGIN PUBLIC KEY-----" block. Other key types, curves and RSA keys under
  // 2048 bits are refused.
  static Result<PublicKeyPtr> FromPem(std::string_view pem);
  static Result<PublicKeyPtr> FromDer(std::string_view spki_der);
  // A bare PKCS#1 RSAPublicKey (sigstore trusted roots carry CT log keys this way).
  static Result<PublicKeyPtr> FromRsaPkcs1Der(std::string_view der);
  ~PublicKey();

  KeyType type() const { return type_; }
  // "sha256:<hex>" of the SPKI DER: a stable identifier for keys that have no configured id.
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& spki_der() const { return der_; }

  // Verifies `signature` (DER for ECDSA, raw for RSA and Ed25519) over `message`.
  // kInvalidArgument: the signature does not verify (the message says so plainly).
  Result<void> Verify(std::string_view message, std::string_view signature) const;

  // Verifies `signature` over a message of which only the digest is known (ECDSA and RSA; an
  // Ed25519 signature cannot be checked against a digest).
  Result<void> VerifyDigest(std::string_view digest_bytes, std::string_view signature) const;

  // For code elsewhere in verify/ that needs the OpenSSL key (EVP_PKEY*).
  void* evp() const { return pkey_; }

 private:
  PublicKey() = default;
  void* pkey_ = nullptr;  // EVP_PKEY*
  KeyType type_ = KeyType::kEcdsaP256;
  std::string fingerprint_;
  std::string der_;
};

}  // namespace digestd::verify
