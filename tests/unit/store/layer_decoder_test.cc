// Layers verified against their diff_id while they stream into the store.

#include <gtest/gtest.h>

#include <filesystem>

#include "store/store.h"
#include "testkit/tar_builder.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::store {
namespace {

using digestd::testing::TempDir;
using verify::DigestAlgorithm;
using verify::Hasher;

// Same compression as real layers get; the helpers live with the tar builder.
std::string Gzip(std::string_view in) { return digestd::testing::TarBuilder::Gzip(in); }
std::string Zstd(std::string_view in) { return digestd::testing::TarBuilder::Zstd(in); }

std::string Pseudo(std::size_t n) {
  std::string s(n, '\0');
  std::uint64_t x = 7;
  for (auto& c : s) {
    x = x * 6364136223846793005ull + 1;
    c = static_cast<char>((x >> 60) + 'a');  // compressible but not trivial
  }
  return s;
}

class LayerIngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open({.root = dir_.path() / "store"});
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  Result<void> PutLayer(const std::string& blob, std::string_view media_type,
                        const Digest& diff_id, std::uint64_t max = std::uint64_t{1} << 40) {
    const Digest d = Hasher::Of(DigestAlgorithm::kSha256, blob);
    auto w = store_->Ingest(d, blob.size(),
                            {.media_type = std::string(media_type), .diff_id = diff_id,
                             .max_uncompressed = max});
    if (!w) return w.error();
    for (std::size_t off = 0; off < blob.size(); off += 100'000) {
      DIGESTD_RETURN_IF_ERROR((*w)->Write(std::string_view(blob).substr(off, 100'000)));
    }
    return (*w)->Commit();
  }
  std::size_t Blobs() { return store_->GetUsage().blobs; }

  TempDir dir_;
  StorePtr store_;
};

TEST_F(LayerIngestTest, GzipZstdAndPlainLayersSmallAndLarge) {
  for (std::size_t size : {std::size_t{5000}, std::size_t{12} << 20}) {  // inline and followed
    const std::string tar = Pseudo(size);
    const Digest diff = Hasher::Of(DigestAlgorithm::kSha256, tar);
    EXPECT_OK(PutLayer(Gzip(tar), "application/vnd.oci.image.layer.v1.tar+gzip", diff));
    EXPECT_OK(PutLayer(Zstd(tar), "application/vnd.oci.image.layer.v1.tar+zstd", diff));
    EXPECT_OK(PutLayer(tar + "x", "application/vnd.oci.image.layer.v1.tar",
                       Hasher::Of(DigestAlgorithm::kSha256, tar + "x")));
    EXPECT_OK(PutLayer(Gzip(tar + "docker"), "application/vnd.docker.image.rootfs.diff.tar.gzip",
                       Hasher::Of(DigestAlgorithm::kSha256, tar + "docker")));
  }
  EXPECT_EQ(Blobs(), 8u);
  // Concatenated gzip members are one valid stream.
  const std::string a = Pseudo(3000), b = Pseudo(4000);
  EXPECT_OK(PutLayer(Gzip(a) + Gzip(b), "application/vnd.oci.image.layer.v1.tar+gzip",
                     Hasher::Of(DigestAlgorithm::kSha256, a + b)));
}

TEST_F(LayerIngestTest, WrongDiffIdCorruptTruncatedAndBombsCommitNothing) {
  for (std::size_t size : {std::size_t{5000}, std::size_t{12} << 20}) {
    const std::string tar = Pseudo(size);
    const std::string gz = Gzip(tar);
    const Digest diff = Hasher::Of(DigestAlgorithm::kSha256, tar);
    auto wrong = PutLayer(gz, "application/vnd.oci.image.layer.v1.tar+gzip",
                          Hasher::Of(DigestAlgorithm::kSha256, "other"));
    ASSERT_ERRC(wrong, Errc::kDigestMismatch);
    EXPECT_NE(wrong.error().context().find("uncompresses to " + diff.ToString()),
              std::string::npos);
    std::string corrupt = gz;
    corrupt[corrupt.size() / 2] ^= 0x55;
    ASSERT_ERRC(PutLayer(corrupt, "application/vnd.oci.image.layer.v1.tar+gzip", diff),
                Errc::kCorrupt);
    ASSERT_ERRC(PutLayer(gz.substr(0, gz.size() - 9), "application/vnd.oci.image.layer.v1.tar+gzip",
                         diff),
                Errc::kCorrupt);
    ASSERT_ERRC(PutLayer(Zstd(tar).substr(0, 100), "application/vnd.oci.image.layer.v1.tar+zstd",
                         diff),
                Errc::kCorrupt);
    // A gzip layer labelled zstd.
    ASSERT_ERRC(PutLayer(gz, "application/vnd.oci.image.layer.v1.tar+zstd", diff), Errc::kCorrupt);
    // A bomb: fine per byte, too big in total.
    auto bomb = PutLayer(gz, "application/vnd.oci.image.layer.v1.tar+gzip", diff, size / 2);
    ASSERT_ERRC(bomb, Errc::kCorrupt);
    EXPECT_NE(bomb.error().context().find("decompression bomb"), std::string::npos);
  }
  ASSERT_ERRC(PutLayer("x", "application/vnd.oci.image.config.v1+json",
                       Hasher::Of(DigestAlgorithm::kSha256, "x")),
              Errc::kUnsupported);
  EXPECT_EQ(Blobs(), 0u);
  std::size_t staging = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir_.path() / "store/staging")) {
    ++staging;
  }
  EXPECT_EQ(staging, 0u);
}

}  // namespace
}  // namespace digestd::store
