// Layer unpacking: trees, file objects, and every hostile layer refused with nothing kept.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "store/index.h"
#include "store/store.h"
#include "store/tree_codec.h"
#include "testing/store_image.h"
#include "testing/tar_builder.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::store {
namespace {

namespace fs = std::filesystem;
using digestd::testing::TarBuilder;
using digestd::testing::TempDir;
using verify::DigestAlgorithm;
using verify::Hasher;

constexpr std::string_view kTar = "application/vnd.oci.image.layer.v1.tar";
constexpr std::string_view kTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
constexpr std::string_view kTarZstd = "application/vnd.oci.image.layer.v1.tar+zstd";

Digest Sha(std::string_view s) { return Hasher::Of(DigestAlgorithm::kSha256, s); }

std::size_t CountFiles(const fs::path& dir) {
  std::size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

class UnpackTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    auto s = Store::Open({.root = root()});
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  fs::path root() const { return dir_.path() / "store"; }

  // Stores `tar` (compressed per media type) and unpacks it against the tar's own digest.
  Result<TreeInfo> Unpack(const std::string& tar, std::string_view media_type = kTarGzip,
                          const UnpackLimits& limits = {}, Digest* layer_out = nullptr) {
    std::string blob = tar;
    if (media_type == kTarGzip) blob = TarBuilder::Gzip(tar);
    if (media_type == kTarZstd) blob = TarBuilder::Zstd(tar);
    const Digest layer = Sha(blob);
    if (layer_out) *layer_out = layer;
    if (auto r = store_->PutBlob(layer, blob, {.media_type = std::string(media_type)}); !r) {
      return r.error();
    }
    return store_->UnpackLayer(layer, Sha(tar), "", limits);
  }

  std::string ReadFileObject(const Digest& d) {
    auto fd = store_->OpenFile(d);
    EXPECT_TRUE(fd.has_value());
    if (!fd) return {};
    std::string out(8u << 20, '\0');
    const ssize_t n = ::pread(fd->Get(), out.data(), out.size(), 0);
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return out;
  }

  // A refused layer: the error names the problem, no tree, no file object left behind, staging
  // empty.
  void ExpectRefused(const std::string& tar, std::string_view needle,
                     const UnpackLimits& limits = {}, std::string_view media = kTarGzip) {
    const std::size_t files_before = CountFiles(root() / "files");
    Digest layer = Sha("x");
    auto r = Unpack(tar, media, limits, &layer);
    ASSERT_FALSE(r.has_value()) << "accepted a layer that should be refused (" << needle << ")";
    EXPECT_NE(r.error().ToString().find(needle), std::string::npos) << r.error().ToString();
    auto info = store_->GetTreeInfo(layer);
    ASSERT_TRUE(info.has_value());
    EXPECT_FALSE(info->has_value());
    EXPECT_EQ(CountFiles(root() / "files"), files_before);
    EXPECT_EQ(CountFiles(root() / "staging"), 0u);
  }

  const TreeEntry* Find(const LayerTree& t, std::string_view path) {
    for (const auto& e : t.entries) {
      if (e.path == path) return &e;
    }
    return nullptr;
  }

  TempDir dir_;
  StorePtr store_;
};

TEST_F(UnpackTest, RecordsEveryKindOfEntry) {
  TarBuilder t;
  t.Dir("./", {.mode = 0755})
      .Dir("bin/")
      .File("bin/tool", "#!/bin/sh\necho hi\n", {.mode = 04755, .uid = 0, .gid = 0})
      .Hardlink("bin/tool2", "bin/tool")
      .Symlink("bin/sh", "/bin/busybox")
      .Symlink("escape", "../../../../etc/shadow")
      .CharDev("dev/null", 1, 3, {.mode = 0666})
      .BlockDev("dev/sda", 8, 0, {.mode = 0660})
      .Fifo("run/fifo", {.mode = 0600})
      .Xattr("security.capability", std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8))
      .Xattr("user.note", "hello")
      .Xattr("system.posix_acl_access", "ignored")
      .File("bin/ping", "ping", {.mode = 0755, .uid = 1000, .gid = 1001, .mtime = 12345})
      .File("etc/.wh.passwd", "")
      .File("var/.wh..wh..opq", "")
      .File("var/keep", "kept");
  const std::string tar = t.Finish();
  Digest layer = Sha("x");
  auto info = Unpack(tar, kTarGzip, {}, &layer);
  ASSERT_OK(info);
  EXPECT_EQ(info->diff_id, Sha(tar));
  auto tree = store_->LoadTree(layer);
  ASSERT_OK(tree);
  EXPECT_EQ(tree->entries.front().path, "");

  const auto* tool = Find(*tree, "bin/tool");
  ASSERT_NE(tool, nullptr);
  EXPECT_EQ(tool->type, EntryType::kRegular);
  EXPECT_EQ(tool->mode, 04755u);  // setuid recorded; the mount is nosuid
  EXPECT_EQ(ReadFileObject(*tool->content), "#!/bin/sh\necho hi\n");
  const auto* tool2 = Find(*tree, "bin/tool2");
  ASSERT_NE(tool2, nullptr);
  EXPECT_NE(tool->link_group, 0u);
  EXPECT_EQ(tool2->link_group, tool->link_group);
  EXPECT_EQ(tool2->content, tool->content);

  const auto* escape = Find(*tree, "escape");
  ASSERT_NE(escape, nullptr);
  EXPECT_EQ(escape->type, EntryType::kSymlink);
  EXPECT_EQ(escape->symlink_target, "../../../../etc/shadow");  // data, never followed

  const auto* null = Find(*tree, "dev/null");
  ASSERT_NE(null, nullptr);
  EXPECT_EQ(null->type, EntryType::kCharDevice);
  EXPECT_EQ(null->rdev_major, 1u);
  EXPECT_EQ(null->rdev_minor, 3u);
  EXPECT_TRUE(Find(*tree, "dev")->implicit);
  EXPECT_EQ(Find(*tree, "dev/sda")->type, EntryType::kBlockDevice);
  EXPECT_EQ(Find(*tree, "run/fifo")->type, EntryType::kFifo);

  const auto* ping = Find(*tree, "bin/ping");
  ASSERT_NE(ping, nullptr);
  EXPECT_EQ(ping->uid, 1000u);
  EXPECT_EQ(ping->gid, 1001u);
  EXPECT_EQ(ping->mtime, 12345);
  ASSERT_EQ(ping->xattrs.size(), 2u);  // system.* dropped
  EXPECT_EQ(ping->xattrs[0].first, "security.capability");
  EXPECT_EQ(ping->xattrs[1].first, "user.note");
  EXPECT_EQ(ping->xattrs[1].second, "hello");

  const auto* wh = Find(*tree, "etc/passwd");
  ASSERT_NE(wh, nullptr);
  EXPECT_EQ(wh->type, EntryType::kWhiteout);
  EXPECT_EQ(Find(*tree, "etc/.wh.passwd"), nullptr);
  EXPECT_TRUE(Find(*tree, "var")->opaque);
  EXPECT_EQ(Find(*tree, "var/.wh..wh..opq"), nullptr);
  EXPECT_NE(Find(*tree, "var/keep"), nullptr);

  // Idempotent, and the recorded diff_id is checked on a second unpack.
  ASSERT_OK(store_->UnpackLayer(layer, Sha(tar)));
  ASSERT_ERRC(store_->UnpackLayer(layer, Sha("other")), Errc::kDigestMismatch);
}

TEST_F(UnpackTest, GzipZstdAndPlainAndContentStoredOnce) {
  const std::string big(3u << 20, 'z');  // past the in-memory buffer: goes through a temp file
  for (auto media : {kTar, kTarGzip, kTarZstd}) {
    TarBuilder t;
    t.File("shared", "same bytes in every layer").File("big", big);
    t.File(std::string("only-") + std::string(media.substr(media.size() - 4)), std::string(media));
    ASSERT_OK(Unpack(t.Finish(), media));
  }
  auto usage = store_->FileUsage();
  ASSERT_OK(usage);
  EXPECT_EQ(usage->blobs, 2u + 3u);  // "shared" and "big" once, one unique file per layer
  EXPECT_EQ(ReadFileObject(Sha(big)).size(), big.size());
}

TEST_F(UnpackTest, WrongDiffIdKeepsNothing) {
  TarBuilder t;
  t.File("a", "content of a").File("b", "content of b");
  const std::string tar = t.Finish();
  const std::string blob = TarBuilder::Gzip(tar);
  const Digest layer = Sha(blob);
  ASSERT_OK(store_->PutBlob(layer, blob, {.media_type = std::string(kTarGzip)}));
  ASSERT_ERRC(store_->UnpackLayer(layer, Sha("not the tar")), Errc::kDigestMismatch);
  auto info = store_->GetTreeInfo(layer);
  ASSERT_OK(info);
  EXPECT_FALSE(info->has_value());
  EXPECT_EQ(CountFiles(root() / "files"), 0u);
  // Media type that lies about the content is refused too.
  ASSERT_ERRC(store_->UnpackLayer(layer, Sha(tar), kTarZstd), Errc::kCorrupt);
}

TEST_F(UnpackTest, HostilePathsAreRefused) {
  ExpectRefused(TarBuilder().File("/etc/passwd", "x").Finish(), "absolute path");
  ExpectRefused(TarBuilder().File("../../etc/passwd", "x").Finish(), "\"..\" component");
  ExpectRefused(TarBuilder().File("a/../../b", "x").Finish(), "\"..\" component");
  ExpectRefused(TarBuilder().Symlink("lib", "/usr/lib").File("lib/evil.so", "x").Finish(),
                "path goes through \"lib\", which is a symlink");
  ExpectRefused(TarBuilder().Symlink("up", "..").Dir("up/etc/").Finish(), "which is a symlink");
  ExpectRefused(TarBuilder().File("f", "x").File("f/g", "y").Finish(), "not a directory");
  ExpectRefused(TarBuilder().File("bad\nname", "x").Finish(), "control character");
  ExpectRefused(TarBuilder().File("bell\x07", "x").Finish(), "control character");
  ExpectRefused(TarBuilder().File(std::string(256, 'n'), "x").Finish(), "longer than 255");
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "d/";
  ExpectRefused(TarBuilder().File(deep + "f", "x").Finish(), "too deep");
  ExpectRefused(TarBuilder().File(".wh..", "").Finish(), "malformed whiteout");
  ExpectRefused(TarBuilder().File("a", "x").Pax("uid", "4294967295").File("b", "y").Finish(),
                "uid");
}

TEST_F(UnpackTest, HostileLinksAreRefused) {
  ExpectRefused(TarBuilder().Hardlink("x", "missing").Finish(), "hard link to missing");
  ExpectRefused(TarBuilder().Hardlink("x", "../outside").Finish(), "\"..\" component");
  ExpectRefused(TarBuilder().Hardlink("x", "/etc/shadow").Finish(), "absolute path");
  ExpectRefused(TarBuilder().Dir("d/").Hardlink("x", "d").Finish(), "which is a directory");
  ExpectRefused(TarBuilder().File("x", "1").Hardlink("x", "x").Finish(), "hard link to itself");
  ExpectRefused(TarBuilder().Symlink("l", std::string(5000, 'a')).Finish(), "");
  ExpectRefused(TarBuilder().Xattr("trusted.overlay.redirect", "/etc").File("f", "x").Finish(),
                "trusted namespace");
  ExpectRefused(TarBuilder().Xattr("trusted.overlay.opaque", "y").Dir("d/").Finish(),
                "trusted namespace");
}

TEST_F(UnpackTest, DuplicatesLastWins) {
  TarBuilder t;
  t.File("f", "first")
      .File("f", "second")
      .Dir("d/")
      .File("d/child", "c")
      .File("d", "a file replaces the directory and its contents")
      .Dir("e/", {.mode = 0700})
      .Dir("e/", {.mode = 0750})
      .File("g", "g")
      .Hardlink("h", "g")
      .File("g", "g replaced: h keeps the old inode alone");
  Digest layer = Sha("x");
  ASSERT_OK(Unpack(t.Finish(), kTarGzip, {}, &layer));
  auto tree = store_->LoadTree(layer);
  ASSERT_OK(tree);
  EXPECT_EQ(ReadFileObject(*Find(*tree, "f")->content), "second");
  EXPECT_EQ(Find(*tree, "d")->type, EntryType::kRegular);
  EXPECT_EQ(Find(*tree, "d/child"), nullptr);
  EXPECT_EQ(Find(*tree, "e")->mode, 0750u);
  EXPECT_EQ(Find(*tree, "h")->link_group, 0u);
  EXPECT_EQ(ReadFileObject(*Find(*tree, "h")->content), "g");
}

TEST_F(UnpackTest, BombsAndTruncationAreRefused) {
  // Entry count and bytes of files past the limits.
  TarBuilder many;
  for (int i = 0; i < 50; ++i) many.File("f" + std::to_string(i), "x");
  ExpectRefused(many.Finish(), "more than 20 entries", {.max_entries = 20});
  ExpectRefused(TarBuilder().File("a", std::string(4096, 'a')).File("b", std::string(4096, 'b'))
                    .Finish(),
                "unpacks past the limit of 6000 bytes", {.max_file_bytes = 6000});
  // A gzip bomb: 64 MiB of zeros in ~64 KiB, against a 1 MiB limit on files.
  {
    TarBuilder bomb;
    bomb.File("zeros", std::string(64u << 20, '\0'));
    ExpectRefused(bomb.Finish(), "past the limit", {.max_file_bytes = 1u << 20});
    // Without the tar header's honesty: a stream that keeps expanding past every bound.
    std::string zeros(200u << 20, '\0');
    ExpectRefused(zeros, "decompression bomb", {.max_entries = 10, .max_file_bytes = 1u << 20});
  }
  // Truncated: cut inside a file's data, inside a header, and a truncated gzip stream.
  const std::string tar = TarBuilder().File("a", std::string(10000, 'a')).File("b", "b").Finish();
  ExpectRefused(tar.substr(0, 3000), "", {}, kTar);
  ExpectRefused(tar.substr(0, 512 * 21 + 100), "", {}, kTar);
  {
    const std::string gz = TarBuilder::Gzip(tar);
    const std::string cut = gz.substr(0, gz.size() / 2);
    const Digest layer = Sha(cut);
    ASSERT_OK(store_->PutBlob(layer, cut, {.media_type = std::string(kTarGzip)}));
    ASSERT_ERRC(store_->UnpackLayer(layer, Sha(tar)), Errc::kCorrupt);
  }
  ExpectRefused(std::string(4096, 'G'), "", {}, kTar);  // not a tar at all
}

TEST_F(UnpackTest, RefusedLayerKeepsFilesOtherLayersUse) {
  Digest good = Sha("x");
  ASSERT_OK(Unpack(TarBuilder().File("shared", "shared content").Finish(), kTarGzip, {}, &good));
  ASSERT_EQ(CountFiles(root() / "files"), 1u);
  // The bad layer holds the same content plus new content, then a hostile entry.
  ExpectRefused(TarBuilder()
                    .File("shared", "shared content")
                    .File("new", "only in the bad layer")
                    .File("../escape", "x")
                    .Finish(),
                "\"..\" component");
  auto tree = store_->LoadTree(good);
  ASSERT_OK(tree);
  EXPECT_EQ(ReadFileObject(*Find(*tree, "shared")->content), "shared content");
}

TEST_F(UnpackTest, ConcurrentUnpacksSharingContent) {
  std::vector<std::string> tars;
  for (int i = 0; i < 8; ++i) {
    TarBuilder t;
    for (int j = 0; j < 40; ++j) t.File("common" + std::to_string(j), "common " + std::to_string(j));
    t.File("own", "layer " + std::to_string(i));
    if (i % 2) t.File("../bad", "x");  // every other layer is refused after the shared files
    tars.push_back(t.Finish());
  }
  std::vector<Digest> layers;
  for (const auto& tar : tars) {
    const std::string blob = TarBuilder::Gzip(tar);
    layers.push_back(Sha(blob));
    ASSERT_OK(store_->PutBlob(layers.back(), blob, {.media_type = std::string(kTarGzip)}));
  }
  std::vector<std::thread> threads;
  std::vector<bool> ok(tars.size());
  for (std::size_t i = 0; i < tars.size(); ++i) {
    threads.emplace_back([&, i] { ok[i] = store_->UnpackLayer(layers[i], Sha(tars[i])).has_value(); });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < tars.size(); ++i) {
    EXPECT_EQ(ok[i], i % 2 == 0) << i;
    if (i % 2) continue;
    auto tree = store_->LoadTree(layers[i]);
    ASSERT_OK(tree);
    for (const auto& e : tree->entries) {
      if (e.content) {
        EXPECT_TRUE(store_->OpenFile(*e.content).has_value()) << e.path;
      }
    }
  }
  EXPECT_EQ(CountFiles(root() / "files"), 40u + 4u);
}

TEST_F(UnpackTest, PreparedTreesAreInvisibleUntilCommittedTogether) {
  std::vector<Digest> layers;
  std::vector<std::string> tars;
  for (int i = 0; i < 3; ++i) {
    tars.push_back(TarBuilder().File("f", "layer " + std::to_string(i)).Finish());
    const std::string blob = TarBuilder::Gzip(tars.back());
    layers.push_back(Sha(blob));
    ASSERT_OK(store_->PutBlob(layers.back(), blob, {.media_type = std::string(kTarGzip)}));
  }
  std::vector<PendingTreePtr> pending;
  for (int i = 0; i < 3; ++i) {
    auto p = store_->PrepareTree(layers[i], Sha(tars[i]));
    ASSERT_OK(p);
    pending.push_back(std::move(*p));
  }
  EXPECT_EQ(CountFiles(root() / "files"), 3u);
  for (const auto& l : layers) EXPECT_FALSE(store_->GetTreeInfo(l)->has_value());
  // A GC while they are pending keeps their (pinned) file objects.
  ASSERT_OK(store_->PutLease({.id = "pull", .tenant = "t", .digests = layers}));
  ASSERT_OK(store_->CollectGarbage(false));
  EXPECT_EQ(CountFiles(root() / "files"), 3u);
  pending.pop_back();  // discarded uncommitted: its only file object goes
  EXPECT_EQ(CountFiles(root() / "files"), 2u);
  ASSERT_OK(store_->CommitTrees(pending));
  EXPECT_TRUE(store_->GetTreeInfo(layers[0])->has_value());
  EXPECT_TRUE(store_->GetTreeInfo(layers[1])->has_value());
  EXPECT_FALSE(store_->GetTreeInfo(layers[2])->has_value());
  ASSERT_OK(store_->CommitTrees(pending));  // idempotent
}

TEST_F(UnpackTest, ReleaseWithWipeOverwritesOnlyTheTenantsOwnData) {
  auto a = digestd::testing::PutImage(
      *store_, {TarBuilder().File("secret", "tenant a's secret").File("shared", "shared").Finish()}, "a");
  ASSERT_OK(a);
  auto b = digestd::testing::PutImage(
      *store_, {TarBuilder().File("mine", "tenant b's data").File("shared", "shared").Finish()}, "b");
  ASSERT_OK(b);
  ASSERT_OK(store_->SetRef("reg.example/a/app:v1", a->manifest));
  ASSERT_OK(store_->PutLease({.id = "la", .tenant = "a", .digests = {a->manifest}}));
  ASSERT_OK(store_->PutLease({.id = "lb", .tenant = "b", .digests = {b->manifest}}));
  // Hold the layer's blob and its secret file object open: after the wipe their bytes (still
  // reachable through these fds) must be zeros, not just unlinked.
  auto blob_fd = store_->OpenBlob(a->layers[0]);
  ASSERT_OK(blob_fd);
  auto secret_fd = store_->OpenFile(Sha("tenant a's secret"));
  ASSERT_OK(secret_fd);

  auto report = store_->ReleaseLease("la", /*wipe=*/true);
  ASSERT_OK(report);
  EXPECT_EQ(report->blobs.size(), 3u);  // layer, config, manifest
  EXPECT_EQ(report->files, 1u);         // the secret; "shared" is still used by b's tree
  EXPECT_EQ(report->refs_removed, std::vector<std::string>{"reg.example/a/app:v1"});
  EXPECT_FALSE(store_->Contains(a->layers[0]));
  EXPECT_FALSE(store_->Contains(a->manifest));
  ASSERT_ERRC(store_->OpenFile(Sha("tenant a's secret")), Errc::kNotFound);
  EXPECT_OK(store_->OpenFile(Sha("shared")));
  EXPECT_TRUE(store_->Contains(b->layers[0]));
  ASSERT_OK(store_->LoadTree(b->layers[0]));
  char buf[64] = {};
  const ssize_t n = ::pread(secret_fd->Get(), buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), std::string(static_cast<std::size_t>(n), '\0'));
  ASSERT_GT(::pread(blob_fd->Get(), buf, sizeof(buf), 0), 0);
  EXPECT_EQ(std::string(buf, 16), std::string(16, '\0'));
  ASSERT_ERRC(store_->GetLease("la"), Errc::kNotFound);
  ASSERT_ERRC(store_->ReleaseLease("la", true), Errc::kNotFound);

  // Released without wipe: only the lease goes.
  auto kept = store_->ReleaseLease("lb", /*wipe=*/false);
  ASSERT_OK(kept);
  EXPECT_TRUE(kept->blobs.empty());
  EXPECT_TRUE(store_->Contains(b->layers[0]));
}

TEST_F(UnpackTest, RemovingALayerRemovesItsTreeAndOnlyItsFiles) {
  Digest a = Sha("x"), b = Sha("y");
  ASSERT_OK(Unpack(TarBuilder().File("s", "shared").File("a", "only a").Finish(), kTarGzip, {}, &a));
  ASSERT_OK(Unpack(TarBuilder().File("s", "shared").File("b", "only b").Finish(), kTarGzip, {}, &b));
  ASSERT_EQ(CountFiles(root() / "files"), 3u);
  ASSERT_OK(store_->RemoveBlob(a));
  EXPECT_EQ(CountFiles(root() / "files"), 2u);
  ASSERT_ERRC(store_->LoadTree(a), Errc::kNotFound);
  ASSERT_OK(store_->LoadTree(b));
  EXPECT_OK(store_->OpenFile(Sha("shared")));
  ASSERT_ERRC(store_->OpenFile(Sha("only a")), Errc::kNotFound);
}

TEST_F(UnpackTest, RecoveryRemovesUnreferencedFileObjectsAndCorruptTreesFailLoudly) {
  Digest layer = Sha("x");
  ASSERT_OK(Unpack(TarBuilder().File("f", "kept").Finish(), kTarGzip, {}, &layer));
  // An object a crashed unpack left behind (never synced, so never trusted).
  const Digest orphan = Sha("orphan");
  const fs::path orphan_path = root() / "files/sha256" / std::string(orphan.hex().substr(0, 2)) /
                               std::string(orphan.hex());
  { std::FILE* f = std::fopen(orphan_path.c_str(), "w"); ASSERT_NE(f, nullptr); std::fputs("orphan", f); std::fclose(f); }
  Reopen();
  EXPECT_FALSE(fs::exists(orphan_path));
  EXPECT_EQ(store_->recovery().files_removed, 1u);
  EXPECT_OK(store_->OpenFile(Sha("kept")));

  // A damaged entry record is an error naming the path, never a crash or a partial tree.
  store_.reset();
  {
    auto index = Index::Open((root() / "index").string());
    ASSERT_OK(index);
    Index::Batch batch;
    batch.Put(Cf::kEntries, EntryKeyPrefix(layer) + "f", std::string("\x01\x09garbage", 9));
    batch.Put(Cf::kEntries, EntryKeyPrefix(layer) + "../x", EncodeEntry(TreeEntry{.path = "x", .type = EntryType::kDirectory}));
    ASSERT_OK((*index)->Write(batch));
  }
  Reopen();
  auto tree = store_->LoadTree(layer);
  ASSERT_ERRC(tree, Errc::kCorrupt);
  EXPECT_GT(store_->counters().corrupt_records, 0u);
}

}  // namespace
}  // namespace digestd::store
