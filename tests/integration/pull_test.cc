// Pulls from a real registry (Debian's docker-registry on loopback) of images built with umoci and
// pushed with skopeo, signed with the real cosign; policy, signatures and the store all real.

#include "integration/pull_fixture.h"

#include <ctime>

namespace digestd::daemon {
namespace {

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

TEST_F(PullTest, MultiArchIndexPicksThePlatform) {
  ASSERT_EQ(builder_.MultiArch("multi"), "");
  ASSERT_EQ(builder_.Push("multi", registry_->host() + "/test/multi:v1", "--all"), "");
  const std::string index_digest = DigestOf("test/multi:v1");
  Sign("test/multi", index_digest);
  config_.platform = {.os = "linux", .architecture = "arm64"};
  auto r = Pull("test/multi:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->manifest.ToString(), index_digest);
  EXPECT_NE(r->image_manifest, r->manifest);
  // The index, the arm64 manifest, its config and layer; edges index -> manifest -> blobs.
  auto children = store_->Children(r->manifest);
  ASSERT_TRUE(children.has_value());
  ASSERT_EQ(children->size(), 1u);
  EXPECT_EQ((*children)[0], r->image_manifest);
  auto config_fd = store_->OpenBlob(r->config);
  ASSERT_TRUE(config_fd.has_value());
  char buf[4096];
  const auto n = ::pread(config_fd->Get(), buf, sizeof buf, 0);
  EXPECT_NE(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))).find("\"arm64\""),
            std::string::npos);
  // A platform the index does not offer is a clear error.
  config_.platform = {.os = "linux", .architecture = "s390x"};
  auto none = Pull("test/multi:v1");
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.error().context().find("no manifest for platform linux/s390x"), std::string::npos)
      << none.error().ToString();
}

TEST_F(PullTest, PullThroughMirrorServesTheBlobs) {
  const std::string digest = PushBusybox("test/mirror:v1");
  Sign("test/mirror", digest);
  // A second docker-registry in proxy (pull-through) mode in front of the first: a real mirror.
  Registry mirror(dir_.path() / "mirror", "http://" + registry_->host());
  ASSERT_TRUE(mirror.Up()) << mirror.Log();
  config_.registries[0].mirrors.push_back({.host = mirror.host(), .insecure = true});
  auto r = Pull("test/mirror:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(stats_.mirror_failures, 0u);
  // The layer came through the mirror: its access log shows the blob request.
  EXPECT_NE(mirror.Log().find("/v2/test/mirror/blobs/" + r->layers[0].ToString()),
            std::string::npos)
      << mirror.Log();
}

TEST(PullAuthTest, HtpasswdRegistryWithBasicCredentials) {
  TempDir dir;
  auto h = Shell("htpasswd -Bbn alice s3cret > " + (dir.path() / "htpasswd").string());
  ASSERT_EQ(h.status, 0) << h.output;
  Registry registry(dir.path() / "registry", "", (dir.path() / "htpasswd").string());
  ASSERT_TRUE(registry.Up()) << registry.Log();
  ImageBuilder builder(dir.path() / "images");
  ASSERT_EQ(builder.Busybox("v1"), "");
  ASSERT_EQ(builder.Push("v1", registry.host() + "/test/private:v1", "--dest-creds alice:s3cret"),
            "");
  std::ofstream(dir.path() / "policy.json") << R"({"default":[{"type":"insecureAcceptAnything"}]})";
  verify::PolicySet policies(dir.path() / "policy.json", "");
  ASSERT_TRUE(policies.Reload().has_value());
  auto store = store::Store::Open({.root = dir.path() / "store"});
  ASSERT_TRUE(store.has_value());
  Config config;
  config.registries.push_back({.host = registry.host(), .insecure = true});
  auto pull = [&]() {
    asio::io_context io;
    RegistryClient client(io, config);
    boost::asio::thread_pool blocking(4);
    Puller puller(io, blocking, **store, policies, config, client);
    return RunSync(io, puller.Pull(registry.host() + "/test/private:v1", {}));
  };
  // Without credentials: a clear error, nothing stored.
  auto denied = pull();
  ASSERT_FALSE(denied.has_value());
  EXPECT_NE(denied.error().context().find("wants Basic credentials"), std::string::npos)
      << denied.error().ToString();
  // With an auth.json (base64 of alice:s3cret).
  std::ofstream(dir.path() / "auth.json")
      << R"({"auths":{")" << registry.host() << R"(":{"auth":"YWxpY2U6czNjcmV0"}}})";
  config.auth_file = (dir.path() / "auth.json").string();
  auto ok = pull();
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_TRUE((*store)->Contains(ok->config));
}

TEST_F(PullTest, DigestctlSignIsAcceptedByCosignAndByDigestd) {
  const std::string digest = PushBusybox("test/selfsigned:v1");
  const std::string keys = (dir_.path() / "keys").string();
  auto gen = Shell("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + keys +
                   "/op.pem && openssl pkey -in " + keys + "/op.pem -pubout -out " + keys +
                   "/op.pub");
  ASSERT_EQ(gen.status, 0) << gen.output;
  auto sign = Shell(DIGESTD_DIGESTCTL " sign --insecure --key " + keys + "/op.pem " +
                    registry_->host() + "/test/selfsigned:v1");
  ASSERT_EQ(sign.status, 0) << sign.output;
  EXPECT_NE(sign.output.find(digest), std::string::npos) << sign.output;
  // The real cosign accepts it...
  auto verify = Shell(DIGESTD_COSIGN " verify --key " + keys +
                      "/op.pub --insecure-ignore-tlog=true --allow-http-registry "
                      "--allow-insecure-registry " +
                      registry_->host() + "/test/selfsigned@" + digest);
  ASSERT_EQ(verify.status, 0) << verify.output;
  // ...and so does digestd, alongside a cosign signature on the same image.
  Sign("test/selfsigned", digest);
  WritePolicy(R"({"type":"sigstoreSigned","keyPath":"keys/op.pub","signedIdentity":{"type":"matchRepository"}})");
  auto r = Pull("test/selfsigned:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  // Signing twice keeps one signature layer per distinct signature and never drops cosign's.
  auto again = Shell(DIGESTD_DIGESTCTL " sign --insecure --key " + keys + "/op.pem " +
                     registry_->host() + "/test/selfsigned:v1");
  ASSERT_EQ(again.status, 0) << again.output;
  auto cosign_still = Shell("cd " + dir_.path().string() + " && " DIGESTD_COSIGN " verify --key keys/cosign.pub --insecure-ignore-tlog=true "
                            "--allow-http-registry --allow-insecure-registry " +
                            registry_->host() + "/test/selfsigned@" + digest);
  EXPECT_EQ(cosign_still.status, 0) << cosign_still.output;
  // A key in cosign's encrypted format is refused with a clear message.
  auto enc = Shell(DIGESTD_DIGESTCTL " sign --insecure --key " + keys + "/cosign.key " +
                   registry_->host() + "/test/selfsigned:v1");
  EXPECT_EQ(enc.status, 2);
  EXPECT_NE(enc.output.find("encrypted private keys"), std::string::npos) << enc.output;
}

TEST(PullTlsTest, VerifiesTheRegistryCertificateAndName) {
  TempDir dir;
  const std::string d = dir.path().string();
  // A private CA, a certificate for "localhost", and one for another name.
  auto pki = Shell(
      "cd " + d + " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-keyout ca.key -out ca.pem -days 2 -subj /CN=digestd-test-ca && "
      "for n in localhost other.example; do "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr "
      "-subj /CN=$n && printf 'subjectAltName=DNS:%s\n' $n > $n.ext && "
      "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile $n.ext -out $n.pem; done");
  ASSERT_EQ(pki.status, 0) << pki.output;
  auto run = [&](const std::string& name, const std::string& ca_file) -> Result<PullResult> {
    Registry registry(dir.path() / ("registry-" + name), "", "", d + "/" + name + ".pem",
                      d + "/" + name + ".key");
    EXPECT_TRUE(registry.Up()) << registry.Log();
    const std::string host = "localhost:" + std::to_string(registry.port());
    ImageBuilder builder(dir.path() / ("images-" + name));
    EXPECT_EQ(builder.Busybox("v1"), "");
    EXPECT_EQ(builder.Push("v1", host + "/test/tls:v1"), "");  // skopeo skips verification
    std::ofstream(dir.path() / "policy.json") << R"({"default":[{"type":"insecureAcceptAnything"}]})";
    verify::PolicySet policies(dir.path() / "policy.json", "");
    EXPECT_TRUE(policies.Reload().has_value());
    auto store = store::Store::Open({.root = dir.path() / ("store-" + name)});
    EXPECT_TRUE(store.has_value());
    Config config;
    config.registries.push_back({.host = host, .ca_file = ca_file});
    asio::io_context io;
    RegistryClient client(io, config);
    boost::asio::thread_pool blocking(4);
    Puller puller(io, blocking, **store, policies, config, client);
    return RunSync(io, puller.Pull(host + "/test/tls:v1", {}));
  };
  // The right name, trusted through the per-registry CA file: the pull works over TLS.
  auto ok = run("localhost", d + "/ca.pem");
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  // Without that CA (system CAs only), the certificate is not trusted.
  auto untrusted = run("localhost", "");
  ASSERT_FALSE(untrusted.has_value());
  EXPECT_NE(untrusted.error().context().find("TLS handshake"), std::string::npos)
      << untrusted.error().ToString();
  // A trusted certificate for another name is refused by hostname verification.
  auto wrong_name = run("other.example", d + "/ca.pem");
  ASSERT_FALSE(wrong_name.has_value());
  EXPECT_NE(wrong_name.error().context().find("TLS handshake"), std::string::npos)
      << wrong_name.error().ToString();
}

TEST_F(PullTest, ConcurrentPullsOfOneImageShareTheDownload) {
  const std::string digest = PushBusybox("test/shared:v1");
  Sign("test/shared", digest);
  asio::io_context io;
  RegistryClient client(io, config_);
  boost::asio::thread_pool blocking(4);
  Puller puller(io, blocking, *store_, *policies_, config_, client);
  std::optional<Result<PullResult>> a, b;
  const std::string ref = registry_->host() + "/test/shared:v1";
  const PullOptions opts;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { a.emplace(co_await puller.Pull(ref, opts)); },
                 [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  asio::co_spawn(io, [&]() -> asio::awaitable<void> { b.emplace(co_await puller.Pull(ref, opts)); },
                 [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  ASSERT_TRUE(a && a->has_value()) << (a ? a->error().ToString() : "not run");
  ASSERT_TRUE(b && b->has_value()) << (b ? b->error().ToString() : "not run");
  EXPECT_EQ((*a)->manifest, (*b)->manifest);
  // The layer's bytes crossed the network once.
  auto layer = store_->Stat((*a)->layers[0]);
  ASSERT_TRUE(layer.has_value());
  EXPECT_LT(client.stats().bytes, 2 * layer->size);
  EXPECT_EQ(StagingEntries(), 0u);
}

TEST_F(PullTest, QuotaEvictsTheLeastRecentlyUsedImageAfterAPull) {
  const std::string a = PushBusybox("test/quota-a:v1");
  Sign("test/quota-a", a);
  ASSERT_TRUE(Pull("test/quota-a:v1").has_value());
  // The quota counts blobs and unpacked file objects.
  const auto one_image = store_->GetUsage().total();
  // Room for one image and a half: the second pull must evict the first, never itself.
  store_.reset();
  auto reopened = store::Store::Open(
      {.root = config_.store_root, .quota_bytes = one_image * 3 / 2, .clock = [] {
         return static_cast<std::int64_t>(std::time(nullptr)) + 10;  // later than the first pull
       }});
  ASSERT_TRUE(reopened.has_value()) << reopened.error().ToString();
  store_ = std::move(*reopened);
  // B shares A's busybox layer and adds a fifth of A's size in random bytes (stored twice: the
  // layer and its unpacked file), so B fits the quota but crosses its high watermark: A (oldest,
  // unleased) must go.
  EXPECT_EQ(builder_.AddLayer("t1", "head -c " + std::to_string(one_image / 5) +
                                        " /dev/urandom > b.bin"),
            "");
  EXPECT_EQ(builder_.Push("t1", registry_->host() + "/test/quota-b:v1"), "");
  const std::string b = DigestOf("test/quota-b:v1");
  Sign("test/quota-b", b);
  auto r = Pull("test/quota-b:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_FALSE(store_->GetRef(registry_->host() + "/test/quota-a:v1").has_value());
  EXPECT_TRUE(store_->GetRef(registry_->host() + "/test/quota-b:v1").has_value());
  EXPECT_TRUE(store_->Contains(r->layers.back()));
  EXPECT_NE(AuditText().find("store.quota.evicted"), std::string::npos);
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
