#include "verify/oci.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::verify {
namespace {

std::string D(char c) { return "sha256:" + std::string(64, c); }

std::string Manifest(std::string_view media_type = media::kOciManifest, std::string extra = "") {
  return R"({"schemaVersion":2,"mediaType":")" + std::string(media_type) +
         R"(","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         D('1') + R"(","size":123},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
         D('2') + R"(","size":456,"annotations":{"a":"b"}}])" + extra + "}";
}

TEST(OciTest, ParsesOciAndDockerManifests) {
  auto m = ParseImageManifest(Manifest(), media::kOciManifest);
  ASSERT_OK(m);
  EXPECT_EQ(m->kind, ManifestKind::kOciManifest);
  EXPECT_EQ(m->config.digest.ToString(), D('1'));
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].size, 456);
  EXPECT_EQ(m->layers[0].annotations.at("a"), "b");
  auto docker = ParseImageManifest(Manifest(media::kDockerManifest), "");
  ASSERT_OK(docker);
  EXPECT_EQ(docker->kind, ManifestKind::kDockerManifest);
}

TEST(OciTest, MediaTypeMustAgreeAndBeKnown) {
  ASSERT_ERRC(ParseImageManifest(Manifest(), media::kDockerManifest), Errc::kInvalidArgument);
  ASSERT_ERRC(ParseImageManifest(Manifest("application/vnd.docker.distribution.manifest.v1+json"),
                                 ""),
              Errc::kUnsupported);
  ASSERT_ERRC(ParseImageIndex(Manifest(), ""), Errc::kInvalidArgument);  // not an index
}

TEST(OciTest, RefusesHostileManifests) {
  ManifestLimits small{.max_bytes = 100};
  ASSERT_ERRC(ParseImageManifest(Manifest(), "", small), Errc::kTooLarge);
  const std::string bad_docs[] = {
      "",
      "[]",
      "{",
      R"({"schemaVersion":1})",
      // duplicate key: two parsers could disagree on which config is real
      R"({"schemaVersion":2,"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]})",
      // negative and non-integer sizes, bad digests
      Manifest(media::kOciManifest).replace(Manifest().find("123"), 3, "-1"),
      Manifest(media::kOciManifest).replace(Manifest().find("123"), 3, "1.5"),
      Manifest(media::kOciManifest).replace(Manifest().find("123"), 3, "\"123\""),
      Manifest(media::kOciManifest).replace(Manifest().find("123"), 3, "99999999999999999"),
      Manifest(media::kOciManifest).replace(Manifest().find(D('1')), 71, "sha256:abc"),
      Manifest(media::kOciManifest).replace(Manifest().find(D('1')), 71, "sha256:../../etc"),
      std::string(100, '[') + std::string(100, ']'),
  };
  for (const auto& doc : bad_docs) {
    auto r = ParseImageManifest(doc, media::kOciManifest);
    EXPECT_FALSE(r) << doc.substr(0, 200);
  }
}

TEST(OciTest, IndexAndPlatformSelection) {
  const std::string index = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + D('a') + R"(","size":1,"platform":{"os":"linux","architecture":"amd64"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + D('b') + R"(","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + D('c') + R"(","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}},
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + D('d') + R"(","size":1}]})";
  auto idx = ParseImageIndex(index, "");
  ASSERT_OK(idx);
  EXPECT_EQ(idx->manifests.size(), 4u);
  auto amd = SelectPlatform(*idx, {.os = "linux", .architecture = "amd64"});
  ASSERT_OK(amd);
  EXPECT_EQ(amd->digest.ToString(), D('a'));
  auto arm64 = SelectPlatform(*idx, {.os = "linux", .architecture = "arm64"});  // v8 default
  ASSERT_OK(arm64);
  EXPECT_EQ(arm64->digest.ToString(), D('b'));
  auto armv7 = SelectPlatform(*idx, {.os = "linux", .architecture = "arm", .variant = "v7"});
  ASSERT_ERRC(armv7, Errc::kNotFound);
  EXPECT_NE(armv7.error().context().find("linux/arm/v6"), std::string::npos);
  ASSERT_ERRC(SelectPlatform(*idx, {.os = "windows", .architecture = "amd64"}), Errc::kNotFound);
  EXPECT_EQ(HostPlatform().os, "linux");
}

TEST(OciTest, ConfigDiffIds) {
  auto c = ParseImageConfig(R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" +
                            D('5') + R"("]},"config":{}})");
  ASSERT_OK(c);
  ASSERT_EQ(c->diff_ids.size(), 1u);
  EXPECT_EQ(c->diff_ids[0].ToString(), D('5'));
  EXPECT_FALSE(ParseImageConfig(R"({"architecture":"amd64","os":"linux","rootfs":{"type":"x","diff_ids":[]}})"));
  EXPECT_FALSE(ParseImageConfig(R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["nope"]}})"));
}

}  // namespace
}  // namespace digestd::verify
