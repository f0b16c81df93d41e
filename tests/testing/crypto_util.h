#pragma once

// Keys and signatures made by the tests themselves (OpenSSL), so every signature check has cases
// that do not depend on ../shared/vectors.

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

namespace digestd::testing {

class TestKey {
 public:
  static TestKey EcP256() { return TestKey(EVP_EC_gen("P-256"), "P-256"); }
  static TestKey EcP384() { return TestKey(EVP_EC_gen("P-384"), "P-384"); }
  static TestKey Rsa(unsigned bits = 2048) {
    return TestKey(EVP_RSA_gen(bits), "RSA");
  }
  static TestKey Ed25519() { return TestKey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), "ED"); }

  TestKey(TestKey&& o) noexcept : pkey_(o.pkey_), kind_(o.kind_) { o.pkey_ = nullptr; }
  TestKey(const TestKey&) = delete;
  ~TestKey() { EVP_PKEY_free(pkey_); }

  std::string PublicPem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey_);
    return Drain(bio);
  }
  std::string PrivatePem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, pkey_, nullptr, nullptr, 0, nullptr, nullptr);
    return Drain(bio);
  }

  // DER for ECDSA, raw for RSA (PKCS#1 v1.5) and Ed25519; SHA-256 (SHA-384 for P-384).
  std::string Sign(std::string_view msg) const {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const EVP_MD* md = kind_ == "ED" ? nullptr : kind_ == "P-384" ? EVP_sha384() : EVP_sha256();
    if (EVP_DigestSignInit(ctx, nullptr, md, nullptr, pkey_) != 1) std::abort();
    std::size_t len = 0;
    const auto* m = reinterpret_cast<const unsigned char*>(msg.data());
    if (EVP_DigestSign(ctx, nullptr, &len, m, msg.size()) != 1) std::abort();
    std::string sig(len, '\0');
    if (EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, m, msg.size()) !=
        1) {
      std::abort();
    }
    sig.resize(len);
    EVP_MD_CTX_free(ctx);
    return sig;
  }

 private:
  TestKey(EVP_PKEY* pkey, std::string_view kind) : pkey_(pkey), kind_(kind) {
    if (pkey_ == nullptr) std::abort();
  }
  static std::string Drain(BIO* bio) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<std::size_t>(n));
    BIO_free(bio);
    return out;
  }
  EVP_PKEY* pkey_;
  std::string_view kind_;
};

}  // namespace digestd::testing
