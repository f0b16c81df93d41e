// Re-evaluation of cached images after a policy or trust change, by signer kind: a key that left
// the trust file withdraws its images; a keyless or PKI signer is judged by denySigners.keyless,
// never looked up among keys.

#include "daemon/revalidate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>

#include "testing/crypto_util.h"
#include "testing/store_image.h"
#include "testkit/tar_builder.h"
#include "testing/test_util.h"

namespace digestd::daemon {
namespace {

using digestd::testing::TempDir;

class RevalidateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::Open({.root = dir_.path() / "store"});
    ASSERT_TRUE(s) << s.error().ToString();
    store_ = std::move(*s);
    std::ofstream(dir_.path() / "trust.json") << R"({"keys":[]})";
  }
  // Stores an image admitted by `signer`.
  verify::Digest Image(const std::string& content, const std::string& signer) {
    auto img = digestd::testing::PutImage(
        *store_, {digestd::testing::TarBuilder().File("f", content).Finish()});
    EXPECT_TRUE(img) << img.error().ToString();
    EXPECT_TRUE(store_->PutImageRecord({.manifest = img->manifest,
                                        .image_manifest = img->manifest,
                                        .reference = "reg.test/app:" + content,
                                        .signer = signer}));
    return img->manifest;
  }
  RevalidateResult Run(const std::string& org) {
    std::ofstream(dir_.path() / "policy.json")
        << R"({"default":[{"type":"insecureAcceptAnything"}])"
        << (org.empty() ? "" : ",\"digestd\":" + org) << "}";
    verify::PolicySet set(dir_.path() / "policy.json", dir_.path() / "trust.json");
    EXPECT_TRUE(set.Reload());
    auto r = Revalidate(*store_, set.Current(), 1'780'000'000);
    EXPECT_TRUE(r) << r.error().ToString();
    return *r;
  }
  TempDir dir_;
  store::StorePtr store_;
};

TEST_F(RevalidateTest, KeylessAndPkiSignersAreNotTrustFileKeys) {
  const auto keyless = Image("a", "keyless dev@example.com (https://issuer.example)");
  const auto pki = Image("b", "pki release@example.com");
  const auto gone_key = Image("c", "team-key-2025");
  auto r = Run("");
  ASSERT_EQ(r.withdrawn.size(), 1u);  // only the image of the key that left the trust file
  EXPECT_EQ(r.withdrawn[0].manifest, gone_key);
  EXPECT_FALSE(r.hidden.count(keyless));
  EXPECT_FALSE(r.hidden.count(pki));

  auto denied = Run(R"({"denySigners":{"keyless":[{"issuer":"https://issuer.example","identity":"dev@example.com"},{"issuer":"pki","identity":"release@example.com"}]}})");
  EXPECT_TRUE(denied.hidden.count(keyless));
  EXPECT_TRUE(denied.hidden.count(pki));
  EXPECT_EQ(denied.withdrawn.size(), 3u);
}

// A denied image is hidden by the deny list; the layers only denied images use are hidden with
// it (a runtime holding a lowerdir string could mount them otherwise), shared ones stay, and all
// come back on undeny. A denied image is not "withdrawn" (the deny list says why).
TEST_F(RevalidateTest, LayersOnlyDeniedImagesUseAreHidden) {
  const std::string base = digestd::testing::TarBuilder().File("base", "b").Finish();
  auto a = digestd::testing::PutImage(
      *store_, {base, digestd::testing::TarBuilder().File("a", "only a").Finish()});
  auto x = digestd::testing::PutImage(*store_, {base});
  ASSERT_TRUE(a && x);
  for (const auto& [img, name] : {std::pair{*a, "a"}, std::pair{*x, "x"}}) {
    ASSERT_TRUE(store_->PutImageRecord({.manifest = img.manifest,
                                        .image_manifest = img.manifest,
                                        .reference = std::string("reg.test/") + name + ":v1"}));
  }
  ASSERT_TRUE(store_->Deny(a->manifest, "test"));
  auto r = Run("");
  EXPECT_TRUE(r.withdrawn.empty());
  EXPECT_TRUE(r.hidden.count(a->manifest));
  EXPECT_TRUE(r.hidden.count(a->layers[1]));   // only a uses it
  EXPECT_FALSE(r.hidden.count(a->layers[0]));  // x uses it too
  EXPECT_FALSE(r.hidden.count(x->manifest));
  ASSERT_TRUE(store_->Undeny(a->manifest));
  EXPECT_TRUE(Run("").hidden.empty());
}

// The daemon's Visibility: evaluated before the mount serves, then after each reload; each newly
// withdrawn image audited once, each newly hidden digest invalidated once; attaching the mount
// invalidates what is hidden already (and, for an adopted mount, what is denied).
TEST_F(RevalidateTest, VisibilityAuditsAndInvalidatesEachChangeOnce) {
  const auto img = Image("v", "");
  const auto other = Image("w", "");
  ASSERT_TRUE(store_->Deny(other, "test"));
  auto write_policy = [this](bool accept) {
    std::ofstream(dir_.path() / "policy.json")
        << (accept ? R"({"default":[{"type":"insecureAcceptAnything"}]})"
                   : R"({"default":[{"type":"reject"}]})");
  };
  write_policy(false);
  verify::PolicySet policies(dir_.path() / "policy.json", dir_.path() / "trust.json");
  ASSERT_TRUE(policies.Reload());
  std::int64_t now = 1'780'000'000;
  Auditor auditor(*store_, AuditConfig{}, [&now] { return now; });
  Visibility v(*store_, policies, auditor, [&now] { return now; });
  auto withdrawn_events = [this] {
    int n = 0;
    auto events = store_->ReadAudit(0, 1000);
    EXPECT_TRUE(events);
    for (const auto& e : *events) n += e.json.find("image.withdrawn") != std::string::npos;
    return n;
  };
  // Before the mount: hidden at once, audited, nothing to invalidate yet.
  v.Revalidate();
  EXPECT_TRUE(v.Hidden(img));
  EXPECT_TRUE(v.Hidden(other));
  EXPECT_EQ(withdrawn_events(), 1);  // the denied one is hidden by the deny list, not withdrawn
  std::vector<verify::Digest> invalidated;
  v.Attach([&invalidated](const verify::Digest& d) { invalidated.push_back(d); }, /*adopted=*/true);
  EXPECT_NE(std::find(invalidated.begin(), invalidated.end(), img), invalidated.end());
  EXPECT_NE(std::find(invalidated.begin(), invalidated.end(), other), invalidated.end());
  // Nothing changed: no new event, no new invalidation.
  invalidated.clear();
  v.Revalidate();
  EXPECT_EQ(withdrawn_events(), 1);
  EXPECT_TRUE(invalidated.empty());
  // Admitted again: visible, nothing invalidated (the mount caches no withheld name).
  write_policy(true);
  ASSERT_TRUE(v.ReloadPolicy());
  EXPECT_FALSE(v.Hidden(img));
  EXPECT_TRUE(v.Hidden(other));  // still denied
  EXPECT_TRUE(invalidated.empty());
  // Withdrawn again: audited again, invalidated again.
  write_policy(false);
  ASSERT_TRUE(v.ReloadPolicy());
  EXPECT_TRUE(v.Hidden(img));
  EXPECT_EQ(withdrawn_events(), 2);
  EXPECT_NE(std::find(invalidated.begin(), invalidated.end(), img), invalidated.end());
  // A policy that does not load keeps the old one (and the visibility).
  std::ofstream(dir_.path() / "policy.json") << "{not json";
  EXPECT_FALSE(v.ReloadPolicy());
  EXPECT_TRUE(v.Hidden(img));
  metrics::Registry registry;
  v.RegisterMetrics(registry);
  EXPECT_NE(registry.Render().find("digestd_hidden_digests " + std::to_string(v.hidden().size())),
            std::string::npos);
}

// Time moves through one seam: the store's clock. A key's validity window closes for the
// re-evaluation when that clock passes its end; the audit event carries the same clock's time.
TEST_F(RevalidateTest, TrustWindowsCloseWhenTheStoresClockPassesThem) {
  ManualClock clock(1'780'000'000);  // 2026-05-28
  auto s = store::Store::Open({.root = dir_.path() / "clocked", .clock = clock.AsClock()});
  ASSERT_TRUE(s) << s.error().ToString();
  auto& store = **s;
  const auto key = digestd::testing::TestKey::EcP256();
  std::ofstream(dir_.path() / "team.pub") << key.PublicPem();
  std::ofstream(dir_.path() / "trust.json")
      << R"({"keys":[{"id":"team","pemPath":"team.pub","start":"2026-01-01T00:00:00Z","end":"2026-06-30T00:00:00Z"}]})";
  std::ofstream(dir_.path() / "policy.json") << R"({"default":[{"type":"insecureAcceptAnything"}]})";
  auto img = digestd::testing::PutImage(store, {digestd::testing::TarBuilder().File("f", "x").Finish()});
  ASSERT_TRUE(img);
  ASSERT_TRUE(store.PutImageRecord({.manifest = img->manifest, .image_manifest = img->manifest,
                                    .reference = "reg.test/app:v1", .signer = "team"}));
  verify::PolicySet policies(dir_.path() / "policy.json", dir_.path() / "trust.json");
  auto loaded = policies.Reload();
  ASSERT_TRUE(loaded) << loaded.error().ToString();
  Auditor auditor(store, AuditConfig{});  // the store's clock
  Visibility v(store, policies, auditor);  // the store's clock
  v.Revalidate();
  EXPECT_FALSE(v.Hidden(img->manifest));
  clock.Set(1'783'000'000);  // 2026-07-02: the key's window has closed
  v.Revalidate();
  EXPECT_TRUE(v.Hidden(img->manifest));
  auto events = store.ReadAudit(0, 100);
  ASSERT_TRUE(events);
  ASSERT_FALSE(events->empty());
  const auto last = nlohmann::json::parse(events->back().json);
  EXPECT_EQ(last["type"], "image.withdrawn");
  EXPECT_EQ(last["time"], 1'783'000'000);
  EXPECT_NE(last["reason"].get<std::string>().find("team"), std::string::npos) << last.dump();
}

}  // namespace
}  // namespace digestd::daemon
