#pragma once

// X.509 for keyless signatures (internal to verify/): Fulcio leaf certificates, their chains to
// a trusted root's certificate authority at a given time, the identity and OIDC issuer Fulcio
// writes into them, and their embedded SCTs. Built on OpenSSL; every certificate is hostile
// input until a chain check passes.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/public_key.h"
#include "verify/sigstore_root.h"

namespace digestd::verify {

class Certificate;
using CertificatePtr = std::shared_ptr<const Certificate>;

class Certificate {
 public:
  static Result<CertificatePtr> FromDer(std::string_view der);
  // Exactly one "-----BEGIN CERTIFICATE-----" block.
  static Result<CertificatePtr> FromPem(std::string_view pem);
  // One or more PEM certificates, in order.
  static Result<std::vector<CertificatePtr>> ChainFromPem(std::string_view pem);
  ~Certificate();
  Certificate(const Certificate&) = delete;
  Certificate& operator=(const Certificate&) = delete;

  const std::string& der() const { return der_; }
  std::int64_t not_before() const { return not_before_; }
  std::int64_t not_after() const { return not_after_; }
  bool ValidAt(std::int64_t t) const { return t >= not_before_ && t <= not_after_; }
  bool SelfSigned() const;
  bool HasCodeSigningEku() const;
  bool HasEku() const;  // any extended key usage present
  Result<PublicKeyPtr> Key() const;
  // Subject alternative names: emails, URIs, DNS names and Fulcio's otherName
  // (1.3.6.1.4.1.57264.1.7), in certificate order.
  std::vector<std::string> SubjectAltNames() const;
  std::vector<std::string> EmailSans() const;
  std::vector<std::string> DnsSans() const;
  // Fulcio's OIDC issuer: extension 1.3.6.1.4.1.57264.1.8 (a DER UTF8String), falling back to
  // the deprecated 1.3.6.1.4.1.57264.1.1 (raw bytes). Empty when neither is present.
  std::string OidcIssuer() const;

  void* x509() const { return x509_; }  // X509*

 private:
  Certificate() = default;
  void* x509_ = nullptr;
  std::string der_;
  std::int64_t not_before_ = 0;
  std::int64_t not_after_ = 0;
};

// Builds a chain from `leaf` through `authority`'s certificates (root last, the only trust
// anchor) with every certificate valid at `at`. Certificates a bundle carries besides the leaf
// are never used as trust anchors or intermediates.
// `strict` adds OpenSSL's X509_STRICT checks (sigstore's CAs meet them; private PKIs often do
// not, e.g. CA certificates without a key usage extension).
Result<void> VerifyChainAt(const Certificate& leaf, const Authority& authority, std::int64_t at,
                           bool strict = true);

// Verifies at least one SCT embedded in `leaf` (issued by `issuer`) against a CT log of `ctlogs`
// whose validity covers the SCT's time. Fails when the certificate has no SCT.
Result<void> VerifyEmbeddedSct(const Certificate& leaf, const Certificate& issuer,
                               const std::vector<LogKey>& ctlogs);

}  // namespace digestd::verify
