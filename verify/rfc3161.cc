#include "verify/rfc3161.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ts.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <ctime>
#include <string>

#include "verify/x509.h"

namespace digestd::verify {
namespace {

Error Bad(std::string why) { return MakeError(Module::kVerify, Errc::kInvalidArgument, why); }

}  // namespace

Result<std::int64_t> VerifyRfc3161Timestamp(std::string_view response_der,
                                            std::string_view signed_bytes,
                                            const std::vector<Authority>& tsas) {
  if (response_der.empty() || response_der.size() > 64 * 1024) {
    return Bad("timestamp empty or over 64 KiB");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(response_der.data());
  TS_RESP* resp = d2i_TS_RESP(nullptr, &p, static_cast<long>(response_der.size()));
  if (resp == nullptr) {
    ERR_clear_error();
    return Bad("timestamp is not a DER TimeStampResp");
  }
  std::int64_t gen_time = 0;
  {
    TS_TST_INFO* info = TS_RESP_get_tst_info(resp);
    const ASN1_GENERALIZEDTIME* t = info != nullptr ? TS_TST_INFO_get_time(info) : nullptr;
    struct tm tm = {};
    if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
      TS_RESP_free(resp);
      ERR_clear_error();
      return Bad("timestamp has no readable time");
    }
    gen_time = static_cast<std::int64_t>(timegm(&tm));
  }
  std::string last = "no timestamp authority of the trusted root was valid at " +
                     std::to_string(gen_time);
  bool ok = false;
  for (const auto& tsa : tsas) {
    if (!tsa.valid.Contains(gen_time)) continue;
    std::vector<CertificatePtr> chain;
    bool parsed = true;
    for (const auto& der : tsa.chain_der) {
      auto c = Certificate::FromDer(der);
      if (!c) {
        parsed = false;
        break;
      }
      chain.push_back(*c);
    }
    if (!parsed || chain.empty()) {
      last = "trusted root TSA " + tsa.uri + " has an unreadable chain";
      continue;
    }
    X509_STORE* store = X509_STORE_new();
    X509_STORE_add_cert(store, static_cast<X509*>(chain.back()->x509()));
    X509_VERIFY_PARAM_set_time(X509_STORE_get0_param(store), static_cast<time_t>(gen_time));
    STACK_OF(X509)* certs = sk_X509_new_null();
    for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
      X509* x = static_cast<X509*>(chain[i]->x509());
      X509_up_ref(x);
      sk_X509_push(certs, x);
    }
    TS_VERIFY_CTX* ctx = TS_VERIFY_CTX_new();
    TS_VERIFY_CTX_set_flags(ctx, TS_VFY_VERSION | TS_VFY_SIGNATURE | TS_VFY_DATA);
    TS_VERIFY_CTX_set_store(ctx, store);  // owned by ctx from here
    TS_VERIFY_CTX_set_certs(ctx, certs);
    TS_VERIFY_CTX_set_data(ctx, BIO_new_mem_buf(signed_bytes.data(),
                                                static_cast<int>(signed_bytes.size())));
    if (TS_RESP_verify_response(ctx, resp) == 1) {
      ok = true;
    } else {
      const unsigned long e = ERR_peek_last_error();
      char buf[256] = "unknown";
      if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
      last = "timestamp does not verify with TSA " + tsa.uri + ": " + buf;
    }
    TS_VERIFY_CTX_free(ctx);
    ERR_clear_error();
    if (ok) break;
  }
  TS_RESP_free(resp);
  if (!ok) return Bad(last);
  return gen_time;
}

}  // namespace digestd::verify
