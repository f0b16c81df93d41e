#pragma once

// Shared fixture for pull tests: a real registry, images built with umoci and pushed with skopeo,
// cosign keys and signatures, a store, a policy, and a synchronous driver for the pull coroutine.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <filesystem>
#include <fstream>

#include <boost/asio/thread_pool.hpp>

#include "daemon/pull.h"
#include "integration/registry_fixture.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::daemon {

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
  // The host pulls go to (a fault proxy may stand in front of the registry).
  virtual std::string PullHost() const { return registry_->host(); }

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
    config_.connect_timeout = std::chrono::milliseconds(2000);
    config_.first_byte_timeout = std::chrono::milliseconds(3000);
    config_.stall_timeout = std::chrono::milliseconds(3000);
    config_.retries = 1;
    auto store = store::Store::Open({.root = config_.store_root});
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    store_ = std::move(*store);
  }

  void WritePolicy(const std::string& requirement, const std::string& org = "") {
    std::ofstream(dir_.path() / "policy.json")
        << R"({"default":[{"type":"reject"}],"transports":{"docker":{")" << PullHost()
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
    boost::asio::thread_pool blocking(4);
    Puller puller(io, blocking, *store_, *policies_, config_, client);
    PullOptions opts;
    if (events) opts.on_event = [events](const PullEvent& e) { events->push_back(e); };
    auto r = RunSync(io, puller.Pull(PullHost() + "/" + repo_ref, opts));
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

}  // namespace digestd::daemon
