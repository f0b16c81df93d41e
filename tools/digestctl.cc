// digestctl: the operator's tool.
//
// Offline commands (no daemon needed):
//   fsck              re-hash every blob of a store (the daemon must not hold it)
//   verify-signature  check one cosign signature with one public key
//   verify-bundle     a sigstore bundle (keyless or key-signed) against a trusted root
//   verify-image      the full policy decision for an image from files fetched from a registry
//   policy eval       what the policy says about a reference before anything is fetched
//
// Exit codes: 0 valid / allowed / clean; 1 invalid / denied / problems found; 2 bad input or a
// failure to run. The reason is always printed.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <limits>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <map>

#include "tools/api_client.h"
#include "tools/human.h"
#include <nlohmann/json.hpp>


#include "daemon/config.h"
#include "daemon/registry_client.h"
#include "signing/signer.h"
#include "store/store.h"
#include "verify/base64.h"
#include "verify/evidence_dir.h"
#include "verify/hasher.h"
#include "verify/keyless.h"
#include "verify/sigstore_root.h"
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
  return digestd::SystemSeconds();
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
                        {"files_checked", report->files_checked},
                        {"trees_checked", report->trees_checked},
                        {"bytes_hashed", report->bytes_hashed},
                        {"clean", report->clean()},
                        {"recovery",
                         {{"staging_removed", rr.staging_removed},
                          {"uncommitted_removed", rr.uncommitted_removed},
                          {"orphans_removed", rr.orphans_removed},
                          {"records_dropped", rr.records_dropped},
                          {"bad_records", rr.bad_records},
                          {"leases_dropped", rr.leases_dropped},
                          {"quarantined", rr.quarantined},
                          {"images_broken", rr.images_broken}}},
                        {"problems", nlohmann::json::array()}};
    for (const auto& p : report->problems) {
      j["problems"].push_back({{"what", p.what}, {"detail", p.detail}, {"repaired", p.repaired}});
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("recovery at open: staging_removed=%llu uncommitted_removed=%llu "
                "orphans_removed=%llu records_dropped=%llu bad_records=%llu quarantined=%llu\n",
                static_cast<unsigned long long>(rr.staging_removed),
                static_cast<unsigned long long>(rr.uncommitted_removed),
                static_cast<unsigned long long>(rr.orphans_removed),
                static_cast<unsigned long long>(rr.records_dropped),
                static_cast<unsigned long long>(rr.bad_records),
                static_cast<unsigned long long>(rr.quarantined));
    for (const auto& ref : rr.images_broken) std::printf("image-broken       %s\n", ref.c_str());
    for (const auto& p : report->problems) {
      std::printf("%-18s %s%s\n", p.what.c_str(), p.detail.c_str(),
                  p.repaired ? " [repaired]" : "");
    }
    std::printf("checked %llu blobs, %llu file objects and %llu trees, hashed %llu bytes: %s\n",
                static_cast<unsigned long long>(report->blobs_checked),
                static_cast<unsigned long long>(report->files_checked),
                static_cast<unsigned long long>(report->trees_checked),
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

int RunVerifyBundle(const std::string& root_path, const std::string& bundle_path,
                    const std::string& artifact_path, const std::string& artifact_digest,
                    const std::string& key_path, const std::string& key_from,
                    const std::string& key_until, const std::string& identity,
                    const std::string& issuer, bool json) {
  constexpr std::string_view kCmd = "verify-bundle";
  if (artifact_path.empty() == artifact_digest.empty()) {
    return BadInput(kCmd, digestd::MakeError(digestd::Module::kTools, digestd::Errc::kInvalidArgument,
                                    "give exactly one of --artifact and --artifact-digest"));
  }
  if (identity.empty() != issuer.empty()) {
    return BadInput(kCmd, digestd::MakeError(digestd::Module::kTools, digestd::Errc::kInvalidArgument,
                                    "--identity and --issuer go together"));
  }
  auto root = verify::SigstoreTrustedRoot::LoadFile(root_path);
  if (!root) return BadInput(kCmd, root.error());
  auto bundle = verify::ReadFileCapped(bundle_path, verify::kMaxBundle);
  if (!bundle) return BadInput(kCmd, bundle.error());
  verify::BundleArtifact artifact;
  if (!artifact_path.empty()) {
    auto bytes = verify::ReadFileCapped(artifact_path, 256u << 20);
    if (!bytes) return BadInput(kCmd, bytes.error());
    artifact.bytes = std::move(*bytes);
  } else {
    auto d = verify::Digest::Parse(artifact_digest);
    if (!d) return BadInput(kCmd, d.error());
    artifact.digest = *d;
  }
  verify::BundleExpectation expect{.identity = identity, .issuer = issuer};
  if (!key_path.empty()) {
    auto pem = verify::ReadFileCapped(key_path, 64 << 10);
    if (!pem) return BadInput(kCmd, pem.error());
    auto key = verify::PublicKey::FromPem(*pem);
    if (!key) return BadInput(kCmd, std::move(key).error().Wrap("key " + key_path));
    expect.key = *key;
  }
  if (!key_from.empty() || !key_until.empty()) {
    if (key_path.empty()) {
      return BadInput(kCmd, digestd::MakeError(digestd::Module::kTools, digestd::Errc::kInvalidArgument,
                                               "--key-valid-from/--key-valid-until need --key"));
    }
    verify::ValidFor window;
    if (!key_from.empty()) {
      auto t = verify::ParseRfc3339(key_from);
      if (!t) return BadInput(kCmd, t.error());
      window.start = *t;
    } else {
      window.start = std::numeric_limits<std::int64_t>::min();
    }
    if (!key_until.empty()) {
      auto t = verify::ParseRfc3339(key_until);
      if (!t) return BadInput(kCmd, t.error());
      window.end = *t;
    }
    expect.key_valid = window;
  }
  auto v = verify::VerifyBundle(*bundle, artifact, *root, expect);
  if (!v) {
    const std::string& why = v.error().context();
    const std::string reason = why.substr(0, why.find(':'));
    if (json) {
      std::cout << nlohmann::json{{"valid", false}, {"reason", reason}, {"detail", why}}.dump()
                << "\n";
    } else {
      std::cout << "INVALID: " << why << "\n";
    }
    return kDenied;
  }
  if (json) {
    std::cout << nlohmann::json{{"valid", true}, {"keyless", v->keyless},
                                {"identity", v->identity}, {"issuer", v->issuer},
                                {"trustedTimes", v->trusted_times}}.dump()
              << "\n";
  } else {
    std::cout << "Verified OK";
    if (v->keyless) std::cout << " (identity " << v->identity << ", issuer " << v->issuer << ")";
    std::cout << ", signed at " << verify::FormatRfc3339(v->trusted_times.front()) << "\n";
  }
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
  const verify::Decision d = policy->Explain(*ref);
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
  auto key = digestd::signing::SigningKey::FromPem(*pem);
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
  auto result = digestd::signing::SignImage(config, *ref, **key);
  if (!result) {
    std::cerr << "digestctl sign: " << result.error().ToString() << "\n";
    return kDenied;
  }
  std::cout << "Signed " << ref->Name() << "@" << result->manifest.ToString() << "\n"
            << "pushed " << ref->Name() << ":" << result->signature_tag << "\n";
  return kOk;
}


// ---- client of the control API

constexpr int kUnreachable = 3;
// sysexits' EX_TEMPFAIL: the request was cut short by digestd stopping or restarting; nothing it
// did was committed, and the same command can simply run again.
constexpr int kRetry = 75;

int ExitFor(int status) {
  if (status >= 200 && status < 300) return kOk;
  if (status == 403 || status == 404 || status >= 500) return kDenied;
  return kBadInput;
}

std::string ErrorText(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"];
  return body;
}

// Calls the API. Without a 2xx answer, says why on stderr, sets *exit_code and returns nullopt.
std::optional<digestd::tools::ApiResponse> Call(
    const std::string& socket, const std::string& method, const std::string& target,
    const std::string& body, int* exit_code,
    const std::function<void(std::string_view)>& on_line = {}) {
  auto r = digestd::tools::CallApi(socket, method, target, body, on_line);
  if (!r) {
    std::cerr << "digestctl: " << r.error().ToString() << "\n";
    *exit_code = kUnreachable;
    return std::nullopt;
  }
  if (r->status < 200 || r->status >= 300) {
    std::cerr << "digestctl: " << r->status << ": " << digestd::tools::Printable(ErrorText(r->body))
              << "\n";
    *exit_code = ExitFor(r->status);
    return std::nullopt;
  }
  return std::move(*r);
}

int RunApi(const std::string& socket, const std::string& method, const std::string& target,
           const std::string& body, bool json, const std::function<void(const nlohmann::json&)>& human) {
  int exit_code = kOk;
  auto r = Call(socket, method, target, body, &exit_code);
  if (!r) return exit_code;
  if (json || !human) {
    std::cout << r->body;
    return kOk;
  }
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded()) {
    std::cout << r->body;
  } else {
    human(j);
  }
  return kOk;
}

// A committed image's decision (the API's objects carry no "allowed": they were admitted).
nlohmann::json Admitted(nlohmann::json decision) {
  decision["allowed"] = true;
  return decision;
}

int RunPull(const std::string& socket, const std::string& reference, const std::string& tenant,
            bool json) {
  nlohmann::json req{{"reference", reference}};
  if (!tenant.empty()) req["tenant"] = tenant;
  const bool tty = ::isatty(STDERR_FILENO) == 1 && !json;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> blobs;  // digest -> bytes/total
  nlohmann::json last;
  nlohmann::json decision;  // the policy's, once the pull has one
  auto on_line = [&](std::string_view line) {
    if (json) {
      std::cout << line << "\n" << std::flush;
    }
    auto e = nlohmann::json::parse(line, nullptr, false);
    if (!e.is_object()) return;
    const std::string type = e.value("type", "");
    if (type == "result" || type == "error") {
      last = e;
      return;
    }
    if (json) return;
    if (type == "blob") {
      blobs[e.value("digest", "")] = {e.value("bytes", std::uint64_t{0}), e.value("total", std::uint64_t{0})};
      if (tty) {
        std::uint64_t done = 0, total = 0;
        for (const auto& [d, bt] : blobs) {
          done += bt.first;
          total += bt.second;
        }
        const int width = 30;
        const int filled = total ? static_cast<int>(width * static_cast<double>(done) / static_cast<double>(total)) : 0;
        std::cerr << "\r  [" << std::string(filled, '#') << std::string(width - filled, ' ') << "] "
                  << done / (1 << 20) << "/" << total / (1 << 20) << " MiB, " << blobs.size()
                  << " blobs" << std::flush;
      }
      return;
    }
    if (tty && !blobs.empty()) std::cerr << "\n";
    if (type == "policy") {  // the decision, as an object in "detail"
      decision = nlohmann::json::parse(e.value("detail", ""), nullptr, false);
      if (decision.is_object()) {
        std::cerr << "  policy: " << digestd::tools::DecisionLine(decision) << "\n";
        return;
      }
    }
    using digestd::tools::Printable;
    std::cerr << "  " << Printable(type);
    if (e.contains("detail")) std::cerr << ": " << Printable(e.value("detail", ""));
    if (e.contains("digest")) std::cerr << " " << Printable(e.value("digest", ""));
    std::cerr << "\n";
  };
  int exit_code = kOk;
  if (!Call(socket, "POST", "/v1/pull?stream=1", req.dump(), &exit_code, on_line)) return exit_code;
  if (last.is_null()) {
    std::cerr << "digestctl: the pull was cut short: digestd stopped or restarted before it "
                 "finished; nothing of it was committed (its staged blobs are removed at the next "
                 "start): run the pull again\n";
    return kRetry;
  }
  if (last.value("type", "") == "error") {
    if (!json && decision.is_object() && !decision.value("allowed", true)) {
      // One line naming the rule and its scope, then what to do next.
      std::cerr << digestd::tools::RefusalText(reference, decision);
      return kDenied;
    }
    std::cerr << "digestctl: pull refused: " << digestd::tools::Printable(last.value("error", ""))
              << "\n";
    return last.value("code", "") == "invalid-argument" ? kBadInput : kDenied;
  }
  if (!json) {
    std::cout << "pulled   " << last.value("reference", "") << "\n"
              << "manifest " << last.value("manifest", "") << "\n"
              << "image    " << last.value("image_manifest", "") << "\n"
              << "policy   " << digestd::tools::DecisionLine(Admitted(last)) << "\n"
              << "rootfs   " << last.value("rootfs", "") << "\n"
              << "lowerdir " << last.value("lowerdir_file", "") << "\n";
  }
  return kOk;
}

// An image named by digest, or by a reference pulled before (looked up in /v1/images).
std::string ResolveImage(const std::string& socket, const std::string& what) {
  if (what.starts_with("sha256:")) return what;
  auto r = digestd::tools::CallApi(socket, "GET", "/v1/images", "");
  if (!r || r->status != 200) return what;
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (!j.is_array()) return what;
  for (const auto& i : j) {
    const std::string ref = i.value("reference", "");
    if (ref == what || ref.ends_with("/" + what) || ref == "docker.io/" + what) return i.value("digest", what);
  }
  return what;
}

// OCI runtime poststop hook: the runtime-spec state JSON on stdin; releases (with wipe) the lease
// named by the annotation org.digestd.lease.
int RunHookPoststop(const std::string& socket) {
  std::string state((std::istreambuf_iterator<char>(std::cin)), {});
  if (state.size() > (1u << 20)) {
    std::cerr << "digestctl hook: state over 1 MiB\n";
    return kBadInput;
  }
  auto j = nlohmann::json::parse(state, nullptr, false);
  if (!j.is_object() || !j.contains("ociVersion") || !j.contains("id")) {
    std::cerr << "digestctl hook: stdin is not an OCI runtime state (ociVersion, id, ...)\n";
    return kBadInput;
  }
  const auto ann = j.find("annotations");
  if (ann == j.end() || !ann->is_object() || !ann->contains("org.digestd.lease") ||
      !(*ann)["org.digestd.lease"].is_string()) {
    std::cerr << "digestctl hook: container " << j["id"].dump()
              << " has no org.digestd.lease annotation; nothing to release\n";
    return kOk;
  }
  const std::string lease = (*ann)["org.digestd.lease"];
  auto name_ok = [](const std::string& v) {
    if (v.empty() || v.size() > 128) return false;
    for (char c : v) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
        return false;
      }
    }
    return true;
  };
  if (!name_ok(lease)) {
    std::cerr << "digestctl hook: bad lease id in org.digestd.lease\n";
    return kBadInput;
  }
  // The release is on this container's behalf: digestd releases the lease only if it was created
  // for this container (lease create --container) and, when the annotations name a tenant, for
  // that tenant. Another tenant's container naming our lease is refused (and audited).
  const std::string container = j["id"].is_string() ? j["id"].get<std::string>() : "";
  if (!name_ok(container)) {
    std::cerr << "digestctl hook: the state's container id is not [A-Za-z0-9._-]{1,128}\n";
    return kBadInput;
  }
  std::string query = "?wipe=1&container=" + container;
  if (auto t = ann->find("org.digestd.tenant"); t != ann->end()) {
    if (!t->is_string() || !name_ok(t->get<std::string>())) {
      std::cerr << "digestctl hook: bad tenant in org.digestd.tenant\n";
      return kBadInput;
    }
    query += "&tenant=" + t->get<std::string>();
  }
  return RunApi(socket, "DELETE", "/v1/leases/" + lease + query, "", false,
                [&](const nlohmann::json& r) {
                  std::cerr << "digestctl hook: released lease " << lease << " of container "
                            << j["id"].get<std::string>() << ", wiped " << r["blobs"].size()
                            << " blobs and " << r.value("files", 0) << " files\n";
                });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"digestctl: inspect and operate a digestd host"};
  app.require_subcommand(1);
  // --json and --socket work before or after the subcommand (`digestctl audit --json`).
  app.fallthrough();
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

  std::string vb_root, vb_bundle, vb_artifact, vb_digest, vb_key, vb_identity, vb_issuer,
      vb_key_from, vb_key_until;
  auto* vbundle = app.add_subcommand("verify-bundle", "verify a sigstore bundle offline");
  vbundle->add_option("--trusted-root", vb_root, "sigstore trusted_root.json")->required();
  vbundle->add_option("--bundle", vb_bundle, "the bundle (.sigstore.json)")->required();
  vbundle->add_option("--artifact", vb_artifact, "the signed file");
  vbundle->add_option("--artifact-digest", vb_digest, "or its digest, sha256:HEX");
  vbundle->add_option("--key", vb_key, "public key (SPKI PEM) of a key-signed bundle");
  vbundle->add_option("--key-valid-from", vb_key_from, "the key's validity start (RFC 3339)");
  vbundle->add_option("--key-valid-until", vb_key_until, "the key's validity end (RFC 3339)");
  vbundle->add_option("--identity", vb_identity, "required certificate identity (SAN)");
  vbundle->add_option("--issuer", vb_issuer, "required OIDC issuer");

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

  std::string socket = "/run/digestd/digestd.sock";
  app.add_option("--socket", socket, "digestd's control socket");
  std::string pull_ref, pull_tenant;
  auto* pull = app.add_subcommand("pull", "pull, verify and commit an image (via digestd)");
  pull->add_option("--tenant", pull_tenant, "tenant whose credentials and lease this is");
  pull->add_option("reference", pull_ref, "image reference")->required();
  auto* health = app.add_subcommand("health", "is digestd up; store and mount");
  auto* images = app.add_subcommand("images", "list pulled images (references)");
  std::uint64_t since = 0;
  auto* audit = app.add_subcommand("audit", "audit events since a sequence number");
  audit->add_option("--since", since, "first sequence number to show");
  auto* deny = app.add_subcommand("deny", "the deny list");
  deny->require_subcommand(1);
  std::string deny_digest, deny_reason;
  auto* deny_add = deny->add_subcommand("add", "deny a digest (it vanishes from the mount)");
  deny_add->add_option("digest", deny_digest)->required();
  deny_add->add_option("--reason", deny_reason, "why");
  auto* deny_rm = deny->add_subcommand("rm", "allow a digest again");
  deny_rm->add_option("digest", deny_digest)->required();
  auto* deny_ls = deny->add_subcommand("ls", "list denied digests");
  bool gc_dry = false;
  auto* gc = app.add_subcommand("gc", "collect garbage (unreferenced blobs and file objects)");
  gc->add_flag("--dry-run", gc_dry, "only list what would go");
  std::uint64_t scrub_max = 0, scrub_rate = std::uint64_t{64} << 20;
  bool scrub_repair = false, scrub_restart = false;
  auto* scrub = app.add_subcommand(
      "scrub", "re-hash stored blobs and file objects online, resuming where the last call stopped");
  scrub->add_option("--max-bytes", scrub_max, "stop after about this many bytes (default: a whole pass)");
  scrub->add_option("--rate", scrub_rate, "bytes per second (0: unbounded; default 64 MiB/s)");
  scrub->add_flag("--repair", scrub_repair, "remove what is damaged (its images are pulled again)");
  scrub->add_flag("--restart", scrub_restart, "start a new pass from the beginning");
  auto* reload = app.add_subcommand("reload", "reload policy and trust");
  auto* metrics = app.add_subcommand("metrics", "Prometheus metrics");
  std::string image_arg;
  auto* inspect = app.add_subcommand("inspect", "an image: digests, sizes, platform, signer, rule, leases");
  inspect->add_option("image", image_arg, "digest or pulled reference")->required();
  auto* rm = app.add_subcommand("rm", "drop an image's references and collect what nothing pins");
  rm->add_option("image", image_arg, "digest or pulled reference")->required();
  auto* blobs_cmd = app.add_subcommand("blobs", "list verified blobs");
  auto* layers_cmd = app.add_subcommand("layers", "list unpacked layers");
  std::string eval_api_ref;
  auto* explain = app.add_subcommand("explain", "what the running policy says about a reference (dry run)");
  explain->add_option("reference", eval_api_ref)->required();
  auto* lease = app.add_subcommand("lease", "leases: images pinned for a tenant");
  lease->require_subcommand(1);
  std::string lease_id, lease_tenant, lease_container;
  std::vector<std::string> lease_images;
  bool lease_wipe = false;
  auto* lease_create = lease->add_subcommand("create", "pin images (digests or pulled references)");
  lease_create->add_option("--id", lease_id, "lease id")->required();
  lease_create->add_option("--tenant", lease_tenant, "tenant")->required();
  lease_create->add_option("--container", lease_container,
                           "the container (OCI runtime id) whose poststop hook may release it");
  lease_create->add_option("images", lease_images, "digests or references")->required();
  auto* lease_ls = lease->add_subcommand("ls", "list leases");
  auto* lease_release = lease->add_subcommand("release", "release a lease");
  lease_release->add_option("id", lease_id)->required();
  lease_release->add_flag("--wipe", lease_wipe, "overwrite and remove the tenant's data no other lease uses");
  auto* hook = app.add_subcommand("hook", "OCI runtime hooks");
  hook->require_subcommand(1);
  auto* poststop = hook->add_subcommand(
      "poststop", "release (with wipe) the lease in annotation org.digestd.lease; state on stdin");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kBadInput;
  }
  if (*fsck) return RunFsck(root, repair, json);
  if (*vsig) return RunVerifySignature(key, payload, signature);
  if (*vbundle) {
    return RunVerifyBundle(vb_root, vb_bundle, vb_artifact, vb_digest, vb_key, vb_key_from,
                           vb_key_until, vb_identity, vb_issuer, json);
  }
  if (*vimg) return RunVerifyImage(trust, policy, manifest, reference, sigdir, at, json);
  if (*eval) return RunPolicyEval(policy, trust, eval_ref, json);
  if (*sign) return RunSign(sign_key, sign_config, sign_insecure, sign_ref);
  if (*pull) return RunPull(socket, pull_ref, pull_tenant, json);
  if (*health) {
    return RunApi(socket, "GET", "/v1/health", "", json, [](const nlohmann::json& j) {
      for (const auto& [k, v] : j.items()) std::cout << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    });
  }
  if (*images) {
    return RunApi(socket, "GET", "/v1/images", "", json, [](const nlohmann::json& j) {
      // STORED: the image's blobs (compressed); UNPACKED: what its layers unpack to. Both count
      // towards the quota (shared layers once).
      std::printf("%-50s %-12s %-12s %s\n", "REFERENCE", "STORED", "UNPACKED", "DIGEST");
      for (const auto& i : j) {
        std::printf("%-50s %-12llu %-12llu %s\n", i.value("reference", "").c_str(),
                    static_cast<unsigned long long>(i.value("bytes", std::uint64_t{0})),
                    static_cast<unsigned long long>(i.value("unpacked_bytes", std::uint64_t{0})),
                    i.value("digest", "").c_str());
      }
    });
  }
  if (*audit) {
    int exit_code = kOk;
    auto r = Call(socket, "GET", "/v1/audit?since=" + std::to_string(since), "", &exit_code);
    if (!r) return exit_code;
    std::cout << (json ? r->body : digestd::tools::AuditTable(r->body));
    return kOk;
  }
  if (*deny_add) {
    return RunApi(socket, "POST", "/v1/deny",
                  nlohmann::json{{"digest", deny_digest}, {"reason", deny_reason}}.dump(), json,
                  [](const nlohmann::json& j) { std::cout << "denied " << j.value("denied", "") << "\n"; });
  }
  if (*deny_rm) {
    return RunApi(socket, "DELETE", "/v1/deny/" + deny_digest, "", json,
                  [](const nlohmann::json& j) { std::cout << "allowed " << j.value("allowed", "") << "\n"; });
  }
  if (*deny_ls) {
    return RunApi(socket, "GET", "/v1/deny", "", json, [](const nlohmann::json& j) {
      for (const auto& d : j) std::cout << d.value("digest", "") << "  " << d.value("reason", "") << "\n";
    });
  }
  if (*gc) {
    return RunApi(socket, "POST", "/v1/gc", nlohmann::json{{"dry_run", gc_dry}}.dump(), json,
                  [](const nlohmann::json& j) {
                    std::cout << (j.value("dry_run", false) ? "would free " : "freed ")
                              << j.value("bytes_freed", std::uint64_t{0}) << " bytes in "
                              << j["swept"].size() << " blobs\n";
                  });
  }
  if (*scrub) {
    // Exit 1 when anything damaged was found (as fsck does), 0 when what was checked is clean.
    int exit_code = kOk;
    auto r = Call(socket, "POST", "/v1/scrub",
                  nlohmann::json{{"max_bytes", scrub_max},
                                 {"rate_bytes_per_s", scrub_rate},
                                 {"repair", scrub_repair},
                                 {"restart", scrub_restart}}
                      .dump(),
                  &exit_code);
    if (!r) return exit_code;
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (json || !j.is_object()) {
      std::cout << r->body;
    } else {
      for (const auto& p : j["problems"]) {
        std::printf("%-22s %s%s\n", p.value("what", "").c_str(), p.value("detail", "").c_str(),
                    p.value("repaired", false) ? " [repaired]" : "");
      }
      std::printf("checked %llu blobs and %llu file objects, hashed %llu bytes; %s\n",
                  static_cast<unsigned long long>(j.value("blobs_checked", std::uint64_t{0})),
                  static_cast<unsigned long long>(j.value("files_checked", std::uint64_t{0})),
                  static_cast<unsigned long long>(j.value("bytes_hashed", std::uint64_t{0})),
                  j.value("pass_complete", false) ? "pass complete"
                                                  : "resume with the next call");
    }
    return j.is_object() && !j["problems"].empty() ? 1 : kOk;
  }
  if (*reload) return RunApi(socket, "POST", "/v1/policy/reload", "", json, [](const nlohmann::json&) { std::cout << "reloaded\n"; });
  if (*metrics) return RunApi(socket, "GET", "/v1/metrics", "", true, nullptr);
  if (*lease_create) {
    return RunApi(socket, "POST", "/v1/leases",
                  nlohmann::json{{"id", lease_id}, {"tenant", lease_tenant}, {"container", lease_container}, {"images", lease_images}}.dump(),
                  json, [](const nlohmann::json& j) {
                    std::cout << "lease " << j.value("id", "") << " for " << j.value("tenant", "")
                              << " pins " << j["digests"].size() << " images\n";
                  });
  }
  if (*lease_ls) {
    return RunApi(socket, "GET", "/v1/leases", "", json, [](const nlohmann::json& j) {
      for (const auto& l : j) {
        std::cout << l.value("id", "") << "  " << l.value("tenant", "") << "  " << l["digests"].size() << " images\n";
      }
    });
  }
  if (*lease_release) {
    return RunApi(socket, "DELETE", "/v1/leases/" + lease_id + (lease_wipe ? "?wipe=1" : ""), "", json,
                  [](const nlohmann::json& j) {
                    std::cout << "released " << j.value("lease", "");
                    if (j.value("wiped", false)) {
                      std::cout << ", wiped " << j["blobs"].size() << " blobs ("
                                << j.value("blob_bytes", std::uint64_t{0}) << " bytes) and "
                                << j.value("files", std::uint64_t{0}) << " files ("
                                << j.value("file_bytes", std::uint64_t{0}) << " bytes)";
                    }
                    std::cout << "\n";
                  });
  }
  if (*poststop) return RunHookPoststop(socket);
  if (*inspect) {
    return RunApi(socket, "GET", "/v1/images/" + ResolveImage(socket, image_arg), "", json,
                  [](const nlohmann::json& j) {
                    auto s = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string("-"); };
                    std::cout << "manifest   " << s("manifest") << "\nimage      " << s("image_manifest")
                              << "\nreference  " << s("reference") << "\nplatform   " << s("platform")
                              << "\nsize       " << j.value("size", std::uint64_t{0}) << " bytes\n";
                    if (j.contains("policy")) {
                      const auto& p = j["policy"];
                      std::cout << "policy     " << digestd::tools::DecisionLine(Admitted(p)) << "\n";
                    }
                    std::string leases;
                    for (const auto& l : j["leases"]) leases += (leases.empty() ? "" : ", ") + l.get<std::string>();
                    std::cout << "pulled     " << digestd::tools::IsoUtc(j.value("pulled_at", std::int64_t{0}))
                              << " (UTC)\nleases     " << (leases.empty() ? "-" : leases)
                              << "\nrootfs     " << s("rootfs") << "\nlayers:\n";
                    for (const auto& l : j["layers"]) {
                      std::cout << "  " << l.value("digest", "") << "  " << l.value("size", std::int64_t{0}) << " bytes  "
                                << l.value("entries", std::uint64_t{0}) << " entries\n";
                    }
                  });
  }
  if (*rm) {
    return RunApi(socket, "DELETE", "/v1/images/" + ResolveImage(socket, image_arg), "", json,
                  [](const nlohmann::json& j) {
                    std::cout << "removed " << j["references_removed"].size() << " references, freed "
                              << j.value("bytes_freed", std::uint64_t{0}) << " bytes in " << j["swept"].size() << " blobs\n";
                  });
  }
  if (*blobs_cmd) {
    return RunApi(socket, "GET", "/v1/blobs", "", json, [](const nlohmann::json& j) {
      for (const auto& b : j["blobs"]) {
        std::printf("%s %12llu %s\n", b.value("digest", "").c_str(),
                    static_cast<unsigned long long>(b.value("size", std::uint64_t{0})), b.value("media_type", "").c_str());
      }
    });
  }
  if (*layers_cmd) {
    return RunApi(socket, "GET", "/v1/layers", "", json, [](const nlohmann::json& j) {
      for (const auto& l : j) {
        std::printf("%s %8llu entries %12llu bytes\n", l.value("layer", "").c_str(),
                    static_cast<unsigned long long>(l.value("entries", std::uint64_t{0})),
                    static_cast<unsigned long long>(l.value("file_bytes", std::uint64_t{0})));
      }
    });
  }
  if (*explain) {
    int exit_code = kOk;
    auto r = Call(socket, "POST", "/v1/policy/eval",
                  nlohmann::json{{"reference", eval_api_ref}}.dump(), &exit_code);
    if (!r) return exit_code;
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (json) std::cout << r->body;
    else std::cout << (j.value("allowed", false) ? "allowed: " : "denied: ") << j.value("reason", "") << "\n";
    return j.value("allowed", false) ? kOk : kDenied;
  }
  return kBadInput;
}
