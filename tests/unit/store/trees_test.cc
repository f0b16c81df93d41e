// Layer unpacking: trees, file objects, and every hostile layer refused with nothing kept.

#include <fcntl.h>
#include <gtest/gtest.h>

#include <set>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "store/index.h"
#include "store/store.h"
#include "store/tree_codec.h"
#include "testing/store_image.h"
#include "testkit/tar_builder.h"
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

// Every test runs twice: unpacking a stored blob (Store::UnpackLayer, as for a layer already in
// the store), and unpacking while the blob streams in (Store::Ingest with `unpack`, as a pull
// does), where a refused layer must not leave the blob committed either.
class UnpackFixture : public ::testing::Test {
 protected:
  virtual bool streaming() const = 0;
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    // While downloading, every layer is also decompressed ahead of the parser on its own thread.
    auto s = Store::Open({.root = root(), .pipeline_threshold = streaming() ? 0u : 1u << 30});
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
    if (!streaming()) {
      if (auto r = store_->PutBlob(layer, blob, {.media_type = std::string(media_type)}); !r) {
        return r.error();
      }
      return store_->UnpackLayer(layer, Sha(tar), "", limits);
    }
    IngestOptions opts{.media_type = std::string(media_type)};
    opts.diff_id = Sha(tar);
    opts.unpack = limits;
    DIGESTD_ASSIGN_OR_RETURN(auto writer, store_->Ingest(layer, blob.size(), opts));
    // Uneven pieces, so the tree reader waits for the writer at odd places.
    std::size_t at = 0;
    for (std::size_t n = 1; at < blob.size(); n = n * 7 % 300007 + 1) {
      const std::size_t len = std::min(n, blob.size() - at);
      DIGESTD_RETURN_IF_ERROR(writer->Write(std::string_view(blob).substr(at, len)));
      at += len;
    }
    if (auto r = writer->Commit(); !r) {
      EXPECT_FALSE(store_->Contains(layer)) << "a refused layer's blob was committed";
      return r.error();
    }
    std::vector<PendingTreePtr> trees;
    trees.push_back(writer->TakeTree());
    EXPECT_NE(trees.front(), nullptr);
    if (!trees.front()) return MakeError(Module::kStore, Errc::kInternal, "no tree");
    DIGESTD_RETURN_IF_ERROR(store_->CommitTrees(trees));
    return trees.front()->info();
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
    // A refusal test names the reason it expects: an empty needle would accept any error.
    ASSERT_FALSE(needle.empty()) << "name the expected reason";
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

class UnpackTest : public UnpackFixture, public ::testing::WithParamInterface<bool> {
 protected:
  bool streaming() const override { return GetParam(); }
};

// What only the streaming path has: a download that fails or is abandoned halfway.
class StreamingUnpackTest : public UnpackFixture {
 protected:
  bool streaming() const override { return true; }

  BlobWriterPtr Start(const std::string& blob, const std::string& tar) {
    IngestOptions opts{.media_type = std::string(kTarGzip)};
    opts.diff_id = Sha(tar);
    opts.unpack = UnpackLimits{};
    auto w = store_->Ingest(Sha(blob), blob.size(), opts);
    EXPECT_TRUE(w.has_value()) << w.error().ToString();
    return w ? std::move(*w) : nullptr;
  }

  std::size_t RefusalAudits() {
    auto events = store_->ReadAudit(0, 1000);
    EXPECT_TRUE(events.has_value());
    std::size_t n = 0;
    if (!events) return n;
    for (const auto& e : *events) {
      n += e.json.find("\"store.unpack.refused\"") != std::string::npos ? 1 : 0;
    }
    return n;
  }
};

TEST_P(UnpackTest, RecordsEveryKindOfEntry) {
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

TEST_P(UnpackTest, GzipZstdAndPlainAndContentStoredOnce) {
  // Past the in-memory buffer: written through a temp file (O_DIRECT where the filesystem allows
  // it), with a size that is not a multiple of any block.
  std::string big((3u << 20) + 5, '\0');
  std::mt19937_64 rng(3);
  for (auto& c : big) c = static_cast<char>(rng());
  for (auto media : {kTar, kTarGzip, kTarZstd}) {
    TarBuilder t;
    t.File("shared", "same bytes in every layer").File("big", big);
    t.File(std::string("only-") + std::string(media.substr(media.size() - 4)), std::string(media));
    ASSERT_OK(Unpack(t.Finish(), media));
  }
  auto usage = store_->FileUsage();
  ASSERT_OK(usage);
  EXPECT_EQ(usage->blobs, 2u + 3u);  // "shared" and "big" once, one unique file per layer
  EXPECT_TRUE(ReadFileObject(Sha(big)) == big);
}

TEST_P(UnpackTest, WrongDiffIdKeepsNothing) {
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

TEST_P(UnpackTest, HostilePathsAreRefused) {
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

TEST_P(UnpackTest, HostileLinksAreRefused) {
  ExpectRefused(TarBuilder().Hardlink("x", "missing").Finish(), "hard link to missing");
  ExpectRefused(TarBuilder().Hardlink("x", "../outside").Finish(), "\"..\" component");
  ExpectRefused(TarBuilder().Hardlink("x", "/etc/shadow").Finish(), "absolute path");
  ExpectRefused(TarBuilder().Dir("d/").Hardlink("x", "d").Finish(), "which is a directory");
  ExpectRefused(TarBuilder().File("x", "1").Hardlink("x", "x").Finish(), "hard link to itself");
  ExpectRefused(TarBuilder().Symlink("l", std::string(5000, 'a')).Finish(), "symlink target empty or too long");
  ExpectRefused(TarBuilder().Xattr("trusted.overlay.redirect", "/etc").File("f", "x").Finish(),
                "trusted namespace");
  ExpectRefused(TarBuilder().Xattr("trusted.overlay.opaque", "y").Dir("d/").Finish(),
                "trusted namespace");
}

TEST_P(UnpackTest, DuplicatesLastWins) {
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

TEST_P(UnpackTest, BombsAndTruncationAreRefused) {
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
  ExpectRefused(tar.substr(0, 3000), "Truncated tar archive", {}, kTar);
  ExpectRefused(tar.substr(0, 512 * 21 + 100), "Truncated tar archive", {}, kTar);
  {
    const std::string gz = TarBuilder::Gzip(tar);
    const std::string cut = gz.substr(0, gz.size() / 2);
    const Digest layer = Sha(cut);
    ASSERT_OK(store_->PutBlob(layer, cut, {.media_type = std::string(kTarGzip)}));
    ASSERT_ERRC(store_->UnpackLayer(layer, Sha(tar)), Errc::kCorrupt);
  }
  ExpectRefused(std::string(4096, 'G'), "not a tar archive", {}, kTar);  // not a tar at all
}

TEST_P(UnpackTest, RefusedLayerKeepsFilesOtherLayersUse) {
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

TEST_P(UnpackTest, ConcurrentUnpacksSharingContent) {
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

TEST_P(UnpackTest, PreparedTreesAreInvisibleUntilCommittedTogether) {
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

TEST_P(UnpackTest, ReleaseWithWipeOverwritesOnlyTheTenantsOwnData) {
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

// A tenant's wipe takes only what nothing else reaches: an image pulled without a tenant (a
// reference, an image record) that shares the tenant's base layer keeps it whole (found by
// review: the base layer was wiped and that image's rootfs answered ENOENT).
TEST_P(UnpackTest, WipeNeverTakesWhatAnotherImageStillUses) {
  const std::string base = TarBuilder().File("etc/base.txt", "base").Finish();
  auto a = digestd::testing::PutImage(
      *store_, {base, TarBuilder().File("secret", "tenant a's secret").Finish()}, "a");
  ASSERT_OK(a);
  // Pulled afterwards without a tenant: the base layer is already there (recorded as a's).
  auto x = digestd::testing::PutImage(*store_, {base, TarBuilder().File("x", "x").Finish()}, "");
  ASSERT_OK(x);
  ASSERT_EQ(a->layers[0], x->layers[0]);
  ASSERT_OK(store_->SetRef("reg.example/x:v1", x->manifest));
  ASSERT_OK(store_->PutImageRecord({.manifest = x->manifest, .image_manifest = x->manifest,
                                    .reference = "reg.example/x:v1"}));
  ASSERT_OK(store_->SetRef("reg.example/a:v1", a->manifest));
  ASSERT_OK(store_->PutImageRecord({.manifest = a->manifest, .image_manifest = a->manifest,
                                    .reference = "reg.example/a:v1", .tenant = "a"}));
  ASSERT_OK(store_->PutLease({.id = "la", .tenant = "a", .digests = {a->manifest}}));

  auto report = store_->ReleaseLease("la", /*wipe=*/true);
  ASSERT_OK(report);
  EXPECT_FALSE(store_->Contains(a->layers[1]));  // a's own layer went
  EXPECT_FALSE(store_->Contains(a->manifest));
  ASSERT_ERRC(store_->OpenFile(Sha("tenant a's secret")), Errc::kNotFound);
  // x reads back whole: its manifest, both layers, their trees and files.
  EXPECT_TRUE(store_->Contains(x->manifest));
  for (const auto& l : x->layers) {
    EXPECT_TRUE(store_->Contains(l)) << l.ToString();
    ASSERT_OK(store_->LoadTree(l));
  }
  ASSERT_OK(store_->OpenFile(Sha("base")));
  ASSERT_OK(store_->GetRef("reg.example/x:v1"));
  auto gc = store_->CollectGarbage(/*dry_run=*/true);
  ASSERT_OK(gc);
  for (const auto& b : gc->swept) EXPECT_NE(b.digest, x->layers[0]);
}

// fsck covers what the mount serves: file objects are re-hashed (found by review: a tampered
// object served "EVIL CONTENT!" through the mount while fsck said clean), trees are checked
// against their objects, and every image record against its blobs and trees (fsck said clean
// right after a wipe had taken a layer another image needed).
TEST_P(UnpackTest, FsckChecksFileObjectsTreesAndImages) {
  auto img = digestd::testing::PutImage(
      *store_, {TarBuilder().File("etc/motd", "welcome").File("bin/tool", "tool bytes").Finish()});
  ASSERT_OK(img);
  ASSERT_OK(store_->PutImageRecord({.manifest = img->manifest, .image_manifest = img->manifest,
                                    .reference = "reg.example/app:v1"}));
  auto clean = store_->Fsck(false);
  ASSERT_OK(clean);
  EXPECT_TRUE(clean->clean());
  EXPECT_EQ(clean->files_checked, 2u);
  EXPECT_EQ(clean->trees_checked, 1u);

  // Tamper with a file object in place (same size, so nothing but a hash can tell).
  const Digest motd = Sha("welcome");
  const fs::path object = root() / "files" / "sha256" / std::string(motd.hex().substr(0, 2)) /
                          std::string(motd.hex());
  fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(object, std::ios::binary | std::ios::in | std::ios::out) << "EVIL!!!";
  auto tampered = store_->Fsck(false);
  ASSERT_OK(tampered);
  EXPECT_FALSE(tampered->clean());
  std::set<std::string> kinds;
  for (const auto& p : tampered->problems) kinds.insert(p.what);
  EXPECT_TRUE(kinds.count("file-object-mismatch")) << ::testing::PrintToString(kinds);
  EXPECT_TRUE(kinds.count("tree-missing-file")) << ::testing::PrintToString(kinds);
  EXPECT_TRUE(kinds.count("image-incomplete")) << ::testing::PrintToString(kinds);

  // Repair removes the object and the layer that needed it, so a re-pull fetches it again; the
  // image stays reported incomplete until then, never silently "clean".
  auto repaired = store_->Fsck(true);
  ASSERT_OK(repaired);
  EXPECT_FALSE(store_->Contains(img->layers[0]));
  ASSERT_ERRC(store_->OpenFile(motd), Errc::kNotFound);
  auto after = store_->Fsck(false);
  ASSERT_OK(after);
  ASSERT_EQ(after->problems.size(), 1u);
  EXPECT_EQ(after->problems[0].what, "image-incomplete");
  EXPECT_NE(after->problems[0].detail.find("pull it again"), std::string::npos);
}

// An existing file object is reused by a new layer only if its bytes hash to its name: a
// tampered object of the right size is replaced by the verified bytes, never adopted.
TEST_P(UnpackTest, ADamagedObjectOfTheRightSizeIsNeverReused) {
  Digest first = Sha("x");
  ASSERT_OK(Unpack(TarBuilder().File("a", "the true bytes").Finish(), kTarGzip, {}, &first));
  const Digest content = Sha("the true bytes");
  const fs::path object = root() / "files" / "sha256" / std::string(content.hex().substr(0, 2)) /
                          std::string(content.hex());
  fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(object, std::ios::binary | std::ios::in | std::ios::out) << "the evil bytes";
  Digest second = Sha("y");
  ASSERT_OK(Unpack(TarBuilder().File("b", "the true bytes").File("c", "c").Finish(), kTarGzip, {},
                   &second));
  auto fd = store_->OpenFile(content);
  ASSERT_OK(fd);
  char buf[64] = {};
  const ssize_t n = ::pread(fd->Get(), buf, sizeof buf, 0);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), "the true bytes");
}

TEST_P(UnpackTest, RemovingALayerRemovesItsTreeAndOnlyItsFiles) {
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

TEST_P(UnpackTest, RecoveryRemovesUnreferencedFileObjectsAndCorruptTreesFailLoudly) {
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

// A flipped byte in the download is a digest mismatch (the registry sent wrong bytes), not a
// refused layer, even though the tree reader chokes on it first; nothing is kept.
TEST_F(StreamingUnpackTest, WrongBytesAreADigestMismatch) {
  TarBuilder t;
  for (int i = 0; i < 40; ++i) t.File("d/f" + std::to_string(i), std::string(20000, 'a' + i % 26));
  const std::string tar = t.Finish();
  const std::string blob = TarBuilder::Gzip(tar);
  std::string bad = blob;
  bad[bad.size() / 2] ^= 0x20;
  auto writer = Start(blob, tar);
  ASSERT_NE(writer, nullptr);
  ASSERT_OK(writer->Write(bad));
  ASSERT_ERRC(writer->Commit(), Errc::kDigestMismatch);
  EXPECT_FALSE(store_->Contains(Sha(blob)));
  EXPECT_EQ(CountFiles(root() / "files"), 0u);
  EXPECT_EQ(CountFiles(root() / "staging"), 0u);
  EXPECT_EQ(writer->TakeTree(), nullptr);
}

// A download abandoned halfway (connection lost for good, pull cancelled) removes the file
// objects written so far and is not audited as a refused layer.
TEST_F(StreamingUnpackTest, AbandonedDownloadKeepsNothing) {
  // Incompressible content, so that the blob is several follower windows long.
  std::mt19937_64 rng(7);
  TarBuilder t;
  for (int i = 0; i < 64; ++i) {
    std::string data(100000, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    t.File("f" + std::to_string(i), data);
  }
  const std::string tar = t.Finish();
  const std::string blob = TarBuilder::Gzip(tar);
  const std::size_t audits = RefusalAudits();
  {
    auto writer = Start(blob, tar);
    ASSERT_NE(writer, nullptr);
    ASSERT_OK(writer->Write(std::string_view(blob).substr(0, blob.size() * 3 / 4)));
    // Some file objects exist by now: the tree reader follows the writer.
    for (int i = 0; i < 500 && CountFiles(root() / "files") == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_GT(CountFiles(root() / "files"), 0u);
    writer->Abort();
  }
  EXPECT_FALSE(store_->Contains(Sha(blob)));
  EXPECT_EQ(CountFiles(root() / "files"), 0u);
  EXPECT_EQ(CountFiles(root() / "staging"), 0u);
  EXPECT_EQ(RefusalAudits(), audits);
  // A truncated download is a size mismatch, and keeps nothing either.
  auto writer = Start(blob, tar);
  ASSERT_NE(writer, nullptr);
  ASSERT_OK(writer->Write(std::string_view(blob).substr(0, blob.size() - 10)));
  ASSERT_ERRC(writer->Commit(), Errc::kSizeMismatch);
  EXPECT_EQ(CountFiles(root() / "files"), 0u);
  EXPECT_EQ(CountFiles(root() / "staging"), 0u);
}

TEST_F(StreamingUnpackTest, UnpackNeedsADiffId) {
  IngestOptions opts{.media_type = std::string(kTarGzip)};
  opts.unpack = UnpackLimits{};
  ASSERT_ERRC(store_->Ingest(Sha("x"), 1, opts), Errc::kInvalidArgument);
  // The digest is free again.
  opts.unpack.reset();
  ASSERT_OK(store_->Ingest(Sha("x"), 1, opts));
}

INSTANTIATE_TEST_SUITE_P(Store, UnpackTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "WhileDownloading" : "AfterCommit";
                         });

}  // namespace
}  // namespace digestd::store
