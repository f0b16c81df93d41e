// Re-evaluation of cached images after a policy or trust change, by signer kind: a key that left
// the trust file withdraws its images; a keyless or PKI signer is judged by denySigners.keyless,
// never looked up among keys.

#include "daemon/revalidate.h"

#include <gtest/gtest.h>

#include <fstream>

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

}  // namespace
}  // namespace digestd::daemon
