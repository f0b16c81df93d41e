// Re-evaluation of cached images after a policy or trust change, by signer kind: a key that left
// the trust file withdraws its images; a keyless or PKI signer is judged by denySigners.keyless,
// never looked up among keys.

#include "daemon/revalidate.h"

#include <gtest/gtest.h>

#include <fstream>

#include "testing/store_image.h"
#include "testing/tar_builder.h"
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

}  // namespace
}  // namespace digestd::daemon
