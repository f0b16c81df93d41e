#include "verify/hasher.h"

#include <openssl/evp.h>

namespace digestd::verify {

struct Hasher::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

namespace {
const EVP_MD* MdFor(DigestAlgorithm alg) {
  return alg == DigestAlgorithm::kSha256 ? EVP_sha256() : EVP_sha512();
}
}  // namespace

Hasher::Hasher(DigestAlgorithm alg, std::unique_ptr<Ctx> ctx) : alg_(alg), ctx_(std::move(ctx)) {}
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

Result<Hasher> Hasher::Create(DigestAlgorithm alg) {
  auto ctx = std::make_unique<Ctx>();
  ctx->md = EVP_MD_CTX_new();
  if (ctx->md == nullptr || EVP_DigestInit_ex(ctx->md, MdFor(alg), nullptr) != 1) {
    return MakeError(Module::kVerify, Errc::kInternal, "EVP_DigestInit_ex failed");
  }
  return Hasher(alg, std::move(ctx));
}

void Hasher::Update(std::span<const std::byte> data) {
  // EVP_DigestUpdate cannot fail for an initialised software digest; a failure is a broken
  // invariant of OpenSSL, not an input condition.
  DIGESTD_CHECK(EVP_DigestUpdate(ctx_->md, data.data(), data.size()) == 1);
}

void Hasher::Update(std::string_view data) { Update(std::as_bytes(std::span(data))); }

Digest Hasher::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  DIGESTD_CHECK(EVP_DigestFinal_ex(ctx_->md, out, &len) == 1);
  DIGESTD_CHECK(EVP_DigestInit_ex(ctx_->md, MdFor(alg_), nullptr) == 1);
  return Digest::FromBytes(alg_, out, len);
}

Result<Hasher> Hasher::Clone() const {
  auto ctx = std::make_unique<Ctx>();
  ctx->md = EVP_MD_CTX_new();
  if (ctx->md == nullptr || EVP_MD_CTX_copy_ex(ctx->md, ctx_->md) != 1) {
    return MakeError(Module::kVerify, Errc::kInternal, "EVP_MD_CTX_copy_ex failed");
  }
  return Hasher(alg_, std::move(ctx));
}

Digest Hasher::Of(DigestAlgorithm alg, std::string_view data) {
  auto h = Create(alg);
  DIGESTD_CHECK(h.has_value());
  h->Update(data);
  return h->Finish();
}

}  // namespace digestd::verify
