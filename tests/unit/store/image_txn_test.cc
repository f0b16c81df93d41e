// Image transactions, the one liveness rule, the quota's count of unpacked bytes, recovery of
// what a kill leaves, and the online scrub.

#include "store/image_txn.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "store/index.h"
#include "testing/test_util.h"
#include "testing/txn_image.h"

namespace digestd::store {
namespace {

namespace fs = std::filesystem;
using digestd::testing::BuildImage;
using digestd::testing::BuiltImage;
using digestd::testing::CheckWhole;
using digestd::testing::MakeTar;
using digestd::testing::PullImage;
using digestd::testing::StageImage;
using digestd::testing::TempDir;
using verify::DigestAlgorithm;
using verify::Hasher;

std::size_t CountFiles(const fs::path& dir) {
  std::size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file() ? 1 : 0;
  return n;
}

// A base layer shared by every image, and one layer of each image's own.
std::string BaseTar() {
  return MakeTar({{"bin/sh", std::string(3000, 's')}, {"etc/os-release", "ID=test\n"}});
}
BuiltImage Image(int i, bool with_base = true) {
  std::vector<std::string> tars;
  if (with_base) tars.push_back(BaseTar());
  tars.push_back(MakeTar({{"app/id", "image " + std::to_string(i) + "\n"},
                          {"app/data", std::string(1000 + i, static_cast<char>('a' + i % 26))}}));
  return BuildImage("registry.test/app" + std::to_string(i) + ":v1", tars);
}

class ImageTxnTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  StoreOptions Options() { return StoreOptions{.root = root(), .quota_bytes = quota_}; }
  void Reopen() {
    store_.reset();
    auto s = Store::Open(Options());
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  fs::path root() const { return dir_.path() / sub_; }
  fs::path BlobPath(const Digest& d) const {
    return root() / "blobs" / "sha256" / std::string(d.hex().substr(0, 2)) / std::string(d.hex());
  }
  fs::path FilePath(const Digest& d) const {
    return root() / "files" / "sha256" / std::string(d.hex().substr(0, 2)) / std::string(d.hex());
  }
  void ExpectClean() {
    auto report = store_->Fsck(false);
    ASSERT_TRUE(report.has_value()) << report.error().ToString();
    for (const auto& p : report->problems) ADD_FAILURE() << p.what << ": " << p.detail;
  }

  TempDir dir_;
  std::string sub_ = "store";
  std::uint64_t quota_ = 0;
  StorePtr store_;
};

TEST_F(ImageTxnTest, CommitMakesTheImageWholeWithItsMetadata) {
  const auto img = Image(1);
  ASSERT_OK(PullImage(*store_, img, "team-a"));
  ASSERT_OK(CheckWhole(*store_, img));
  auto info = store_->Stat(img.layers[0]);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->tenant, "team-a");
  EXPECT_EQ(info->media_type, testing::kTxnLayerType);
  auto rec = store_->GetImageRecord(img.manifest);
  ASSERT_TRUE(rec.has_value() && rec->has_value());
  EXPECT_EQ((*rec)->tenant, "team-a");
  EXPECT_EQ(CountFiles(root() / "staging"), 0u);
  ExpectClean();
  Reopen();
  ASSERT_OK(CheckWhole(*store_, img));
  EXPECT_EQ(store_->recovery().uncommitted_removed, 0u);
  EXPECT_TRUE(store_->recovery().images_broken.empty());
}

// The mount's inode numbers (Store::InodesFor) are recorded by the image's own commit: the
// image's range holds its directory, its lowerdir file and every entry of its layers.
TEST_F(ImageTxnTest, CommitRecordsTheMountsInodeRanges) {
  const auto img = Image(11);
  ASSERT_OK(PullImage(*store_, img));
  std::uint64_t entries = 0;
  std::vector<InodeRange> layer_ranges;
  for (const auto& l : img.layers) {
    auto info = store_->GetTreeInfo(l);
    ASSERT_TRUE(info && *info);
    entries += (*info)->entries;
    // Recorded already: the same range comes back, from any number it holds.
    auto r = store_->InodesFor(InodeKind::kLayer, l, (*info)->entries);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    EXPECT_EQ(r->count, (*info)->entries);
    for (std::uint64_t ino : {r->first, r->first + r->count - 1}) {
      auto owner = store_->InodeOwner(ino);
      ASSERT_TRUE(owner && *owner);
      EXPECT_EQ((*owner)->digest, l);
      EXPECT_EQ((*owner)->kind, InodeKind::kLayer);
    }
    layer_ranges.push_back(*r);
  }
  auto image = store_->InodeOwner(layer_ranges.back().first + layer_ranges.back().count);
  ASSERT_TRUE(image && *image);
  EXPECT_EQ((*image)->kind, InodeKind::kImage);
  EXPECT_EQ((*image)->digest, img.manifest);
  EXPECT_EQ((*image)->count, entries + 2);
  // blobs/sha256/<hex> too: the manifest, the config and every layer have their number before
  // anything is served (serving never writes the index).
  std::vector<Digest> blobs = img.layers;
  blobs.push_back(img.manifest);
  blobs.push_back(img.config_digest);
  for (const auto& d : blobs) {
    auto ranges = store_->InodeRangesOf(d);
    ASSERT_TRUE(ranges.has_value()) << ranges.error().ToString();
    EXPECT_TRUE(std::any_of(ranges->begin(), ranges->end(), [](const InodeRange& r) {
      return r.kind == InodeKind::kBlob && r.count == 1;
    })) << d.ToString();
  }
  Reopen();
  auto again = store_->InodesFor(InodeKind::kImage, img.manifest, 2);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->first, (*image)->first);
}

TEST_F(ImageTxnTest, InodeRangesNeverOverlapAndGrowByRenumbering) {
  const Digest a = Hasher::Of(DigestAlgorithm::kSha256, "a");
  const Digest b = Hasher::Of(DigestAlgorithm::kSha256, "b");
  auto ra = store_->InodesFor(InodeKind::kLayer, a, 10);
  auto rb = store_->InodesFor(InodeKind::kBlob, b, 1);
  auto ra_blob = store_->InodesFor(InodeKind::kBlob, a, 1);  // another kind: another range
  ASSERT_TRUE(ra && rb && ra_blob);
  EXPECT_GE(ra->first, kFirstRangeIno);
  EXPECT_TRUE(rb->first >= ra->first + 10 || rb->first + 1 <= ra->first);
  EXPECT_NE(ra_blob->first, rb->first);
  EXPECT_EQ(store_->InodesFor(InodeKind::kLayer, a, 4)->first, ra->first);  // fits: same range
  // More room than recorded: a new range; the old numbers resolve to nothing.
  auto grown = store_->InodesFor(InodeKind::kLayer, a, 11);
  ASSERT_TRUE(grown.has_value());
  EXPECT_GT(grown->first, ra_blob->first);
  EXPECT_FALSE(store_->InodeOwner(ra->first)->has_value());
  EXPECT_EQ((*store_->InodeOwner(grown->first + 10))->digest, a);
  EXPECT_FALSE(store_->InodeOwner(grown->first + 11)->has_value());
  EXPECT_FALSE(store_->InodeOwner(3)->has_value());
  // The counter survives a reopen: nothing is handed out twice.
  Reopen();
  const Digest c = Hasher::Of(DigestAlgorithm::kSha256, "c");
  auto rc = store_->InodesFor(InodeKind::kLayer, c, 5);
  ASSERT_TRUE(rc.has_value());
  EXPECT_GE(rc->first, grown->first + 11);
}

TEST_F(ImageTxnTest, NothingIsRecordedBeforeCommitAndRollbackLeavesNothing) {
  const auto img = Image(2);
  {
    auto txn = store_->BeginImage("");
    ASSERT_TRUE(txn.has_value());
    ASSERT_OK(StageImage(**txn, img));
    // Staged: on disk under their names, but no record, no reference, no tree.
    EXPECT_TRUE(fs::exists(BlobPath(img.layers[0])));
    EXPECT_FALSE(store_->Contains(img.layers[0]));
    EXPECT_FALSE(store_->GetRef(img.reference).has_value());
    auto tree = store_->GetTreeInfo(img.layers[0]);
    ASSERT_TRUE(tree.has_value());
    EXPECT_FALSE(tree->has_value());
    // The config is readable through the transaction (the pull parses it).
    auto config = (*txn)->ReadBlob(img.config_digest, 1 << 20);
    ASSERT_TRUE(config.has_value()) << config.error().ToString();
    EXPECT_EQ(*config, img.config);
    // Neither GC nor fsck touches what a transaction staged.
    ASSERT_OK(store_->CollectGarbage(false));
    EXPECT_TRUE(fs::exists(BlobPath(img.layers[0])));
    ExpectClean();
  }
  EXPECT_EQ(CountFiles(root() / "blobs"), 0u);
  EXPECT_EQ(CountFiles(root() / "files"), 0u);
  EXPECT_EQ(store_->GetUsage().total(), 0u);
  ExpectClean();
}

TEST_F(ImageTxnTest, AKillBetweenStagingAndCommitLeavesNoTraceAfterRecovery) {
  const auto img = Image(3);
  ASSERT_OK(PullImage(*store_, Image(4)));  // something that must survive
  store_.reset();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto s = Store::Open(Options());
    if (!s) ::_exit(2);
    auto txn = (*s)->BeginImage("");
    if (!txn || !StageImage(**txn, img)) ::_exit(3);
    ::_exit(0);  // dies with the image staged, no destructor runs
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(fs::exists(BlobPath(img.layers[1])));  // staged files are there...
  Reopen();
  // ...and recovery removes them: none is adopted half-described.
  EXPECT_GE(store_->recovery().uncommitted_removed, 2u);
  EXPECT_FALSE(fs::exists(BlobPath(img.layers[1])));
  EXPECT_FALSE(store_->Contains(img.manifest));
  ASSERT_OK(CheckWhole(*store_, Image(4)));
  ExpectClean();
  // And the next pull brings the image back whole (the ENOENT-after-"success" bug).
  ASSERT_OK(PullImage(*store_, img));
  ASSERT_OK(CheckWhole(*store_, img));
}

TEST_F(ImageTxnTest, AManifestRecordedWithoutItsEdgesGetsThemBackFromTheNextPull) {
  const auto img = Image(5);
  ASSERT_OK(PullImage(*store_, img));
  // As an older digestd left it: the manifest stored without edges or media type.
  ASSERT_OK(store_->RemoveBlob(img.manifest));
  ASSERT_OK(store_->PutBlob(img.manifest, img.manifest_bytes, {}));
  ASSERT_FALSE(CheckWhole(*store_, img).has_value());
  ASSERT_OK(PullImage(*store_, img));
  auto children = store_->Children(img.manifest);
  ASSERT_TRUE(children.has_value());
  EXPECT_EQ(children->size(), 3u);
}

TEST_F(ImageTxnTest, ABlobBeingWrittenIsBusyAndAStagedOneIsShared) {
  const auto a = Image(6), b = Image(7);
  auto ta = store_->BeginImage("");
  auto tb = store_->BeginImage("");
  ASSERT_TRUE(ta.has_value() && tb.has_value());
  auto writer = (*ta)->Ingest(a.layers[0], a.blobs[0].size(),
                              {.media_type = testing::kTxnLayerType,
                               .diff_id = a.diff_ids[0],
                               .unpack = UnpackLimits{}});
  ASSERT_TRUE(writer.has_value() && *writer);
  ASSERT_ERRC((*tb)->Ingest(b.layers[0], b.blobs[0].size(), {.media_type = testing::kTxnLayerType}),
              Errc::kBusy);
  ASSERT_OK((*writer)->Write(a.blobs[0]));
  ASSERT_OK((*ta)->Stage(**writer));
  // Staged by A: B holds it without fetching it again.
  auto shared = (*tb)->Ingest(b.layers[0], b.blobs[0].size(), {.media_type = testing::kTxnLayerType});
  ASSERT_TRUE(shared.has_value());
  EXPECT_EQ(*shared, nullptr);
}

TEST_F(ImageTxnTest, TheFirstToFailLeavesTheSharedLayerToTheOther) {
  const auto a = Image(8), b = Image(9);
  auto tb = store_->BeginImage("");
  ASSERT_TRUE(tb.has_value());
  {
    auto ta = store_->BeginImage("");
    ASSERT_TRUE(ta.has_value());
    ASSERT_OK(StageImage(**ta, a));  // stages the base layer
    ASSERT_OK(StageImage(**tb, b));  // holds it
    // A fails (dropped uncommitted): the base layer stays for B.
  }
  ASSERT_OK((*tb)->Commit(testing::CommitOf(b, "")));
  tb->reset();
  ASSERT_OK(CheckWhole(*store_, b));
  EXPECT_FALSE(store_->Contains(a.manifest));
  ExpectClean();
}

TEST_F(ImageTxnTest, AFailingPullNeverRemovesALayerAnotherPullHolds) {
  // The reported bug (b): a pull failing on a bad diff_id deleted the layer a concurrent pull of
  // another image was committing.
  const auto a = Image(10), b = Image(11);
  auto ta = store_->BeginImage("");
  ASSERT_TRUE(ta.has_value());
  ASSERT_OK(StageImage(**ta, a));
  {
    auto tb = store_->BeginImage("");
    ASSERT_TRUE(tb.has_value());
    auto r = StageImage(**tb, b, /*bad_layer=*/1);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), Errc::kDigestMismatch) << r.error().ToString();
  }
  ASSERT_OK((*ta)->Commit(testing::CommitOf(a, "")));
  ta->reset();
  ASSERT_OK(CheckWhole(*store_, a));
  EXPECT_FALSE(fs::exists(BlobPath(b.layers[1])));
  ExpectClean();
}

TEST_F(ImageTxnTest, ConcurrentPullsOfImagesSharingLayersAllCommitWhole) {
  // 8 threads, images sharing two base layers taken in opposite orders; two of them fail.
  const std::string base1 = BaseTar();
  const std::string base2 = MakeTar({{"lib/libc.so", std::string(5000, 'c')}});
  std::vector<BuiltImage> images;
  for (int i = 0; i < 8; ++i) {
    std::vector<std::string> tars = i % 2 ? std::vector{base1, base2} : std::vector{base2, base1};
    tars.push_back(MakeTar({{"own", "image " + std::to_string(i)}}));
    images.push_back(BuildImage("registry.test/c" + std::to_string(i) + ":v1", tars));
  }
  std::vector<std::thread> threads;
  std::vector<std::optional<Error>> results(images.size());
  for (std::size_t i = 0; i < images.size(); ++i) {
    threads.emplace_back([&, i] {
      for (;;) {
        auto r = PullImage(*store_, images[i], "", i == 3 || i == 6 ? 2 : -1);
        if (!r && r.error().code() == Errc::kBusy) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        if (!r) results[i] = r.error();
        return;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (i == 3 || i == 6) {
      EXPECT_TRUE(results[i].has_value());
      EXPECT_FALSE(store_->Contains(images[i].manifest));
    } else {
      EXPECT_FALSE(results[i].has_value()) << results[i]->ToString();
      ASSERT_OK(CheckWhole(*store_, images[i]));
    }
  }
  EXPECT_EQ(CountFiles(root() / "staging"), 0u);
  ExpectClean();
}

TEST_F(ImageTxnTest, RemoversNeverTakeWhatATransactionHolds) {
  const auto a = Image(12), b = Image(13);
  ASSERT_OK(PullImage(*store_, a));
  auto tb = store_->BeginImage("");
  ASSERT_TRUE(tb.has_value());
  ASSERT_OK(StageImage(**tb, b));  // holds the stored base layer
  // The only image using the base layer goes, and every remover runs.
  ASSERT_OK(store_->RemoveImage(a.manifest));
  ASSERT_OK(store_->CollectGarbage(false));
  ASSERT_OK(store_->EnforceQuota());
  EXPECT_TRUE(store_->Contains(a.layers[0]));
  EXPECT_FALSE(store_->Contains(a.layers[1]));
  ASSERT_OK((*tb)->Commit(testing::CommitOf(b, "")));
  tb->reset();
  ASSERT_OK(CheckWhole(*store_, b));
  ExpectClean();
}

TEST_F(ImageTxnTest, ALeaseWipeSparesLayersOtherImagesUse) {
  // The reported bug (a): a tenant's wipe destroyed a base layer an image pulled without a
  // tenant still used.
  const auto shared = Image(14), mine = Image(15);
  ASSERT_OK(PullImage(*store_, shared));
  ASSERT_OK(PullImage(*store_, mine, "team-a"));
  ASSERT_OK(store_->PutLease({.id = "l1", .tenant = "team-a", .digests = {mine.manifest}}));
  auto wipe = store_->ReleaseLease("l1", true);
  ASSERT_TRUE(wipe.has_value()) << wipe.error().ToString();
  ASSERT_OK(CheckWhole(*store_, shared));
  EXPECT_FALSE(store_->Contains(mine.layers[1]));
  EXPECT_FALSE(store_->GetRef(mine.reference).has_value());
  auto rec = store_->GetImageRecord(mine.manifest);
  ASSERT_TRUE(rec.has_value());
  EXPECT_FALSE(rec->has_value());
  ExpectClean();
}

TEST_F(ImageTxnTest, QuotaCountsUnpackedBytes) {
  // A few KiB of gzip unpack to 4 MiB.
  const auto img = BuildImage("registry.test/zeros:v1",
                              {MakeTar({{"zeros", std::string(4u << 20, '\0')}})});
  ASSERT_LT(img.blobs[0].size(), 64u << 10);
  ASSERT_OK(PullImage(*store_, img));
  const auto usage = store_->GetUsage();
  EXPECT_EQ(usage.file_bytes, 4u << 20);
  EXPECT_EQ(usage.files, 1u);
  EXPECT_GE(usage.total(), (4u << 20) + img.blobs[0].size());
  auto size = store_->SizeOf(img.manifest);
  ASSERT_TRUE(size.has_value());
  EXPECT_EQ(size->file_bytes, 4u << 20);
  Reopen();  // recounted at start
  EXPECT_EQ(store_->GetUsage().file_bytes, 4u << 20);
}

TEST_F(ImageTxnTest, ALayerThatWouldUnpackPastTheQuotaIsRefusedBeforeItIsWritten) {
  quota_ = 1u << 20;
  Reopen();
  const auto img = BuildImage("registry.test/bomb:v1",
                              {MakeTar({{"zeros", std::string(4u << 20, '\0')}})});
  auto r = PullImage(*store_, img);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().ToString().find("the store is full"), std::string::npos)
      << r.error().ToString();
  EXPECT_EQ(CountFiles(root() / "files"), 0u);
  EXPECT_EQ(CountFiles(root() / "blobs"), 0u);
  EXPECT_EQ(store_->GetUsage().total(), 0u);
}

TEST_F(ImageTxnTest, QuotaEvictsUnheldImagesToMakeRoom) {
  quota_ = 40u << 10;
  Reopen();
  const auto old = BuildImage("registry.test/old:v1", {MakeTar({{"f", std::string(20000, 'o')}})});
  ASSERT_OK(PullImage(*store_, old));
  const auto next = BuildImage("registry.test/new:v1", {MakeTar({{"g", std::string(20000, 'n')}})});
  ASSERT_OK(PullImage(*store_, next));
  ASSERT_OK(CheckWhole(*store_, next));
  EXPECT_FALSE(store_->GetRef(old.reference).has_value());
  EXPECT_LE(store_->GetUsage().total(), quota_);
  ExpectClean();
}

TEST_F(ImageTxnTest, ACorruptRecordIsQuarantinedAndItsImageReportedBroken) {
  const auto img = Image(16);
  ASSERT_OK(PullImage(*store_, img));
  store_.reset();
  {
    auto index = Index::Open((root() / "index").string());
    ASSERT_TRUE(index.has_value());
    Index::Batch batch;
    batch.Put(Cf::kBlobs, img.layers[1].ToString(), "{not json");
    ASSERT_OK((*index)->Write(batch));
  }
  Reopen();
  EXPECT_EQ(store_->recovery().quarantined, 1u);
  ASSERT_EQ(store_->recovery().images_broken.size(), 1u);
  EXPECT_EQ(store_->recovery().images_broken[0], img.reference);
  EXPECT_TRUE(fs::exists(root() / "quarantine" / img.layers[1].ToString()));
  EXPECT_FALSE(store_->Contains(img.layers[1]));
  // Pulled again, whole.
  ASSERT_OK(PullImage(*store_, img));
  ASSERT_OK(CheckWhole(*store_, img));
  ExpectClean();
  Reopen();
  EXPECT_TRUE(store_->recovery().images_broken.empty());
}

TEST_F(ImageTxnTest, ATruncatedFileObjectFoundAtStartIsQuarantinedAndRefetched) {
  const auto img = Image(17);
  ASSERT_OK(PullImage(*store_, img));
  auto tree = store_->LoadTree(img.layers[1]);
  ASSERT_TRUE(tree.has_value());
  std::optional<Digest> data;
  for (const auto& e : tree->entries) {
    if (e.path == "app/data") data = e.content;
  }
  ASSERT_TRUE(data.has_value());
  store_.reset();
  fs::permissions(FilePath(*data), fs::perms::owner_write, fs::perm_options::add);
  fs::resize_file(FilePath(*data), 10);
  Reopen();
  EXPECT_EQ(store_->recovery().quarantined, 1u);
  ASSERT_EQ(store_->recovery().images_broken.size(), 1u);
  EXPECT_FALSE(store_->Contains(img.layers[1]));
  EXPECT_TRUE(store_->Contains(img.layers[0]));  // the base layer did not use it
  ASSERT_OK(PullImage(*store_, img));
  ASSERT_OK(CheckWhole(*store_, img));
  ExpectClean();
}

TEST_F(ImageTxnTest, ScrubFindsRotASliceAtATimeAndRepairRemovesIt) {
  const auto a = Image(18), b = Image(19);
  ASSERT_OK(PullImage(*store_, a));
  ASSERT_OK(PullImage(*store_, b));
  // Rot in one file object of b's own layer.
  auto tree = store_->LoadTree(b.layers[1]);
  ASSERT_TRUE(tree.has_value());
  std::optional<Digest> data;
  for (const auto& e : tree->entries) {
    if (e.path == "app/data") data = e.content;
  }
  ASSERT_TRUE(data.has_value());
  {
    fs::permissions(FilePath(*data), fs::perms::owner_write, fs::perm_options::add);
    std::fstream f(FilePath(*data), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.write("ROT", 3);
  }
  // A small budget per call: several calls, resumed where the last stopped, make one pass.
  std::uint64_t blobs = 0, files = 0, problems = 0;
  int calls = 0;
  for (bool done = false; !done && calls < 100; ++calls) {
    auto r = store_->Scrub({.max_bytes = 2000, .rate_bytes_per_s = 0});
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    blobs += r->blobs_checked;
    files += r->files_checked;
    problems += r->problems.size();
    done = r->pass_complete;
    if (calls == 1) {  // a restart resumes from the saved position
      Reopen();
    }
  }
  EXPECT_GT(calls, 3);
  EXPECT_EQ(blobs, CountFiles(root() / "blobs"));
  EXPECT_EQ(files, CountFiles(root() / "files"));
  EXPECT_EQ(problems, 1u);
  EXPECT_GT(store_->counters().scrub_bytes, 0u);
  // Repair: the damaged object goes with the layer using it; the other image is untouched.
  auto repair = store_->Scrub({.rate_bytes_per_s = 0, .repair = true, .restart = true});
  ASSERT_TRUE(repair.has_value());
  ASSERT_EQ(repair->problems.size(), 1u);
  EXPECT_TRUE(repair->problems[0].repaired);
  EXPECT_FALSE(store_->Contains(b.layers[1]));
  ASSERT_OK(CheckWhole(*store_, a));
  ASSERT_OK(PullImage(*store_, b));
  ASSERT_OK(CheckWhole(*store_, b));
  auto clean = store_->Scrub({.rate_bytes_per_s = 0, .restart = true});
  ASSERT_TRUE(clean.has_value());
  EXPECT_TRUE(clean->problems.empty());
  EXPECT_TRUE(clean->pass_complete);
}

// Random interleavings of pulls (some failing, some left open across other steps), leases,
// wipes, GC, quota and removals over images sharing base layers: after every step, every image
// the store admits (reference + record) reads back whole, and fsck is clean at the end.
TEST_F(ImageTxnTest, RandomInterleavingsNeverLoseALiveImage) {
  quota_ = 48u << 10;
  const std::string base1 = BaseTar();
  const std::string base2 = MakeTar({{"lib/a", std::string(4000, 'x')}});
  const std::string base3 = MakeTar({{"lib/b", std::string(3000, 'y')}});
  const std::string base4 = MakeTar({{"lib/c", std::string(2000, 'z')}});
  std::vector<std::string> bases = {base1, base2, base3, base4};
  for (int seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    sub_ = "store-" + std::to_string(seed);
    Reopen();
    std::mt19937 rng(static_cast<unsigned>(seed));
    std::vector<BuiltImage> images;
    for (int i = 0; i < 10; ++i) {
      std::vector<std::string> tars = {bases[rng() % 4], bases[rng() % 4]};
      if (tars[0] == tars[1]) tars.pop_back();
      tars.push_back(MakeTar({{"own", "seed " + std::to_string(seed) + " image " +
                                          std::to_string(i) + std::string(rng() % 3000, 'q')}}));
      images.push_back(BuildImage("registry.test/p" + std::to_string(i) + ":v1", tars));
    }
    const std::vector<std::string> tenants = {"", "team-a", "team-b"};
    std::vector<std::unique_ptr<ImageTxn>> open;
    std::vector<BuiltImage> open_images;
    int leases = 0;
    for (int step = 0; step < 120; ++step) {
      const int op = static_cast<int>(rng() % 10);
      const auto& img = images[rng() % images.size()];
      const auto& tenant = tenants[rng() % tenants.size()];
      if (op <= 2) {
        auto r = PullImage(*store_, img, tenant, rng() % 5 == 0 ? 0 : -1);
        (void)r;  // failures (bad diff_id, quota, busy) are allowed; losses are not
      } else if (op == 3) {
        auto txn = store_->BeginImage(tenant);
        ASSERT_TRUE(txn.has_value());
        if (StageImage(**txn, img)) {
          open.push_back(std::move(*txn));
          open_images.push_back(img);
        }
      } else if (op == 4 && !open.empty()) {
        const std::size_t k = rng() % open.size();
        if (rng() % 2) (void)open[k]->Commit(testing::CommitOf(open_images[k], open[k]->tenant()));
        open.erase(open.begin() + static_cast<long>(k));
        open_images.erase(open_images.begin() + static_cast<long>(k));
      } else if (op == 5) {
        if (store_->Contains(img.manifest)) {
          ASSERT_OK(store_->PutLease({.id = "l" + std::to_string(++leases),
                                      .tenant = tenant.empty() ? "shared" : tenant,
                                      .digests = {img.manifest}}));
        }
      } else if (op == 6) {
        auto list = store_->ListLeases();
        ASSERT_TRUE(list.has_value());
        if (!list->empty()) {
          const auto& l = (*list)[rng() % list->size()];
          ASSERT_OK(store_->ReleaseLease(l.id, rng() % 2 == 0));
        }
      } else if (op == 7) {
        ASSERT_OK(store_->CollectGarbage(false));
      } else if (op == 8) {
        ASSERT_OK(store_->EnforceQuota());
      } else {
        (void)store_->RemoveImage(img.manifest);
      }
      // Every admitted image is whole.
      auto refs = store_->ListRefs();
      ASSERT_TRUE(refs.has_value());
      for (const auto& ref : *refs) {
        for (const auto& candidate : images) {
          if (candidate.reference != ref.reference || candidate.manifest != ref.digest) continue;
          auto whole = CheckWhole(*store_, candidate);
          ASSERT_TRUE(whole.has_value())
              << "step " << step << " op " << op << ": " << whole.error().ToString();
        }
      }
    }
    open.clear();
    ExpectClean();
    EXPECT_EQ(CountFiles(root() / "staging"), 0u);
  }
}

}  // namespace
}  // namespace digestd::store
