#include "verify/x509.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/ct.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>

#include "verify/hasher.h"

namespace digestd::verify {
namespace {

Error Bad(std::string why) { return MakeError(Module::kVerify, Errc::kInvalidArgument, why); }
X509* X(void* p) { return static_cast<X509*>(p); }

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Result<std::int64_t> ToUnix(const ASN1_TIME* t) {
  struct tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return Bad("certificate has a bad validity time");
  return static_cast<std::int64_t>(timegm(&tm));
}

// The extension's OCTET STRING contents, or empty.
std::string ExtensionBytes(X509* x, std::string_view oid) {
  ASN1_OBJECT* obj = OBJ_txt2obj(std::string(oid).c_str(), 1);
  if (obj == nullptr) return {};
  const int idx = X509_get_ext_by_OBJ(x, obj, -1);
  ASN1_OBJECT_free(obj);
  if (idx < 0) return {};
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(x, idx));
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                     static_cast<std::size_t>(ASN1_STRING_length(data)));
}

void PutBigEndian(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

Certificate::~Certificate() { X509_free(X(x509_)); }

Result<CertificatePtr> Certificate::FromDer(std::string_view der) {
  if (der.empty() || der.size() > 64 * 1024) return Bad("certificate empty or over 64 KiB");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509* x = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (x == nullptr) return Bad("cannot parse the certificate: " + OpenSslError());
  std::shared_ptr<Certificate> c(new Certificate());
  c->x509_ = x;
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    return Bad("trailing bytes after the certificate");
  }
  c->der_ = std::string(der);
  DIGESTD_ASSIGN_OR_RETURN(c->not_before_, ToUnix(X509_get0_notBefore(x)));
  DIGESTD_ASSIGN_OR_RETURN(c->not_after_, ToUnix(X509_get0_notAfter(x)));
  return CertificatePtr(std::move(c));
}

Result<std::vector<CertificatePtr>> Certificate::ChainFromPem(std::string_view pem) {
  if (pem.size() > 256 * 1024) return Bad("certificate PEM over 256 KiB");
  std::vector<CertificatePtr> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return MakeError(Module::kVerify, Errc::kInternal, "BIO_new_mem_buf");
  for (;;) {
    X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (x == nullptr) break;
    unsigned char* der = nullptr;
    const int len = i2d_X509(x, &der);
    X509_free(x);
    if (len <= 0) break;
    auto c = FromDer(std::string_view(reinterpret_cast<char*>(der), static_cast<std::size_t>(len)));
    OPENSSL_free(der);
    if (!c) {
      BIO_free(bio);
      return c.error();
    }
    out.push_back(*c);
  }
  BIO_free(bio);
  ERR_clear_error();
  if (out.empty()) return Bad("no PEM certificate found");
  return out;
}

Result<CertificatePtr> Certificate::FromPem(std::string_view pem) {
  DIGESTD_ASSIGN_OR_RETURN(auto chain, ChainFromPem(pem));
  if (chain.size() != 1) return Bad("expected one PEM certificate, found " + std::to_string(chain.size()));
  return chain[0];
}

bool Certificate::SelfSigned() const {
  return (X509_get_extension_flags(X(x509_)) & EXFLAG_SS) != 0 ||
         X509_NAME_cmp(X509_get_subject_name(X(x509_)), X509_get_issuer_name(X(x509_))) == 0;
}

bool Certificate::HasCodeSigningEku() const {
  const std::uint32_t flags = X509_get_extension_flags(X(x509_));
  if ((flags & EXFLAG_XKUSAGE) == 0) return false;
  return (X509_get_extended_key_usage(X(x509_)) & XKU_CODE_SIGN) != 0;
}

bool Certificate::HasEku() const {
  return (X509_get_extension_flags(X(x509_)) & EXFLAG_XKUSAGE) != 0;
}

namespace {
std::vector<std::string> SansOfType(X509* x, int type) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != type) continue;
    const ASN1_STRING* s = type == GEN_EMAIL ? n->d.rfc822Name : n->d.dNSName;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(names);
  return out;
}
}  // namespace

std::vector<std::string> Certificate::EmailSans() const { return SansOfType(X(x509_), GEN_EMAIL); }
std::vector<std::string> Certificate::DnsSans() const { return SansOfType(X(x509_), GEN_DNS); }

Result<PublicKeyPtr> Certificate::Key() const {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(X509_get0_pubkey(X(x509_)), &der);
  if (len <= 0) return Bad("certificate has no usable public key");
  std::string spki(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return PublicKey::FromDer(spki);
}

std::vector<std::string> Certificate::SubjectAltNames() const {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(X(x509_), NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  ASN1_OBJECT* fulcio_other = OBJ_txt2obj("1.3.6.1.4.1.57264.1.7", 1);
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    const ASN1_STRING* s = nullptr;
    switch (n->type) {
      case GEN_EMAIL: s = n->d.rfc822Name; break;
      case GEN_URI: s = n->d.uniformResourceIdentifier; break;
      case GEN_DNS: s = n->d.dNSName; break;
      case GEN_OTHERNAME:
        if (fulcio_other != nullptr && OBJ_cmp(n->d.otherName->type_id, fulcio_other) == 0 &&
            n->d.otherName->value->type == V_ASN1_UTF8STRING) {
          s = n->d.otherName->value->value.utf8string;
        }
        break;
      default: break;
    }
    if (s != nullptr) {
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
  }
  ASN1_OBJECT_free(fulcio_other);
  GENERAL_NAMES_free(names);
  return out;
}

std::string Certificate::OidcIssuer() const {
  if (std::string v2 = ExtensionBytes(X(x509_), "1.3.6.1.4.1.57264.1.8"); !v2.empty()) {
    const auto* p = reinterpret_cast<const unsigned char*>(v2.data());
    ASN1_UTF8STRING* s = d2i_ASN1_UTF8STRING(nullptr, &p, static_cast<long>(v2.size()));
    if (s == nullptr) {
      ERR_clear_error();
      return {};
    }
    std::string out(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                    static_cast<std::size_t>(ASN1_STRING_length(s)));
    ASN1_UTF8STRING_free(s);
    return out;
  }
  return ExtensionBytes(X(x509_), "1.3.6.1.4.1.57264.1.1");
}

Result<void> VerifyChainAt(const Certificate& leaf, const Authority& authority, std::int64_t at,
                           bool strict) {
  std::vector<CertificatePtr> chain;
  for (const auto& der : authority.chain_der) {
    auto c = Certificate::FromDer(der);
    if (!c) return Bad("trusted root authority " + authority.uri + ": " + c.error().context());
    chain.push_back(*c);
  }
  X509_STORE* store = X509_STORE_new();
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  std::string why;
  if (store == nullptr || untrusted == nullptr || ctx == nullptr) {
    why = "out of memory";
  } else {
    X509_STORE_add_cert(store, X(chain.back()->x509()));
    for (std::size_t i = 0; i + 1 < chain.size(); ++i) sk_X509_push(untrusted, X(chain[i]->x509()));
    if (X509_STORE_CTX_init(ctx, store, X(leaf.x509()), untrusted) != 1) {
      why = "X509_STORE_CTX_init: " + OpenSslError();
    } else {
      X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
      X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(at));
      if (strict) X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
      if (X509_verify_cert(ctx) != 1) {
        why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
      }
    }
  }
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  X509_STORE_free(store);
  ERR_clear_error();
  if (!why.empty()) return Bad(why);
  return {};
}

Result<void> VerifyEmbeddedSct(const Certificate& leaf, const Certificate& issuer,
                               const std::vector<LogKey>& ctlogs) {
  X509* x = X(leaf.x509());
  auto* scts = static_cast<STACK_OF(SCT)*>(
      X509_get_ext_d2i(x, NID_ct_precert_scts, nullptr, nullptr));
  if (scts == nullptr) {
    ERR_clear_error();
    return Bad("the certificate carries no SCT");
  }
  // The precertificate's TBS: the leaf's TBS without the SCT list extension, re-encoded.
  std::string tbs;
  if (X509* copy = X509_dup(x); copy != nullptr) {
    const int idx = X509_get_ext_by_NID(copy, NID_ct_precert_scts, -1);
    if (idx >= 0) X509_EXTENSION_free(X509_delete_ext(copy, idx));
    unsigned char* der = nullptr;
    const int len = i2d_re_X509_tbs(copy, &der);
    if (len > 0) tbs.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    X509_free(copy);
  }
  std::string issuer_spki;
  {
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(X509_get0_pubkey(X(issuer.x509())), &der);
    if (len > 0) issuer_spki.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
  }
  std::string last = "no SCT from a trusted CT log";
  bool ok = false;
  if (tbs.empty() || issuer_spki.empty() || tbs.size() >= (1u << 24)) {
    last = "cannot rebuild the precertificate";
  } else {
    const std::string issuer_key_hash =
        DigestBytes(Hasher::Of(DigestAlgorithm::kSha256, issuer_spki));
    for (int i = 0; i < sk_SCT_num(scts) && !ok; ++i) {
      SCT* sct = sk_SCT_value(scts, i);
      if (SCT_get_version(sct) != SCT_VERSION_V1) continue;
      unsigned char* id = nullptr;
      const std::size_t id_len = SCT_get0_log_id(sct, &id);
      const LogKey* log = nullptr;
      for (const auto& l : ctlogs) {
        if (id_len == l.log_id.size() && std::memcmp(l.log_id.data(), id, id_len) == 0) log = &l;
      }
      if (log == nullptr) continue;
      const std::uint64_t ts_ms = SCT_get_timestamp(sct);
      if (!log->valid.Contains(static_cast<std::int64_t>(ts_ms / 1000))) {
        last = "SCT time outside its CT log's validity";
        continue;
      }
      unsigned char* ext = nullptr;
      const std::size_t ext_len = SCT_get0_extensions(sct, &ext);
      unsigned char* sig = nullptr;
      const std::size_t sig_len = SCT_get0_signature(sct, &sig);
      if (ext_len >= (1u << 16) || sig_len == 0) continue;
      std::string signed_data;
      signed_data.push_back(0);  // sct_version v1
      signed_data.push_back(0);  // signature_type certificate_timestamp
      PutBigEndian(signed_data, ts_ms, 8);
      PutBigEndian(signed_data, 1, 2);  // entry_type precert_entry
      signed_data += issuer_key_hash;
      PutBigEndian(signed_data, tbs.size(), 3);
      signed_data += tbs;
      PutBigEndian(signed_data, ext_len, 2);
      signed_data.append(reinterpret_cast<const char*>(ext), ext_len);
      auto v = log->key->Verify(signed_data,
                                std::string_view(reinterpret_cast<const char*>(sig), sig_len));
      if (v) {
        ok = true;
      } else {
        last = "SCT signature does not verify with CT log " + log->base_url;
      }
    }
  }
  SCT_LIST_free(scts);
  ERR_clear_error();
  if (!ok) return Bad(last);
  return {};
}

}  // namespace digestd::verify
