#include "store/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "store/audit_event.h"
#include "store/image_txn.h"
#include "store/index.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::store {
namespace {

namespace fs = std::filesystem;
using digestd::testing::TempDir;
using verify::DigestAlgorithm;
using verify::Hasher;

Digest Sha(std::string_view data) { return Hasher::Of(DigestAlgorithm::kSha256, data); }

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(out.size()))) > 0) {
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::size_t CountEntries(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  StoreOptions Options() {
    return StoreOptions{.root = root(), .clock = [this] { return now_.load(); }};
  }
  void Reopen(StoreOptions opts) {
    store_.reset();
    auto s = Store::Open(opts);
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  void Reopen() { Reopen(Options()); }
  fs::path root() const { return dir_.path() / "store"; }
  fs::path BlobPath(const Digest& d) const {
    return root() / "blobs" / "sha256" / std::string(d.hex().substr(0, 2)) / std::string(d.hex());
  }
  Digest Put(std::string_view data, IngestOptions opts = {}) {
    const Digest d = Sha(data);
    auto r = store_->PutBlob(d, data, std::move(opts));
    EXPECT_TRUE(r.has_value()) << r.error().ToString();
    return d;
  }

  TempDir dir_;
  std::atomic<std::int64_t> now_{1'700'000'000};
  StorePtr store_;
};

TEST_F(StoreTest, LayoutAndPermissions) {
  for (const char* sub : {"", "/index", "/blobs", "/files", "/staging", "/blobs/sha256/ab",
                          "/blobs/sha512/00"}) {
    struct stat st {};
    ASSERT_EQ(::stat((root().string() + sub).c_str(), &st), 0) << sub;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << sub;
    if (std::string_view(sub) != "/index") {
      EXPECT_EQ(st.st_mode & 0777, 0700u) << sub;
    }
  }
}

TEST_F(StoreTest, IngestCommitOpenStat) {
  const std::string data = "hello, verified world";
  const Digest d = Sha(data);
  auto w = store_->Ingest(d, data.size(), {.media_type = "application/octet-stream"});
  ASSERT_OK(w);
  ASSERT_OK((*w)->Write(data.substr(0, 5)));
  ASSERT_OK((*w)->Write(data.substr(5)));
  EXPECT_FALSE(store_->Contains(d));  // nothing visible before commit
  ASSERT_OK((*w)->Commit());
  EXPECT_TRUE(store_->Contains(d));

  struct stat st {};
  ASSERT_EQ(::stat(BlobPath(d).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  auto fd = store_->OpenBlob(d);
  ASSERT_OK(fd);
  EXPECT_EQ(ReadAll(fd->Get()), data);
  auto info = store_->Stat(d);
  ASSERT_OK(info);
  EXPECT_EQ(info->size, data.size());
  EXPECT_EQ(info->media_type, "application/octet-stream");
  EXPECT_EQ(info->created, now_.load());
  EXPECT_EQ(store_->GetUsage().bytes, data.size());
  EXPECT_EQ(CountEntries(root() / "staging"), 0u);
  ASSERT_ERRC(store_->Ingest(d, data.size()), Errc::kAlreadyExists);
  EXPECT_OK(store_->PutBlob(d, data));  // idempotent
}

TEST_F(StoreTest, LargeBlobsAreHashedFromTheFileOnASecondCore) {
  // Over the 4 MiB threshold: the staging file is hashed behind the writer.
  std::string data(20u << 20, '\0');
  std::uint64_t x = 42;
  for (auto& c : data) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    c = static_cast<char>(x >> 56);
  }
  const Digest d = Sha(data);
  auto w = store_->Ingest(d, data.size());
  ASSERT_OK(w);
  // Odd chunk sizes, so windows and pages never line up with writes.
  for (std::size_t off = 0; off < data.size();) {
    const std::size_t n = std::min<std::size_t>(data.size() - off, 777'777);
    ASSERT_OK((*w)->Write(std::string_view(data).substr(off, n)));
    off += n;
  }
  ASSERT_OK((*w)->Commit());
  auto fd = store_->OpenBlob(d);
  ASSERT_OK(fd);
  EXPECT_EQ(Sha(ReadAll(fd->Get())), d);

  // One flipped byte in the middle of a large blob is caught.
  std::string bad = data;
  bad[bad.size() / 2] ^= 1;
  bad[0] ^= 1;  // a different blob than `data`, still claiming its own original digest below
  const Digest claimed = Sha(std::string(bad.size(), 'q'));
  auto w2 = store_->Ingest(claimed, bad.size());
  ASSERT_OK(w2);
  ASSERT_OK((*w2)->Write(bad));
  ASSERT_ERRC((*w2)->Commit(), Errc::kDigestMismatch);
  EXPECT_FALSE(store_->Contains(claimed));

  // Abort in the middle of a large blob (the hasher thread is stopped before its fd closes).
  auto w3 = store_->Ingest(Sha("never finished"), data.size());
  ASSERT_OK(w3);
  ASSERT_OK((*w3)->Write(std::string_view(data).substr(0, 9u << 20)));
  (*w3)->Abort();
  EXPECT_EQ(CountEntries(root() / "staging"), 0u);
}

TEST_F(StoreTest, EmptyBlob) {
  const Digest d = Put("");
  auto info = store_->Stat(d);
  ASSERT_OK(info);
  EXPECT_EQ(info->size, 0u);
}

TEST_F(StoreTest, WritingPastExpectedSizeFailsAtOnce) {
  const std::string data = "0123456789";
  auto w = store_->Ingest(Sha(data), 5);
  ASSERT_OK(w);
  ASSERT_OK((*w)->Write(data.substr(0, 4)));
  ASSERT_ERRC((*w)->Write(data.substr(4, 2)), Errc::kTooLarge);
  ASSERT_ERRC((*w)->Write("x"), Errc::kTooLarge);  // poisoned
  ASSERT_ERRC((*w)->Commit(), Errc::kTooLarge);
  EXPECT_FALSE(store_->Contains(Sha(data)));
  EXPECT_EQ(CountEntries(root() / "staging"), 0u);
}

TEST_F(StoreTest, TruncatedBodyIsSizeMismatch) {
  const std::string data = "0123456789";
  auto w = store_->Ingest(Sha(data), data.size());
  ASSERT_OK(w);
  ASSERT_OK((*w)->Write(data.substr(0, 9)));
  auto r = (*w)->Commit();
  ASSERT_ERRC(r, Errc::kSizeMismatch);
  EXPECT_NE(r.error().context().find("expected 10 bytes, got 9"), std::string::npos);
  EXPECT_FALSE(store_->Contains(Sha(data)));
  EXPECT_EQ(store_->counters().size_mismatches, 1u);
}

TEST_F(StoreTest, DigestMismatchNamesBothDigestsAndCommitsNothing) {
  const std::string claimed = "the bytes the manifest promised";
  const std::string served = "the bytes the registry served!!";
  ASSERT_EQ(claimed.size(), served.size());
  auto w = store_->Ingest(Sha(claimed), claimed.size());
  ASSERT_OK(w);
  ASSERT_OK((*w)->Write(served));
  auto r = (*w)->Commit();
  ASSERT_ERRC(r, Errc::kDigestMismatch);
  EXPECT_NE(r.error().context().find("expected " + Sha(claimed).ToString()), std::string::npos);
  EXPECT_NE(r.error().context().find("got " + Sha(served).ToString()), std::string::npos);
  EXPECT_FALSE(store_->Contains(Sha(claimed)));
  EXPECT_FALSE(fs::exists(BlobPath(Sha(claimed))));
  EXPECT_FALSE(fs::exists(BlobPath(Sha(served))));
  EXPECT_EQ(CountEntries(root() / "staging"), 0u);
  EXPECT_EQ(store_->counters().digest_mismatches, 1u);
  // The digest is free again for a correct ingest.
  EXPECT_OK(store_->PutBlob(Sha(claimed), claimed));
}

TEST_F(StoreTest, AbortAndDestructionDiscard) {
  const std::string data = "discard me";
  {
    auto w = store_->Ingest(Sha(data), data.size());
    ASSERT_OK(w);
    ASSERT_OK((*w)->Write(data));
    (*w)->Abort();
    (*w)->Abort();  // idempotent
    ASSERT_ERRC((*w)->Commit(), Errc::kAborted);
  }
  {
    auto w = store_->Ingest(Sha(data), data.size());
    ASSERT_OK(w);
    ASSERT_OK((*w)->Write(data));
  }  // destroyed uncommitted
  EXPECT_FALSE(store_->Contains(Sha(data)));
  EXPECT_EQ(CountEntries(root() / "staging"), 0u);
  EXPECT_EQ(store_->counters().aborts, 2u);
}

TEST_F(StoreTest, ConcurrentIngestOfOneDigestYieldsOneFile) {
  const std::string data(1 << 20, 'z');
  const Digest d = Sha(data);
  constexpr int kThreads = 8;
  std::atomic<int> committed{0}, existed{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto w = store_->Ingest(d, data.size());
      if (!w) {
        (w.error().code() == Errc::kAlreadyExists ? existed : other)++;
        return;
      }
      for (std::size_t off = 0; off < data.size(); off += 4096) {
        if (!(*w)->Write(std::string_view(data).substr(off, 4096))) {
          other++;
          return;
        }
      }
      ((*w)->Commit() ? committed : other)++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(committed.load(), 1);
  EXPECT_EQ(existed.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(store_->GetUsage().blobs, 1u);
  EXPECT_EQ(CountEntries(BlobPath(d).parent_path()), 1u);
}

TEST_F(StoreTest, WaiterTakesOverWhenFirstWriterAborts) {
  const std::string data = "take over";
  const Digest d = Sha(data);
  auto first = store_->Ingest(d, data.size());
  ASSERT_OK(first);
  ASSERT_ERRC(store_->Ingest(d, data.size(), {.wait_if_in_flight = false}), Errc::kBusy);
  std::thread waiter([&] {
    auto second = store_->Ingest(d, data.size());  // blocks until `first` finishes
    ASSERT_OK(second);
    ASSERT_OK((*second)->Write(data));
    ASSERT_OK((*second)->Commit());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  (*first)->Abort();
  waiter.join();
  EXPECT_TRUE(store_->Contains(d));
}

TEST_F(StoreTest, ConcurrentIngestOfDifferentDigests) {
  constexpr int kThreads = 4, kPerThread = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string data = "blob-" + std::to_string(t) + "-" + std::to_string(i);
        if (!store_->PutBlob(Sha(data), data)) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store_->GetUsage().blobs, static_cast<std::uint64_t>(kThreads * kPerThread));
  auto page = store_->ListBlobs(std::nullopt, 10000);
  ASSERT_OK(page);
  EXPECT_EQ(page->items.size(), static_cast<std::size_t>(kThreads * kPerThread));
}

TEST_F(StoreTest, PagedListVisitsEveryBlobOnceInOrder) {
  std::set<Digest> all;
  for (int i = 0; i < 23; ++i) all.insert(Put("page-" + std::to_string(i)));
  std::vector<Digest> seen;
  std::optional<Digest> after;
  for (int pages = 0; pages < 10; ++pages) {
    auto page = store_->ListBlobs(after, 5);
    ASSERT_OK(page);
    for (const auto& b : page->items) seen.push_back(b.digest);
    if (!page->next) break;
    after = page->next;
  }
  EXPECT_EQ(std::vector<Digest>(all.begin(), all.end()), seen);
  ASSERT_ERRC(store_->ListBlobs(std::nullopt, 0), Errc::kInvalidArgument);
}

TEST_F(StoreTest, RemoveBlob) {
  const Digest d = Put("remove me");
  ASSERT_OK(store_->RemoveBlob(d));
  EXPECT_FALSE(store_->Contains(d));
  EXPECT_FALSE(fs::exists(BlobPath(d)));
  ASSERT_ERRC(store_->RemoveBlob(d), Errc::kNotFound);
  ASSERT_ERRC(store_->OpenBlob(d), Errc::kNotFound);
  EXPECT_EQ(store_->GetUsage().blobs, 0u);
}

TEST_F(StoreTest, DenyListBlocksIngestAndOpen) {
  const Digest d = Put("bad image");
  ASSERT_OK(store_->Deny(d, "CVE-2099-0001"));
  EXPECT_TRUE(store_->IsDenied(d));
  ASSERT_ERRC(store_->OpenBlob(d), Errc::kPermission);
  const Digest other = Sha("not yet here");
  ASSERT_OK(store_->Deny(other, "known bad"));
  ASSERT_ERRC(store_->Ingest(other, 12), Errc::kPermission);
  auto list = store_->ListDenied();
  ASSERT_OK(list);
  EXPECT_EQ(list->size(), 2u);
  Reopen();  // persistent
  EXPECT_TRUE(store_->IsDenied(d));
  ASSERT_OK(store_->Undeny(d));
  EXPECT_OK(store_->OpenBlob(d));
}

TEST_F(StoreTest, RefsAndEdges) {
  const Digest config = Put("{\"config\":1}");
  const Digest layer = Put("layer bytes");
  const Digest manifest = Put("{\"manifest\":1}", {.children = {config, layer}});
  ASSERT_OK(store_->SetRef("registry.test/app:v1", manifest));
  auto ref = store_->GetRef("registry.test/app:v1");
  ASSERT_OK(ref);
  EXPECT_EQ(ref->digest, manifest);
  auto children = store_->Children(manifest);
  ASSERT_OK(children);
  EXPECT_EQ(children->size(), 2u);
  auto parents = store_->Parents(layer);
  ASSERT_OK(parents);
  ASSERT_EQ(parents->size(), 1u);
  EXPECT_EQ((*parents)[0], manifest);
  ASSERT_ERRC(store_->SetRef("bad ref with spaces", manifest), Errc::kInvalidArgument);
  ASSERT_ERRC(store_->SetRef(std::string("nul\0ref", 7), manifest), Errc::kInvalidArgument);
  ASSERT_ERRC(store_->GetRef("registry.test/app:v2"), Errc::kNotFound);
  ASSERT_OK(store_->RemoveRef("registry.test/app:v1"));
  auto refs = store_->ListRefs();
  ASSERT_OK(refs);
  EXPECT_TRUE(refs->empty());
}

TEST_F(StoreTest, LeasesValidateNames) {
  const Digest d = Put("pinned");
  ASSERT_OK(store_->PutLease({.id = "lease-1", .tenant = "tenant-a", .digests = {d}}));
  auto l = store_->GetLease("lease-1");
  ASSERT_OK(l);
  EXPECT_EQ(l->tenant, "tenant-a");
  EXPECT_EQ(l->created, now_.load());
  ASSERT_ERRC(store_->PutLease({.id = "../x", .tenant = "t"}), Errc::kInvalidArgument);
  ASSERT_ERRC(store_->PutLease({.id = "ok", .tenant = ""}), Errc::kInvalidArgument);
  ASSERT_OK(store_->RemoveLease("lease-1"));
  ASSERT_ERRC(store_->GetLease("lease-1"), Errc::kNotFound);
}

TEST_F(StoreTest, GcKeepsRefsAndLeasesAndSweepsTheRest) {
  const Digest l1 = Put("layer one"), c1 = Put("config one");
  const Digest m1 = Put("manifest one", {.children = {c1, l1}});
  const Digest l2 = Put("layer two");
  const Digest m2 = Put("manifest two", {.children = {l2}});
  const Digest loose = Put("unreferenced");
  ASSERT_OK(store_->SetRef("r/app:1", m1));
  ASSERT_OK(store_->PutLease({.id = "l", .tenant = "t", .digests = {m2}}));

  auto dry = store_->CollectGarbage(/*dry_run=*/true);
  ASSERT_OK(dry);
  ASSERT_EQ(dry->swept.size(), 1u);
  EXPECT_EQ(dry->swept[0].digest, loose);
  EXPECT_TRUE(store_->Contains(loose));  // dry run removes nothing

  auto gc = store_->CollectGarbage(false);
  ASSERT_OK(gc);
  EXPECT_EQ(gc->swept.size(), 1u);
  EXPECT_EQ(gc->live_blobs, 5u);
  EXPECT_FALSE(store_->Contains(loose));

  ASSERT_OK(store_->RemoveLease("l"));
  gc = store_->CollectGarbage(false);
  ASSERT_OK(gc);
  EXPECT_EQ(gc->swept.size(), 2u);  // m2 and l2
  EXPECT_FALSE(store_->Contains(m2));
  EXPECT_FALSE(store_->Contains(l2));
  EXPECT_TRUE(store_->Contains(l1));
  EXPECT_TRUE(store_->Contains(c1));
  auto children = store_->Children(m2);
  ASSERT_OK(children);
  EXPECT_TRUE(children->empty());  // edges of removed manifests are gone
}

TEST_F(StoreTest, QuotaEvictsLeastRecentlyUsedUnleasedImages) {
  // Four images of ~1000 bytes each; image ages set through the clock seam.
  std::vector<Digest> manifests;
  for (int i = 0; i < 4; ++i) {
    now_ = 1000 + i * 10;
    const Digest layer = Put(std::string(1000, static_cast<char>('a' + i)));
    const Digest m = Put("manifest " + std::to_string(i), {.children = {layer}});
    ASSERT_OK(store_->SetRef("r/img:" + std::to_string(i), m));
    manifests.push_back(m);
  }
  // Image 0 is the oldest but leased; image 2 was used recently.
  ASSERT_OK(store_->PutLease({.id = "keep", .tenant = "t", .digests = {manifests[0]}}));
  now_ = 5000;
  ASSERT_OK(store_->Touch(manifests[2]));

  auto opts = Options();
  opts.quota_bytes = 3000;  // high 2700, low 2400: must free two images
  Reopen(opts);
  auto q = store_->EnforceQuota();
  ASSERT_OK(q);
  ASSERT_EQ(q->evicted_images.size(), 2u);
  EXPECT_EQ(q->evicted_images[0], manifests[1]);  // oldest unleased
  EXPECT_EQ(q->evicted_images[1], manifests[3]);  // then the next least recently used
  EXPECT_TRUE(store_->Contains(manifests[0]));
  EXPECT_TRUE(store_->Contains(manifests[2]));
  EXPECT_LE(q->usage_after, 2400u);
  EXPECT_GT(q->bytes_freed, 2000u);

  // Below the high watermark nothing happens.
  auto again = store_->EnforceQuota();
  ASSERT_OK(again);
  EXPECT_TRUE(again->evicted_images.empty());
}

AuditEvent TestEvent(int n) {
  return AuditEvent{.type = "test", .time = 1000, .details = {{"n", n}}};
}

TEST_F(StoreTest, AuditIsAppendOnlyAcrossReopen) {
  auto s1 = store_->AppendAudit(TestEvent(1));
  ASSERT_OK(s1);
  auto s2 = store_->AppendAudit(TestEvent(2));
  ASSERT_OK(s2);
  EXPECT_EQ(*s2, *s1 + 1);
  // One record is bounded; a refused one is counted, and takes no sequence number.
  ASSERT_ERRC(store_->AppendAudit(AuditEvent{.type = "big", .reason = std::string(70000, 'x')}),
              Errc::kTooLarge);
  EXPECT_EQ(store_->counters().audit_write_failures, 1u);
  Reopen();
  auto s3 = store_->AppendAudit(TestEvent(3));
  ASSERT_OK(s3);
  EXPECT_EQ(*s3, *s2 + 1);
  auto events = store_->ReadAudit(*s2, 10);
  ASSERT_OK(events);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].seq, *s2);
  // The log's one schema: type, time, actor (the daemon itself here), then the details.
  EXPECT_EQ((*events)[1].json, R"({"actor":"digestd","n":3,"time":1000,"type":"test"})");
}

// ---- root safety

TEST(StoreRootTest, RefusesSymlinkWorldWritableForeignAndBusyRoots) {
  TempDir dir;
  const fs::path real = dir.path() / "real";
  fs::create_directory(real);
  fs::create_symlink(real, dir.path() / "link");
  auto r = Store::Open({.root = dir.path() / "link"});
  ASSERT_ERRC(r, Errc::kPermission);
  EXPECT_NE(r.error().context().find("symlink"), std::string::npos);

  const fs::path ww = dir.path() / "ww";
  fs::create_directory(ww);
  ::chmod(ww.c_str(), 0777);
  ASSERT_ERRC(Store::Open({.root = ww}), Errc::kPermission);

  if (::geteuid() == 0) {
    const fs::path foreign = dir.path() / "foreign";
    fs::create_directory(foreign);
    ASSERT_EQ(::chown(foreign.c_str(), 65534, 65534), 0);
    ASSERT_ERRC(Store::Open({.root = foreign}), Errc::kPermission);
  }

  ASSERT_ERRC(Store::Open({.root = dir.path() / "missing", .create = false}), Errc::kIo);

  auto first = Store::Open({.root = real});
  ASSERT_OK(first);
  auto second = Store::Open({.root = real});
  ASSERT_ERRC(second, Errc::kBusy);
  EXPECT_NE(second.error().context().find("in use"), std::string::npos);
}

TEST(StoreRootTest, RefusesNewerSchema) {
  TempDir dir;
  { ASSERT_OK(Store::Open({.root = dir.path()})); }
  {
    auto index = Index::Open((dir.path() / "index").string());
    ASSERT_OK(index);
    Index::Batch b;
    b.Put(Cf::kMeta, "schema_version", "99");
    ASSERT_OK((*index)->Write(b));
  }
  auto r = Store::Open({.root = dir.path()});
  ASSERT_ERRC(r, Errc::kUnsupported);
  EXPECT_NE(r.error().context().find("newer digestd (schema 99"), std::string::npos);
}

// ---- recovery, fsck, hostile cache contents

class StoreRecoveryTest : public StoreTest {};

// A clean stop (the daemon's last index write) lets the next open skip the walks of blobs/ and
// files/ that take most of a restart; it takes the record back first, so a crash after that
// open recovers in full again.
TEST_F(StoreRecoveryTest, ACleanStopSkipsTheWalksOnceAndOnlyAfterIt) {
  const Digest kept = Put("kept");
  const Usage before = store_->GetUsage();
  ASSERT_TRUE(store_->MarkCleanShutdown());
  ASSERT_ERRC(store_->Deny(kept, "after the record"), Errc::kAborted);  // nothing after it
  store_.reset();
  std::ofstream(root() / "staging" / "0123.partial") << "half a blob";
  const std::string orphan_data = "left by nobody";
  const Digest orphan = Sha(orphan_data);
  std::ofstream(BlobPath(orphan)) << orphan_data;

  Reopen();
  EXPECT_TRUE(store_->recovery().after_clean_stop);
  EXPECT_EQ(store_->recovery().staging_removed, 1u);  // staging is always cleared
  EXPECT_TRUE(fs::exists(BlobPath(orphan)));          // the walk was skipped
  EXPECT_FALSE(store_->Contains(orphan));             // and the index is still the authority
  EXPECT_TRUE(store_->Contains(kept));
  EXPECT_EQ(store_->GetUsage().blobs, before.blobs);
  EXPECT_EQ(store_->GetUsage().bytes, before.bytes);
  EXPECT_FALSE(store_->IsDenied(kept));  // the refused write never reached the index
  ASSERT_OK(store_->Deny(kept, "writes work again"));

  Reopen();  // no record: a crash
  EXPECT_FALSE(store_->recovery().after_clean_stop);
  EXPECT_EQ(store_->recovery().uncommitted_removed, 1u);
  EXPECT_FALSE(fs::exists(BlobPath(orphan)));
}

// A hand-over: the stopping process flushes its index, records the clean stop and releases the
// store while it still serves; its successor opens the store at once (before, the lock refused
// it) and writes, and the old object goes on reading the state it sealed, never the successor's
// writes, and refuses writes of its own.
TEST_F(StoreRecoveryTest, AReleasedStoreOpensInTheSuccessorWhileTheOldOneStillReads) {
  const Digest kept = Put("kept");
  ASSERT_OK(store_->FlushIndex());
  EXPECT_FALSE(store_->ReleaseForSuccessor()) << "only after a clean stop is recorded";
  auto busy = Store::Open({.root = root()});
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code(), Errc::kBusy);
  ASSERT_TRUE(store_->MarkCleanShutdown());
  ASSERT_TRUE(store_->ReleaseForSuccessor());
  auto next = Store::Open({.root = root()});
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_TRUE((*next)->recovery().after_clean_stop);
  EXPECT_TRUE((*next)->Contains(kept));
  ASSERT_OK((*next)->Deny(kept, "the successor writes"));
  // The successor compacts and rewrites the index's files; the old view still reads them.
  ASSERT_OK((*next)->FlushIndex());
  // The old object: reads answer from the sealed state, writes are refused.
  EXPECT_TRUE(store_->Contains(kept));
  EXPECT_FALSE(store_->IsDenied(kept)) << "the old view never sees the successor's writes";
  auto fd = store_->OpenBlob(kept);
  EXPECT_TRUE(fd.has_value());
  EXPECT_FALSE(store_->Deny(kept, "from the old process").has_value());
  EXPECT_FALSE(store_->FlushIndex().has_value());
  store_.reset();
  EXPECT_TRUE((*next)->IsDenied(kept));
  ASSERT_OK((*next)->Undeny(kept));
}

// The successor's warm-up runs RocksDB's open in memory: nothing appears on disk, and the real
// open afterwards is an ordinary one.
TEST_F(StoreRecoveryTest, WarmingUpTouchesNothingOnDisk) {
  const Digest kept = Put("kept");
  store_.reset();
  Store::WarmUp();
  EXPECT_FALSE(fs::exists("/warm-up"));
  EXPECT_FALSE(fs::exists(root() / "warm-up"));
  Reopen();
  EXPECT_TRUE(store_->Contains(kept));
}

// No clean stop is recorded while anything is in progress: the next open then recovers in full.
TEST_F(StoreRecoveryTest, NoCleanStopWhileABlobIsBeingWritten) {
  const std::string data = "being written";
  auto txn = store_->BeginImage("");
  ASSERT_TRUE(txn.has_value()) << txn.error().ToString();
  auto writer = (*txn)->Ingest(Sha(data), data.size(), {.media_type = "application/octet-stream"});
  ASSERT_TRUE(writer.has_value()) << writer.error().ToString();
  EXPECT_FALSE(store_->MarkCleanShutdown());
  writer->reset();
  txn->reset();
  Reopen();
  EXPECT_FALSE(store_->recovery().after_clean_stop);
}

TEST_F(StoreRecoveryTest, WipesStagingRemovesUnrecordedFilesDropsTheRest) {
  const Digest kept = Put("kept");
  const Digest lost = Put("file will vanish");
  store_.reset();
  // Leftovers a crash could leave, plus things nobody should put there.
  std::ofstream(root() / "staging" / "0123.partial") << "half a blob";
  fs::create_directories(root() / "staging" / "tenant-x" / "deep");
  const std::string orphan_data = "orphan whose bytes match";
  const Digest orphan = Sha(orphan_data);
  std::ofstream(BlobPath(orphan)) << orphan_data;
  const Digest liar = Sha("what the name promises");
  std::ofstream(BlobPath(liar)) << "something else";
  std::ofstream(root() / "blobs" / "sha256" / "ab" / "not-a-digest") << "x";
  std::ofstream(root() / "blobs" / "sha256" / "README") << "x";
  fs::create_symlink("/etc", root() / "blobs" / "sha256" / "evil");
  fs::permissions(BlobPath(lost), fs::perms::owner_write, fs::perm_options::add);
  fs::remove(BlobPath(lost));

  Reopen();
  const auto& rr = store_->recovery();
  EXPECT_EQ(rr.staging_removed, 2u);
  // Files without a record are what an image transaction staged and never committed: removed
  // whatever their bytes (adopting them would describe them wrongly).
  EXPECT_EQ(rr.uncommitted_removed, 2u);  // orphan, liar
  EXPECT_EQ(rr.orphans_removed, 3u);      // bad name, README, symlink
  EXPECT_EQ(rr.records_dropped, 1u);
  EXPECT_TRUE(store_->Contains(kept));
  EXPECT_FALSE(store_->Contains(orphan));
  EXPECT_FALSE(fs::exists(BlobPath(orphan)));
  EXPECT_FALSE(store_->Contains(liar));
  EXPECT_FALSE(store_->Contains(lost));
  EXPECT_FALSE(fs::exists(BlobPath(liar)));
  EXPECT_FALSE(fs::is_symlink(root() / "blobs" / "sha256" / "evil"));
  EXPECT_TRUE(fs::exists("/etc/passwd"));  // the symlink was removed, not followed
  EXPECT_EQ(CountEntries(root() / "staging"), 0u);
  EXPECT_EQ(store_->GetUsage().blobs, 1u);
  auto fsck = store_->Fsck(false);
  ASSERT_OK(fsck);
  EXPECT_TRUE(fsck->clean());
}

// Recovery records events of its own: they must go after the existing log, never over its
// oldest events (recovery used to run before the audit sequence was read back, and wrote seq 1).
TEST_F(StoreRecoveryTest, RecoveryEventsNeverOverwriteTheAuditLog) {
  const Digest lost = Put("file will vanish");
  for (int i = 1; i <= 3; ++i) {
    ASSERT_OK(store_->AppendAudit(AuditEvent{.type = "before", .time = 1000, .details = {{"n", i}}}));
  }
  store_.reset();
  fs::permissions(BlobPath(lost), fs::perms::owner_write, fs::perm_options::add);
  fs::remove(BlobPath(lost));
  Reopen();  // recovery drops the record and audits it
  auto events = store_->ReadAudit(0, 100);
  ASSERT_OK(events);
  ASSERT_GE(events->size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*events)[i].json,
              R"({"actor":"digestd","n":)" + std::to_string(i + 1) + R"(,"time":1000,"type":"before"})");
  }
  EXPECT_NE(events->back().json.find("store.recovery.dropped"), std::string::npos);
  EXPECT_EQ(store_->GetAuditStats().events, events->size());
}

// Whether a lease outlives its process is a field, not its name: a user's lease called "pull-x"
// survives a restart (and keeps its image from GC); a pull's transient lease does not (found by
// review: leases whose ids start with "pull-" were dropped at start, silently).
TEST_F(StoreRecoveryTest, TransientLeasesGoAtRestartWhateverTheirNames) {
  const Digest pinned = Put("pinned by a user lease");
  const Digest in_flight = Put("pinned by a pull that died");
  ASSERT_OK(store_->PutLease({.id = "pull-mine", .tenant = "t", .digests = {pinned}}));
  ASSERT_OK(store_->PutLease({.id = "job-7", .tenant = "t", .transient = true, .digests = {in_flight}}));
  store_.reset();
  Reopen();
  EXPECT_EQ(store_->recovery().leases_dropped, 1u);
  ASSERT_OK(store_->GetLease("pull-mine"));
  ASSERT_ERRC(store_->GetLease("job-7"), Errc::kNotFound);
  auto gc = store_->CollectGarbage(false);
  ASSERT_OK(gc);
  EXPECT_TRUE(store_->Contains(pinned));
  EXPECT_FALSE(store_->Contains(in_flight));
  auto audit = store_->ReadAudit(0, 100);
  ASSERT_OK(audit);
  ASSERT_FALSE(audit->empty());
  EXPECT_NE(audit->back().json.find("store.recovery.leases_dropped"), std::string::npos);
}

TEST_F(StoreRecoveryTest, SymlinkedShardIsNeverFollowed) {
  const Digest d = Put("inside");
  store_.reset();
  TempDir outside;
  const fs::path shard = BlobPath(d).parent_path();
  fs::permissions(BlobPath(d), fs::perms::owner_write, fs::perm_options::add);
  fs::remove_all(shard);
  // An attacker who can write the cache points a shard at a directory holding a "valid" blob.
  std::ofstream(outside.path() / std::string(d.hex())) << "inside";
  fs::create_directory_symlink(outside.path(), shard);
  Reopen();
  EXPECT_FALSE(store_->Contains(d));  // dropped: its file is not reachable without a symlink
  EXPECT_FALSE(fs::is_symlink(shard));
  EXPECT_TRUE(fs::exists(outside.path() / std::string(d.hex())));  // untouched
}

TEST_F(StoreRecoveryTest, FsckFindsAndRepairsCorruption) {
  const Digest good = Put("good blob");
  const Digest bad = Put("bad blob!");
  const Digest shrunk = Put("shrunk blob");
  ::chmod(BlobPath(bad).c_str(), 0644);
  std::ofstream(BlobPath(bad), std::ios::binary | std::ios::in) << "B";  // same size, flipped
  ::chmod(BlobPath(shrunk).c_str(), 0644);
  ::truncate(BlobPath(shrunk).c_str(), 3);

  auto report = store_->Fsck(false);
  ASSERT_OK(report);
  EXPECT_EQ(report->blobs_checked, 3u);
  ASSERT_EQ(report->problems.size(), 2u);
  std::set<std::string> whats;
  for (const auto& p : report->problems) whats.insert(p.what);
  EXPECT_EQ(whats, (std::set<std::string>{"digest-mismatch", "size-mismatch"}));
  EXPECT_TRUE(store_->Contains(bad));  // no repair without asking

  auto repaired = store_->Fsck(true);
  ASSERT_OK(repaired);
  EXPECT_EQ(repaired->problems.size(), 2u);
  EXPECT_FALSE(store_->Contains(bad));
  EXPECT_FALSE(store_->Contains(shrunk));
  EXPECT_TRUE(store_->Contains(good));
  auto clean = store_->Fsck(false);
  ASSERT_OK(clean);
  EXPECT_TRUE(clean->clean());
}

TEST_F(StoreRecoveryTest, CorruptRecordsAreErrorsAndCountersNotCrashes) {
  const Digest d = Put("record will be garbled");
  ASSERT_OK(store_->SetRef("r/app:1", d));
  store_.reset();
  {
    auto index = Index::Open((root() / "index").string());
    ASSERT_OK(index);
    Index::Batch b;
    b.Put(Cf::kRefs, "r/app:1", "{\"v\":1,\"digest\":\"sha256:../../etc\",\"resolved_at\":1}");
    b.Put(Cf::kRefs, "r/app:2", "\xff\xfe not json");
    b.Put(Cf::kLeases, "../escape", "{}");
    b.Put(Cf::kBlobs, d.ToString(), "{\"v\":1,\"size\":\"big\"}");
    b.Put(Cf::kBlobs, "sha256:/etc/passwd", "{}");
    b.Put(Cf::kEdges, "garbage-edge", "");
    ASSERT_OK((*index)->Write(b));
  }
  Reopen();
  // The blob whose record is unreadable was quarantined (never rebuilt: a rebuilt record would
  // lack its media type, tenant and edges); the bad key was dropped.
  EXPECT_EQ(store_->recovery().bad_records, 2u);
  EXPECT_EQ(store_->recovery().quarantined, 1u);
  EXPECT_TRUE(fs::exists(root() / "quarantine" / d.ToString()));
  ASSERT_ERRC(store_->Stat(d), Errc::kNotFound);
  ASSERT_ERRC(store_->GetRef("r/app:1"), Errc::kCorrupt);
  ASSERT_ERRC(store_->GetRef("r/app:2"), Errc::kCorrupt);
  ASSERT_ERRC(store_->ListRefs(), Errc::kCorrupt);
  ASSERT_ERRC(store_->ListLeases(), Errc::kCorrupt);
  // GC refuses to sweep on a partial mark.
  ASSERT_ERRC(store_->CollectGarbage(false), Errc::kCorrupt);
  EXPECT_GE(store_->counters().corrupt_records, 3u);
}

}  // namespace
}  // namespace digestd::store
