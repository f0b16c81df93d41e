// Pulls from a real registry (Debian's docker-registry on loopback) of images built with umoci and
// pushed with skopeo, signed with the real cosign; policy, signatures and the store all real.

#include "daemon/pull.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <filesystem>
#include <fstream>

#include "integration/registry_fixture.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::daemon {
namespace {

namespace fs = std::filesystem;
using digestd::testing::ImageBuilder;
using digestd::testing::Registry;
using digestd::testing::Shell;
using digestd::testing::TempDir;

template <class T>
T RunSync(asio::io_context& io, asio::awaitable<T> aw) {
  std::optional<T> out;
  // co_spawn wants a default-constructible result; Result<T> is not, so store it ourselves.
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> { out.emplace(co_await std::move(aw)); },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  return std::move(*out);
}

class PullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_unique<Registry>(dir_.path() / "registry");
    ASSERT_TRUE(registry_->Up()) << registry_->Log();
    fs::create_directories(dir_.path() / "keys");
    auto keys = Shell("cd " + (dir_.path() / "keys").string() +
                    " && COSIGN_PASSWORD= " DIGESTD_COSIGN " generate-key-pair");
    ASSERT_EQ(keys.status, 0) << keys.output;
    std::ofstream(dir_.path() / "trust.json") << R"({"keys":[]})";
    WritePolicy(R"({"type":"sigstoreSigned","keyPath":"keys/cosign.pub","signedIdentity":{"type":"matchRepository"}})");
    config_.store_root = dir_.path() / "store";
    config_.policy_path = dir_.path() / "policy.json";
    config_.registries.push_back({.host = registry_->host(), .insecure = true});
    config_.retries = 1;
    auto store = store::Store::Open({.root = config_.store_root});
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    store_ = std::move(*store);
  }

  void WritePolicy(const std::string& requirement, const std::string& org = "") {
    std::ofstream(dir_.path() / "policy.json")
        << R"({"default":[{"type":"reject"}],"transports":{"docker":{")" << registry_->host()
        << R"(":[)" << requirement << "]}}" << (org.empty() ? "" : ",\"digestd\":" + org) << "}";
    policies_ = std::make_unique<verify::PolicySet>(dir_.path() / "policy.json",
                                                    dir_.path() / "trust.json");
    auto r = policies_->Reload();
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
  }

  // Builds and pushes a busybox image; returns its manifest digest.
  std::string PushBusybox(const std::string& repo_tag, const std::string& extra = "") {
    const std::string tag = "t" + std::to_string(++images_);
    EXPECT_EQ(builder_.Busybox(tag), "");
    EXPECT_EQ(builder_.Push(tag, registry_->host() + "/" + repo_tag, extra), "");
    return DigestOf(repo_tag);
  }
  std::string DigestOf(const std::string& repo_tag) {
    auto r = Shell("skopeo inspect --raw --tls-verify=false docker://" + registry_->host() + "/" +
                 repo_tag + " | sha256sum | cut -d' ' -f1");
    EXPECT_EQ(r.status, 0) << r.output;
    return "sha256:" + r.output.substr(0, 64);
  }
  void Sign(const std::string& repo, const std::string& digest) {
    auto r = Shell("cd " + dir_.path().string() + " && COSIGN_PASSWORD= " DIGESTD_COSIGN
                 " sign --key keys/cosign.key --tlog-upload=false --allow-http-registry "
                 "--allow-insecure-registry --yes " +
                 registry_->host() + "/" + repo + "@" + digest);
    ASSERT_EQ(r.status, 0) << r.output;
  }

  Result<PullResult> Pull(const std::string& repo_ref, std::vector<PullEvent>* events = nullptr) {
    asio::io_context io;
    RegistryClient client(io, config_);
    Puller puller(io, *store_, *policies_, config_, client);
    PullOptions opts;
    if (events) opts.on_event = [events](const PullEvent& e) { events->push_back(e); };
    auto r = RunSync(io, puller.Pull(registry_->host() + "/" + repo_ref, opts));
    stats_ = client.stats();
    connections_ = client.http().connections_opened();
    return r;
  }

  std::size_t StagingEntries() const {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator(config_.store_root / "staging")) ++n;
    return n;
  }
  std::string AuditText() {
    std::string all;
    auto events = store_->ReadAudit(0, 10000);
    for (const auto& e : *events) all += e.json + "\n";
    return all;
  }

  TempDir dir_;
  std::unique_ptr<Registry> registry_;
  ImageBuilder builder_{dir_.path() / "images"};
  Config config_;
  store::StorePtr store_;
  std::unique_ptr<verify::PolicySet> policies_;
  RegistryStats stats_;
  std::uint64_t connections_ = 0;
  int images_ = 0;
};

TEST_F(PullTest, SignedImageIsVerifiedCommittedAndRecorded) {
  const std::string digest = PushBusybox("test/busybox:v1");
  Sign("test/busybox", digest);
  std::vector<PullEvent> events;
  auto r = Pull("test/busybox:v1", &events);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->manifest.ToString(), digest);
  EXPECT_TRUE(r->decision.allowed);
  EXPECT_TRUE(r->decision.signer.starts_with("sha256:"));
  ASSERT_EQ(r->layers.size(), 1u);
  // Manifest, config and layer are in the store; the manifest's edges lead to the rest.
  EXPECT_TRUE(store_->Contains(r->manifest));
  EXPECT_TRUE(store_->Contains(r->config));
  EXPECT_TRUE(store_->Contains(r->layers[0]));
  auto children = store_->Children(r->manifest);
  ASSERT_TRUE(children.has_value());
  EXPECT_EQ(children->size(), 2u);
  auto ref = store_->GetRef(registry_->host() + "/test/busybox:v1");
  ASSERT_TRUE(ref.has_value()) << ref.error().ToString();
  EXPECT_EQ(ref->digest.ToString(), digest);
  EXPECT_EQ(StagingEntries(), 0u);
  EXPECT_TRUE(store_->ListLeases()->empty());  // the pull lease is gone
  // Progress events in order.
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().type, "resolving");
  EXPECT_EQ(events.back().type, "committed");
  // Audit: the decision with its rule, and the pull.
  const std::string audit = AuditText();
  EXPECT_NE(audit.find("\"type\":\"policy.allowed\""), std::string::npos) << audit;
  EXPECT_NE(audit.find("\"rule\":\"sigstoreSigned\""), std::string::npos) << audit;
  EXPECT_NE(audit.find("\"type\":\"pulled\""), std::string::npos) << audit;
  // Keep-alive: all requests on few connections.
  EXPECT_LE(connections_, 4u);

  // A second pull fetches nothing again.
  const auto bytes_before = stats_.bytes;
  auto again = Pull("test/busybox:v1");
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(stats_.bytes, 0u) << bytes_before;
}

TEST_F(PullTest, UnsignedImageIsDeniedBeforeAnyLayerAndNothingIsCommitted) {
  PushBusybox("test/unsigned:v1");
  auto r = Pull("test/unsigned:v1");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::kPermission);
  EXPECT_NE(r.error().context().find("no signatures found"), std::string::npos)
      << r.error().ToString();
  EXPECT_EQ(stats_.bytes, 0u);  // no layer was fetched
  EXPECT_EQ(store_->GetUsage().blobs, 0u);
  EXPECT_EQ(StagingEntries(), 0u);
  EXPECT_NE(AuditText().find("\"type\":\"policy.denied\""), std::string::npos);
}

TEST_F(PullTest, TagMovedToAnotherImageIsNotTrustedBySignatureOfTheOld) {
  const std::string d1 = PushBusybox("test/moving:v1");
  Sign("test/moving", d1);
  // Re-tag v1 to a different, unsigned image (tag mutation at the registry).
  EXPECT_EQ(builder_.AddLayer("t1", "echo changed > changed.txt"), "");
  EXPECT_EQ(builder_.Push("t1", registry_->host() + "/test/moving:v1"), "");
  ASSERT_NE(DigestOf("test/moving:v1"), d1);
  auto r = Pull("test/moving:v1");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::kPermission);
  EXPECT_EQ(store_->GetUsage().blobs, 0u);
}

TEST_F(PullTest, DenyListAndDeniedDigestPolicy) {
  const std::string digest = PushBusybox("test/denied:v1");
  Sign("test/denied", digest);
  ASSERT_TRUE(store_->Deny(*verify::Digest::Parse(digest), "CVE-2099-1").has_value());
  auto r = Pull("test/denied:v1");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().context().find("deny list"), std::string::npos) << r.error().ToString();
  ASSERT_TRUE(store_->Undeny(*verify::Digest::Parse(digest)).has_value());
  WritePolicy(R"({"type":"sigstoreSigned","keyPath":"keys/cosign.pub","signedIdentity":{"type":"matchRepository"}})",
              R"({"deniedDigests":[")" + digest + R"("]})");
  auto p = Pull("test/denied:v1");
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().context().find("deniedDigests"), std::string::npos) << p.error().ToString();
  EXPECT_EQ(store_->GetUsage().blobs, 0u);
}

TEST_F(PullTest, RevokedKeyIsRefusedByName) {
  const std::string digest = PushBusybox("test/revoked:v1");
  Sign("test/revoked", digest);
  std::ofstream(dir_.path() / "trust.json")
      << R"({"keys":[{"id":"ci-key","pemPath":"keys/cosign.pub","start":"2020-01-01T00:00:00Z"}],
            "revocations":[{"id":"ci-key","reason":"leaked in incident 42"}]})";
  WritePolicy(R"({"type":"sigstoreSigned","keyIds":["ci-key"],"signedIdentity":{"type":"matchRepository"}})");
  auto r = Pull("test/revoked:v1");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().context().find("key \"ci-key\" is revoked: leaked in incident 42"),
            std::string::npos)
      << r.error().ToString();
  EXPECT_EQ(store_->GetUsage().blobs, 0u);
}

TEST_F(PullTest, MutableTagsDeniedBeforeAnyRequest) {
  WritePolicy(R"({"type":"insecureAcceptAnything"})", R"({"denyMutableTags":true})");
  auto r = Pull("test/anything:v1");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().context().find("pull by digest"), std::string::npos);
  EXPECT_EQ(stats_.requests, 0u);
}

TEST_F(PullTest, DockerSchema2AndMultiLayerWithDeletions) {
  EXPECT_EQ(builder_.Busybox("multi"), "");
  EXPECT_EQ(builder_.AddLayer("multi", "rm hello.txt && mkdir -p etc && echo x > etc/new"), "");
  EXPECT_EQ(builder_.Push("multi", registry_->host() + "/test/docker:v1", "--format v2s2"), "");
  const std::string digest = DigestOf("test/docker:v1");
  Sign("test/docker", digest);
  auto r = Pull("test/docker:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->layers.size(), 2u);
  auto m = store_->Stat(r->manifest);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, "application/vnd.docker.distribution.manifest.v2+json");
}

TEST_F(PullTest, ZstdLayer) {
  EXPECT_EQ(builder_.Busybox("zstd"), "");
  EXPECT_EQ(builder_.Push("zstd", registry_->host() + "/test/zstd:v1",
                          "--dest-compress-format zstd --dest-compress"),
            "");
  const std::string digest = DigestOf("test/zstd:v1");
  auto raw = Shell("skopeo inspect --raw --tls-verify=false docker://" + registry_->host() +
                 "/test/zstd:v1");
  if (raw.output.find("zstd") == std::string::npos) {
    GTEST_SKIP() << "this skopeo did not write a zstd layer: " << raw.output;
  }
  Sign("test/zstd", digest);
  auto r = Pull("test/zstd:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
}

}  // namespace
}  // namespace digestd::daemon
