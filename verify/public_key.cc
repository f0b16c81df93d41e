#include "verify/public_key.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "verify/hasher.h"

namespace digestd::verify {
namespace {

Error Bad(std::string why) { return MakeError(Module::kVerify, Errc::kInvalidArgument, why); }

EVP_PKEY* Pkey(void* p) { return static_cast<EVP_PKEY*>(p); }

}  // namespace

std::string_view ToString(KeyType type) {
  switch (type) {
    case KeyType::kEcdsaP256: return "ecdsa-p256";
    case KeyType::kEcdsaP384: return "ecdsa-p384";
    case KeyType::kRsa: return "rsa";
    case KeyType::kEd25519: return "ed25519";
  }
  return "unknown";
}

PublicKey::~PublicKey() { EVP_PKEY_free(Pkey(pkey_)); }

Result<PublicKeyPtr> PublicKey::FromPem(std::string_view pem) {
  if (pem.size() > 64 * 1024) return Bad("public key PEM over 64 KiB");
  if (pem.find("-----BEGIN PUBLIC KEY-----") == std::string_view::npos) {
    return Bad("not a PEM public key (want \"-----BEGIN PUBLIC KEY-----\")");
  }
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return MakeError(Module::kVerify, Errc::kInternal, "BIO_new_mem_buf");
  EVP_PKEY* pkey = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pkey == nullptr) {
    ERR_clear_error();
    return Bad("cannot read the PEM public key (corrupt base64 or DER?)");
  }
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(pkey, &der);
  EVP_PKEY_free(pkey);
  if (len <= 0) return Bad("cannot encode the public key");
  std::string spki(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return FromDer(spki);
}

Result<PublicKeyPtr> PublicKey::FromDer(std::string_view spki_der) {
  const auto* p = reinterpret_cast<const unsigned char*>(spki_der.data());
  EVP_PKEY* pkey = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki_der.size()));
  if (pkey == nullptr) {
    ERR_clear_error();
    return Bad("cannot parse the SubjectPublicKeyInfo");
  }
  std::shared_ptr<PublicKey> key(new PublicKey());
  key->pkey_ = pkey;
  key->der_ = std::string(spki_der);
  key->fingerprint_ = Hasher::Of(DigestAlgorithm::kSha256, spki_der).ToString();
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_EC: {
      char curve[64] = {};
      std::size_t n = 0;
      if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve,
                                         &n) != 1) {
        return Bad("EC key without a named curve");
      }
      const std::string_view c(curve, n);
      if (c == "prime256v1" || c == "P-256") {
        key->type_ = KeyType::kEcdsaP256;
      } else if (c == "secp384r1" || c == "P-384") {
        key->type_ = KeyType::kEcdsaP384;
      } else {
        return Bad("unsupported EC curve " + Quote(c) + " (want P-256 or P-384)");
      }
      break;
    }
    case EVP_PKEY_RSA:
      if (EVP_PKEY_get_bits(pkey) < 2048) {
        return Bad("RSA key of " + std::to_string(EVP_PKEY_get_bits(pkey)) +
                   " bits is too small (want >= 2048)");
      }
      key->type_ = KeyType::kRsa;
      break;
    case EVP_PKEY_ED25519:
      key->type_ = KeyType::kEd25519;
      break;
    default:
      return Bad("unsupported public key type (want ECDSA P-256/P-384, RSA or Ed25519)");
  }
  return PublicKeyPtr(std::move(key));
}

Result<PublicKeyPtr> PublicKey::FromRsaPkcs1Der(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  EVP_PKEY* pkey = d2i_PublicKey(EVP_PKEY_RSA, nullptr, &p, static_cast<long>(der.size()));
  if (pkey == nullptr || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return Bad("cannot parse the PKCS#1 RSA public key");
  }
  unsigned char* spki = nullptr;
  const int len = i2d_PUBKEY(pkey, &spki);
  EVP_PKEY_free(pkey);
  if (len <= 0) return Bad("cannot encode the RSA public key");
  std::string out(reinterpret_cast<char*>(spki), static_cast<std::size_t>(len));
  OPENSSL_free(spki);
  return FromDer(out);
}

Result<void> PublicKey::VerifyDigest(std::string_view digest_bytes,
                                     std::string_view signature) const {
  if (signature.empty() || signature.size() > 4096) return Bad("signature is empty or too long");
  const EVP_MD* md = nullptr;
  switch (digest_bytes.size()) {
    case 32: md = EVP_sha256(); break;
    case 48: md = EVP_sha384(); break;
    case 64: md = EVP_sha512(); break;
    default: return Bad("digest of unsupported length " + std::to_string(digest_bytes.size()));
  }
  if (type_ == KeyType::kEd25519) {
    return MakeError(Module::kVerify, Errc::kUnsupported,
                     "an Ed25519 signature cannot be verified against a digest; give the artifact");
  }
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(Pkey(pkey_), nullptr);
  if (ctx == nullptr) return MakeError(Module::kVerify, Errc::kInternal, "EVP_PKEY_CTX_new");
  int ok = EVP_PKEY_verify_init(ctx);
  if (ok == 1 && type_ == KeyType::kRsa) ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
  if (ok == 1) ok = EVP_PKEY_CTX_set_signature_md(ctx, md);
  if (ok == 1) {
    ok = EVP_PKEY_verify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                         signature.size(), reinterpret_cast<const unsigned char*>(digest_bytes.data()),
                         digest_bytes.size());
  }
  EVP_PKEY_CTX_free(ctx);
  if (ok != 1) {
    ERR_clear_error();
    return Bad("signature does not verify with key " + fingerprint_ + " (" +
               std::string(ToString(type_)) + ")");
  }
  return {};
}

Result<void> PublicKey::Verify(std::string_view message, std::string_view signature) const {
  if (signature.empty() || signature.size() > 4096) return Bad("signature is empty or too long");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return MakeError(Module::kVerify, Errc::kInternal, "EVP_MD_CTX_new");
  const EVP_MD* md = nullptr;
  switch (type_) {
    case KeyType::kEcdsaP256: md = EVP_sha256(); break;
    case KeyType::kEcdsaP384: md = EVP_sha384(); break;
    case KeyType::kRsa: md = EVP_sha256(); break;
    case KeyType::kEd25519: md = nullptr; break;
  }
  EVP_PKEY_CTX* pctx = nullptr;
  int ok = EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, Pkey(pkey_));
  if (ok == 1 && type_ == KeyType::kRsa) {
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING);
  }
  if (ok == 1) {
    ok = EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                          message.size());
  }
  EVP_MD_CTX_free(ctx);
  if (ok != 1) {
    ERR_clear_error();
    return Bad("signature does not verify with key " + fingerprint_ + " (" +
               std::string(ToString(type_)) + ")");
  }
  return {};
}

}  // namespace digestd::verify
