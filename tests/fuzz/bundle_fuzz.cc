// Fuzz target: sigstore trusted roots and bundles. The input is read as a trusted root and as a
// bundle verified (message signature over "a", no identity required) against a root made at
// start-up from a fresh key and self-signed CA, so every parser on the way (bundle, certificates,
// tlog entries, timestamps) sees hostile bytes.
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "verify/base64.h"
#include "verify/keyless.h"
#include "verify/sigstore_root.h"

namespace {

namespace v = digestd::verify;

std::string Der(int (*enc)(void*, unsigned char**), void* obj) {
  unsigned char* out = nullptr;
  const int n = enc(obj, &out);
  std::string s(reinterpret_cast<char*>(out), static_cast<std::size_t>(n > 0 ? n : 0));
  OPENSSL_free(out);
  return s;
}

const v::SigstoreTrustedRoot& Root() {
  static const std::unique_ptr<v::SigstoreTrustedRoot> root = [] {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* ca = X509_new();
    X509_set_version(ca, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
    X509_gmtime_adj(X509_getm_notBefore(ca), 0);
    X509_gmtime_adj(X509_getm_notAfter(ca), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(ca), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("fuzz-ca"), -1, -1, 0);
    X509_set_issuer_name(ca, X509_get_subject_name(ca));
    X509_set_pubkey(ca, key);
    X509_sign(ca, key, EVP_sha256());
    const std::string spki = Der([](void* k, unsigned char** o) {
      return i2d_PUBKEY(static_cast<EVP_PKEY*>(k), o);
    }, key);
    const std::string ca_der = Der([](void* c, unsigned char** o) {
      return i2d_X509(static_cast<X509*>(c), o);
    }, ca);
    unsigned char id[32];
    unsigned int n = 0;
    EVP_Digest(spki.data(), spki.size(), id, &n, EVP_sha256(), nullptr);
    const nlohmann::json j = {
        {"mediaType", "application/vnd.dev.sigstore.trustedroot+json;version=0.1"},
        {"tlogs", {{{"hashAlgorithm", "SHA2_256"},
                    {"publicKey", {{"rawBytes", v::Base64Encode(spki)},
                                   {"keyDetails", "PKIX_ECDSA_P256_SHA_256"},
                                   {"validFor", {{"start", "2020-01-01T00:00:00Z"}}}}},
                    {"logId", {{"keyId", v::Base64Encode(std::string(reinterpret_cast<char*>(id), n))}}}}}},
        {"certificateAuthorities",
         {{{"certChain", {{"certificates", {{{"rawBytes", v::Base64Encode(ca_der)}}}}}},
           {"validFor", {{"start", "2020-01-01T00:00:00Z"}}}}}}};
    X509_free(ca);
    EVP_PKEY_free(key);
    auto r = v::SigstoreTrustedRoot::Parse(j.dump(), "fuzz");
    if (!r) std::abort();
    return std::make_unique<v::SigstoreTrustedRoot>(std::move(*r));
  }();
  return *root;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)v::SigstoreTrustedRoot::Parse(in, "fuzz");
  (void)v::VerifyBundle(in, {.bytes = std::string("a")}, Root(), {});
  return 0;
}
