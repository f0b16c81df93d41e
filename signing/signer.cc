#include "signing/signer.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <optional>

#include "daemon/registry_client.h"

#include "verify/base64.h"
#include "verify/cosign.h"
#include "verify/hasher.h"
#include "verify/oci.h"

namespace digestd::signing {
namespace asio = boost::asio;
using daemon::RegistryClient;
namespace {

EVP_PKEY* Pkey(void* p) { return static_cast<EVP_PKEY*>(p); }

const EVP_MD* DigestFor(EVP_PKEY* pkey) {
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_ED25519:
      return nullptr;
    case EVP_PKEY_EC:
      return EVP_PKEY_get_bits(pkey) > 256 ? EVP_sha384() : EVP_sha256();
    default:
      return EVP_sha256();
  }
}

}  // namespace

SigningKey::~SigningKey() { EVP_PKEY_free(Pkey(pkey_)); }

Result<std::unique_ptr<SigningKey>> SigningKey::FromPem(std::string_view pem) {
  if (pem.find("ENCRYPTED") != std::string_view::npos) {
    return MakeError(Module::kDaemon, Errc::kUnsupported,
                     "encrypted private keys (such as cosign.key) are not supported; use an "
                     "unencrypted PEM key, e.g. openssl genpkey -algorithm EC -pkeyopt "
                     "ec_paramgen_curve:P-256");
  }
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pkey == nullptr) {
    ERR_clear_error();
    return MakeError(Module::kDaemon, Errc::kInvalidArgument, "cannot read the PEM private key");
  }
  std::unique_ptr<SigningKey> key(new SigningKey());
  key->pkey_ = pkey;
  return key;
}

Result<std::string> SigningKey::Sign(std::string_view message) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t len = 0;
  const auto* m = reinterpret_cast<const unsigned char*>(message.data());
  std::string sig;
  bool ok = EVP_DigestSignInit(ctx, nullptr, DigestFor(Pkey(pkey_)), nullptr, Pkey(pkey_)) == 1 &&
            EVP_DigestSign(ctx, nullptr, &len, m, message.size()) == 1;
  if (ok) {
    sig.resize(len);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, m,
                        message.size()) == 1;
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    ERR_clear_error();
    return MakeError(Module::kDaemon, Errc::kInternal, "signing failed");
  }
  return sig;
}

std::string SigningKey::PublicPem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, Pkey(pkey_));
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

namespace {

asio::awaitable<Result<SignResult>> Sign(RegistryClient& registry, const verify::Reference& ref,
                                         const SigningKey& key) {
  const std::string wanted = ref.has_digest() ? ref.digest()->ToString()
                             : ref.has_tag()   ? ref.tag()
                                               : std::string("latest");
  auto manifest = co_await registry.GetManifest(ref, wanted);
  if (!manifest) co_return manifest.error();
  SignResult result{.manifest = manifest->digest,
                    .signature_tag = "sha256-" + std::string(manifest->digest.hex()) + ".sig"};
  // The payload cosign writes: the repository (no tag) and the manifest digest.
  nlohmann::ordered_json payload = {
      {"critical",
       {{"identity", {{"docker-reference", ref.Name()}}},
        {"image", {{"docker-manifest-digest", manifest->digest.ToString()}}},
        {"type", std::string(verify::kCosignSignatureType)}}},
      {"optional", nullptr}};
  result.payload = payload.dump();
  auto sig = key.Sign(result.payload);
  if (!sig) co_return sig.error();
  const std::string sig_b64 = verify::Base64Encode(*sig);
  const verify::Digest payload_digest =
      verify::Hasher::Of(verify::DigestAlgorithm::kSha256, result.payload);

  // Keep any signatures already attached; add ours unless the same signature is there.
  nlohmann::json layers = nlohmann::json::array();
  auto existing = co_await registry.GetManifest(ref, result.signature_tag);
  if (existing) {
    auto j = nlohmann::json::parse(existing->bytes, nullptr, false);
    if (!j.is_discarded() && j.contains("layers") && j["layers"].is_array()) layers = j["layers"];
  } else if (existing.error().code() != Errc::kNotFound) {
    co_return existing.error();
  }
  nlohmann::json layer = {
      {"mediaType", std::string(verify::media::kCosignSimpleSigning)},
      {"size", result.payload.size()},
      {"digest", payload_digest.ToString()},
      {"annotations", {{std::string(verify::kCosignSignatureAnnotation), sig_b64}}}};
  bool present = false;
  for (const auto& l : layers) present = present || l == layer;
  if (!present) layers.push_back(layer);

  nlohmann::json diff_ids = nlohmann::json::array();
  for (const auto& l : layers) diff_ids.push_back(l.value("digest", ""));
  const std::string config = nlohmann::json{{"architecture", ""},
                                            {"os", ""},
                                            {"config", nlohmann::json::object()},
                                            {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}}
                                 .dump();
  auto pushed = co_await registry.PushBlob(ref, result.payload);
  if (!pushed) co_return pushed.error();
  auto pushed_config = co_await registry.PushBlob(ref, config);
  if (!pushed_config) co_return pushed_config.error();
  const nlohmann::json sig_manifest = {
      {"schemaVersion", 2},
      {"mediaType", std::string(verify::media::kOciManifest)},
      {"config",
       {{"mediaType", std::string(verify::media::kOciConfig)},
        {"size", config.size()},
        {"digest", verify::Hasher::Of(verify::DigestAlgorithm::kSha256, config).ToString()}}},
      {"layers", layers}};
  auto put = co_await registry.PutManifest(ref, result.signature_tag, sig_manifest.dump(),
                                           std::string(verify::media::kOciManifest));
  if (!put) co_return put.error();
  co_return result;
}

}  // namespace

Result<SignResult> SignImage(const daemon::Config& config, const verify::Reference& ref,
                             const SigningKey& key) {
  asio::io_context io;
  RegistryClient registry(io, config);
  std::optional<Result<SignResult>> result;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { result.emplace(co_await Sign(registry, ref, key)); },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  if (!result) return MakeError(Module::kDaemon, Errc::kInternal, "signing did not run");
  return std::move(*result);
}

}  // namespace digestd::signing
