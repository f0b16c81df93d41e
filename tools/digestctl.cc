// digestctl: the operator's tool.
//
// Offline commands (no daemon needed):
//   fsck              re-hash every blob of a store (the daemon must not hold it)
//   verify-signature  check one cosign signature with one public key
//   verify-image      the full policy decision for an image from files fetched from a registry
//   policy eval       what the policy says about a reference before anything is fetched
//
// Exit codes: 0 valid / allowed / clean; 1 invalid / denied / problems found; 2 bad input or a
// failure to run. The reason is always printed.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "daemon/config.h"
#include "daemon/registry_client.h"
#include "daemon/signer.h"
#include "store/store.h"
#include "verify/base64.h"
#include "verify/evidence_dir.h"
#include "verify/hasher.h"
#include "verify/oci.h"
#include "verify/policy.h"
#include "verify/public_key.h"
#include "verify/reference.h"
#include "verify/trust.h"

namespace {

using digestd::Error;
using digestd::store::Store;
using digestd::store::StoreOptions;
namespace verify = digestd::verify;

constexpr int kOk = 0, kDenied = 1, kBadInput = 2;

int BadInput(std::string_view cmd, const Error& e) {
  std::cerr << "digestctl " << cmd << ": " << e.ToString() << "\n";
  return kBadInput;
}

std::string TrimTrailingSpace(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) {
    s.pop_back();
  }
  return s;
}

std::int64_t NowOr(const std::string& at) {
  if (!at.empty()) {
    auto t = verify::ParseRfc3339(at);
    if (t) return *t;
  }
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int PrintDecision(const verify::Decision& d, bool json, const std::vector<std::string>& notes) {
  if (json) {
    auto j = nlohmann::json::parse(d.ToJson());
    j["notes"] = notes;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << (d.allowed ? "ALLOWED" : "DENIED") << " scope=" << d.scope
              << " requirement=" << d.requirement;
    if (!d.signer.empty()) std::cout << " signer=" << d.signer;
    std::cout << "\n" << d.reason << "\n";
    for (const auto& n : notes) std::cout << "note: " << n << "\n";
  }
  return d.allowed ? kOk : kDenied;
}

int RunFsck(const std::string& root, bool repair, bool json) {
  auto store = Store::Open(StoreOptions{.root = root, .create = false});
  if (!store) return BadInput("fsck", store.error());
  auto report = (*store)->Fsck(repair);
  if (!report) return BadInput("fsck", report.error());
  const auto& rr = (*store)->recovery();
  if (json) {
    nlohmann::json j = {{"blobs_checked", report->blobs_checked},
                        {"bytes_hashed", report->bytes_hashed},
                        {"clean", report->clean()},
                        {"recovery",
                         {{"staging_removed", rr.staging_removed},
                          {"orphans_adopted", rr.orphans_adopted},
                          {"orphans_removed", rr.orphans_removed},
                          {"records_dropped", rr.records_dropped},
                          {"bad_records", rr.bad_records}}},
                        {"problems", nlohmann::json::array()}};
    for (const auto& p : report->problems) {
      j["problems"].push_back({{"what", p.what}, {"detail", p.detail}, {"repaired", p.repaired}});
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("recovery at open: staging_removed=%llu orphans_adopted=%llu orphans_removed=%llu "
                "records_dropped=%llu bad_records=%llu\n",
                static_cast<unsigned long long>(rr.staging_removed),
                static_cast<unsigned long long>(rr.orphans_adopted),
                static_cast<unsigned long long>(rr.orphans_removed),
                static_cast<unsigned long long>(rr.records_dropped),
                static_cast<unsigned long long>(rr.bad_records));
    for (const auto& p : report->problems) {
      std::printf("%-18s %s%s\n", p.what.c_str(), p.detail.c_str(),
                  p.repaired ? " [repaired]" : "");
    }
    std::printf("checked %llu blobs, hashed %llu bytes: %s\n",
                static_cast<unsigned long long>(report->blobs_checked),
                static_cast<unsigned long long>(report->bytes_hashed),
                report->clean() ? "clean" : (repair ? "problems repaired" : "PROBLEMS FOUND"));
  }
  return report->clean() ? kOk : kDenied;
}

int RunVerifySignature(const std::string& key_path, const std::string& payload_path,
                       const std::string& sig_path) {
  constexpr std::string_view kCmd = "verify-signature";
  auto pem = verify::ReadFileCapped(key_path, 64 << 10);
  if (!pem) return BadInput(kCmd, pem.error());
  auto key = verify::PublicKey::FromPem(*pem);
  if (!key) return BadInput(kCmd, std::move(key).error().Wrap("key " + key_path));
  auto payload = verify::ReadFileCapped(payload_path, verify::kMaxBundle);
  if (!payload) return BadInput(kCmd, payload.error());
  auto sig_text = verify::ReadFileCapped(sig_path, 64 << 10);
  if (!sig_text) return BadInput(kCmd, sig_text.error());
  auto sig = verify::Base64Decode(TrimTrailingSpace(*sig_text));
  if (!sig) return BadInput(kCmd, std::move(sig).error().Wrap("signature file " + sig_path));
  if (auto ok = (*key)->Verify(*payload, *sig); !ok) {
    std::cout << "INVALID: " << ok.error().context() << "\n";
    return kDenied;
  }
  std::cout << "Verified OK (key " << (*key)->fingerprint() << ", "
            << verify::ToString((*key)->type()) << ")\n";
  return kOk;
}

int RunVerifyImage(const std::string& trust_path, const std::string& policy_path,
                   const std::string& manifest_path, const std::string& reference,
                   const std::string& sigdir, const std::string& at, bool json) {
  constexpr std::string_view kCmd = "verify-image";
  auto policy = verify::Policy::LoadFile(policy_path);
  if (!policy) return BadInput(kCmd, policy.error());
  std::optional<verify::TrustRoot> trust;
  if (!trust_path.empty()) {
    auto t = verify::TrustRoot::LoadFile(trust_path);
    if (!t) return BadInput(kCmd, t.error());
    trust = std::move(*t);
  }
  auto ref = verify::Reference::Parse(reference);
  if (!ref) return BadInput(kCmd, ref.error());
  auto manifest = verify::ReadFileCapped(manifest_path, verify::kDefaultManifestCap);
  if (!manifest) return BadInput(kCmd, manifest.error());
  // The digest is computed from the exact bytes; the document is not re-serialised.
  const verify::Digest digest = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, *manifest);
  auto evidence = verify::LoadEvidenceDir(sigdir);
  if (!evidence) return BadInput(kCmd, evidence.error());
  const auto decision = policy->Evaluate(*ref, digest, evidence->evidence,
                                         trust ? &*trust : nullptr, NowOr(at));
  return PrintDecision(decision, json, evidence->notes);
}

int RunPolicyEval(const std::string& policy_path, const std::string& trust_path,
                  const std::string& reference, bool json) {
  constexpr std::string_view kCmd = "policy eval";
  auto policy = verify::Policy::LoadFile(policy_path);
  if (!policy) return BadInput(kCmd, policy.error());
  if (!trust_path.empty()) {
    if (auto t = verify::TrustRoot::LoadFile(trust_path); !t) return BadInput(kCmd, t.error());
  }
  auto ref = verify::Reference::Parse(reference);
  if (!ref) return BadInput(kCmd, ref.error());
  verify::Decision d = policy->PreCheck(*ref);
  if (d.allowed) {
    const auto [scope, reqs] = policy->ScopeFor(*ref);
    d.scope = scope;
    d.requirement = "insecureAcceptAnything";
    d.reason = ref->String() + " is allowed without a signature (scope " + scope + ")";
    for (const auto& r : *reqs) {
      if (r.type == verify::RequirementType::kReject) {
        d.allowed = false;
        d.requirement = "reject";
        d.reason = "policy rejects " + ref->String() + " (scope " + scope + ")";
        break;
      }
      if (r.type == verify::RequirementType::kSigstoreSigned) {
        d.requirement = "sigstoreSigned";
        std::string keys;
        for (const auto& k : r.keys) keys += (keys.empty() ? "" : ", ") + k.label;
        for (const auto& k : r.key_ids) keys += (keys.empty() ? "" : ", ") + k;
        d.reason = ref->String() + " is allowed if signed by one of [" + keys + "] (scope " +
                   scope + ")";
      }
    }
  }
  return PrintDecision(d, json, {});
}

int RunSign(const std::string& key_path, const std::string& config_path, bool insecure,
            const std::string& reference) {
  constexpr std::string_view kCmd = "sign";
  namespace daemon = digestd::daemon;
  auto ref = verify::Reference::Parse(reference);
  if (!ref) return BadInput(kCmd, ref.error());
  auto pem = verify::ReadFileCapped(key_path, 64 << 10);
  if (!pem) return BadInput(kCmd, pem.error());
  auto key = daemon::SigningKey::FromPem(*pem);
  if (!key) return BadInput(kCmd, key.error());
  daemon::Config config;
  if (!config_path.empty()) {
    auto c = daemon::LoadConfig(config_path);
    if (!c) return BadInput(kCmd, c.error());
    config = std::move(*c);
  }
  if (insecure && !config.FindRegistry(ref->registry())) {
    config.registries.push_back({.host = ref->registry(), .insecure = true});
  }
  boost::asio::io_context io;
  daemon::RegistryClient registry(io, config);
  std::optional<digestd::Result<daemon::SignResult>> result;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        result.emplace(co_await daemon::SignImage(registry, *ref, **key));
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  if (!result || !*result) {
    std::cerr << "digestctl sign: " << (result ? (*result).error().ToString() : "did not run")
              << "\n";
    return kDenied;
  }
  std::cout << "Signed " << ref->Name() << "@" << (*result)->manifest.ToString() << "\n"
            << "pushed " << ref->Name() << ":" << (*result)->signature_tag << "\n";
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"digestctl: inspect and operate a digestd host"};
  app.require_subcommand(1);
  bool json = false;
  app.add_flag("--json", json, "machine-readable output");

  std::string root;
  bool repair = false;
  auto* fsck = app.add_subcommand("fsck", "re-hash every blob of a store (offline)");
  fsck->add_option("--root", root, "store root")->required();
  fsck->add_flag("--repair", repair, "remove what is corrupt, adopt valid orphans");

  std::string key, payload, signature;
  auto* vsig = app.add_subcommand("verify-signature", "verify one cosign signature with a key");
  vsig->add_option("--key", key, "public key (SPKI PEM)")->required();
  vsig->add_option("--payload", payload, "the signed payload, exact bytes")->required();
  vsig->add_option("--signature", signature, "base64 signature text")->required();

  std::string trust, policy, manifest, reference, sigdir, at;
  auto* vimg = app.add_subcommand("verify-image", "policy decision for an image from files");
  vimg->add_option("--trust", trust, "trust file (keys, windows, revocations)");
  vimg->add_option("--policy", policy, "policy file")->required();
  vimg->add_option("--manifest", manifest, "the image manifest, exact bytes")->required();
  vimg->add_option("--reference", reference, "the reference the image was pulled as")->required();
  vimg->add_option("--time", at, "evaluate at this RFC 3339 time instead of now");
  vimg->add_option("sigdir", sigdir, "directory with the signatures as fetched")->required();

  auto* pol = app.add_subcommand("policy", "policy tools");
  pol->require_subcommand(1);
  std::string eval_ref;
  auto* eval = pol->add_subcommand("eval", "what the policy says about a reference");
  eval->add_option("--policy", policy, "policy file")->required();
  eval->add_option("--trust", trust, "trust file");
  eval->add_option("reference", eval_ref, "image reference")->required();

  std::string sign_key, sign_config, sign_ref;
  bool sign_insecure = false;
  auto* sign = app.add_subcommand("sign", "sign an image in a registry as cosign does");
  sign->add_option("--key", sign_key, "unencrypted PEM private key")->required();
  sign->add_option("--config", sign_config, "digestd config (registries, CAs, auth)");
  sign->add_flag("--insecure", sign_insecure, "plain HTTP to the image's registry");
  sign->add_option("reference", sign_ref, "image reference (tag or digest)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kBadInput;
  }
  if (*fsck) return RunFsck(root, repair, json);
  if (*vsig) return RunVerifySignature(key, payload, signature);
  if (*vimg) return RunVerifyImage(trust, policy, manifest, reference, sigdir, at, json);
  if (*eval) return RunPolicyEval(policy, trust, eval_ref, json);
  if (*sign) return RunSign(sign_key, sign_config, sign_insecure, sign_ref);
  return kBadInput;
}
