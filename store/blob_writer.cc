// Ingest and commit: the path every verified byte takes into the store.

#include <fcntl.h>
#include "store/errors.h"
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include <condition_variable>
#include <functional>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

#include "store/fs_util.h"
#include "store/layer_decoder.h"
#include "store/records.h"
#include "store/store.h"
#include "store/store_impl.h"

namespace digestd::store {

namespace {

// Follows the staging file on another core, behind the writer, reading the bytes back through a
// read-only mapping of the page cache (no copy and no hand-off per chunk). The writer only
// publishes how far it has written; it is held back when the follower lags by more than kMaxLag,
// so the bytes are still cached when they are read. The follower hashes every byte it reads
// (what is in the file is exactly what gets committed) and hands it to a body running on its
// thread: nothing more, a decoder (diff_id), or the tree reader (unpack while downloading).
// Whatever the body leaves unread is hashed after it returns, so a refused layer still gets its
// digest checked first.
class StagingFollower final : public ByteSource {
 public:
  using Body = std::function<void(ByteSource&)>;

  static constexpr std::uint64_t kWindow = 8u << 20;
  static constexpr std::uint64_t kMinChunk = 256u << 10;
  static constexpr std::uint64_t kMaxLag = 64u << 20;

  StagingFollower(int fd, std::uint64_t total, verify::Hasher& hasher, Body body)
      : fd_(fd), total_(total), hasher_(hasher), body_(std::move(body)), thread_([this] { Run(); }) {}
  ~StagingFollower() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    Unmap();
  }
  StagingFollower(const StagingFollower&) = delete;
  StagingFollower& operator=(const StagingFollower&) = delete;

  // Writer side: bytes [0, written) are in the file. With `wait`, holds the writer back while
  // the follower lags by more than kMaxLag.
  void Publish(std::uint64_t written, bool wait) {
    std::unique_lock lock(mu_);
    written_ = written;
    cv_.notify_all();
    if (wait) cv_.wait(lock, [&] { return written_ - read_ <= kMaxLag || done_; });
  }
  bool Saturated() {
    std::lock_guard lock(mu_);
    return written_ - read_ > kMaxLag && !done_;
  }
  // Writer side, once all `total` bytes are published: waits until the body returned and every
  // byte is hashed. False when the file could not be read back.
  bool Finish() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return !failed_;
  }

  // Follower side (the body): the next bytes of the file, waiting for the writer.
  Result<std::span<const std::byte>> Next() override {
    Unmap();
    DropConsumed();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] {
      return stop_ || read_ == total_ || written_ - read_ >= kMinChunk || written_ == total_;
    });
    if (read_ == total_) return std::span<const std::byte>();
    if (stop_) return StoreError(Errc::kAborted, "staging file abandoned");
    const std::uint64_t pos = read_;
    const std::uint64_t end = std::min(written_, pos + kWindow);
    lock.unlock();
    auto view = Read(pos, end);
    lock.lock();
    if (!view) {
      failed_ = true;
      return view;
    }
    hasher_.Update(*view);
    read_ = end;
    cv_.notify_all();
    return view;
  }

 private:
  void Run() {
    body_(*this);
    // Hash what the body did not read (it stopped early, or it reads nothing).
    for (;;) {
      auto chunk = Next();
      if (!chunk || chunk->empty()) break;
    }
    Unmap();
    std::lock_guard lock(mu_);
    if (read_ != total_) failed_ = true;
    done_ = true;
    cv_.notify_all();
  }

  Result<std::span<const std::byte>> Read(std::uint64_t pos, std::uint64_t end) {
    static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t map_off = pos & ~(page - 1);
    const std::size_t map_len = static_cast<std::size_t>(end - map_off);
    void* p = ::mmap(nullptr, map_len, PROT_READ, MAP_SHARED, fd_, static_cast<off_t>(map_off));
    if (p != MAP_FAILED) {
      map_ = p;
      map_len_ = map_len;
      return std::span(static_cast<const std::byte*>(p) + (pos - map_off), end - pos);
    }
    // No mapping (an unusual filesystem): read the bytes back instead.
    fallback_.resize(static_cast<std::size_t>(end - pos));
    std::size_t got = 0;
    while (got < fallback_.size()) {
      const ssize_t n = ::pread(fd_, fallback_.data() + got, fallback_.size() - got,
                                static_cast<off_t>(pos + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return SysError(Module::kStore, "read back staging file");
      got += static_cast<std::size_t>(n);
    }
    return std::span<const std::byte>(fallback_);
  }

  void Unmap() {
    if (map_ != nullptr) ::munmap(map_, map_len_);
    map_ = nullptr;
  }

  // The blob is not read again soon (the mount serves the unpacked files): pages the body is done
  // with and that writeback has cleaned leave the page cache, so a large layer recycles a few
  // dozen MiB of cache instead of claiming fresh memory for all of it. Dirty pages are left
  // alone by the kernel; the writer's pacer cleans them, and a later call drops them.
  void DropConsumed() {
    std::uint64_t consumed;
    {
      std::lock_guard lock(mu_);
      consumed = read_;
    }
    if (consumed - dropped_ < kDropChunk) return;
    // From one chunk back: pages that were still dirty last time are likely clean now.
    const std::uint64_t from = dropped_ > kDropChunk ? dropped_ - kDropChunk : 0;
    (void)::posix_fadvise(fd_, static_cast<off_t>(from), static_cast<off_t>(consumed - from),
                          POSIX_FADV_DONTNEED);
    dropped_ = consumed;
  }

  const int fd_;
  const std::uint64_t total_;
  verify::Hasher& hasher_;
  Body body_;
  static constexpr std::uint64_t kDropChunk = 16u << 20;
  std::uint64_t dropped_ = 0;  // DropConsumed() covered [0, dropped_) (follower thread only)
  void* map_ = nullptr;  // the view last returned (follower thread only)
  std::size_t map_len_ = 0;
  std::vector<std::byte> fallback_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t written_ = 0;
  std::uint64_t read_ = 0;
  bool failed_ = false;
  bool done_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

// Dirty data one writer may leave in flight, in writeback windows (8 x 8 MiB by default).
constexpr std::uint64_t kDirtyWindows = 8;
// Blobs at least this large are hashed (and decoded) by a StagingFollower; smaller ones inline,
// unless they are unpacked while they stream in.
constexpr std::uint64_t kParallelHashThreshold = 4u << 20;

}  // namespace

struct BlobWriter::State {
  Store::Impl* store = nullptr;
  Digest expected;
  std::uint64_t expected_size = 0;
  IngestOptions opts;
  verify::Hasher hasher;
  UniqueFd fd;
  std::string staging_name;  // empty for an O_TMPFILE staging file
  std::uint64_t written = 0;
  WritebackPacer pacer;
  std::optional<Error> poisoned;
  bool finished = false;
  std::unique_ptr<LayerDecoder> decoder;     // when a diff_id is to be verified (no unpack)
  std::optional<Result<PendingTreePtr>> tree;  // with opts.unpack: set by the follower's body
  PendingTreePtr committed_tree;               // for TakeTree()
  std::unique_ptr<StagingFollower> follower;  // declared after what it uses
};

namespace {

std::string RandomName() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx.partial", static_cast<unsigned long long>(rng()));
  return buf;
}

// Creates an anonymous staging file (O_TMPFILE), or a named one where the filesystem lacks
// O_TMPFILE. Named files are wiped at start-up like everything else in staging/.
Result<std::pair<UniqueFd, std::string>> CreateStagingFile(Store::Impl& impl) {
  if (impl.use_tmpfile.load(std::memory_order_relaxed)) {
    auto fd = OpenBeneath(impl.staging_fd.Get(), ".", O_TMPFILE | O_RDWR, 0600);
    if (fd) return std::make_pair(std::move(*fd), std::string());
    if (fd.error().sys_errno() != EOPNOTSUPP && fd.error().sys_errno() != EISDIR) {
      return fd.error();
    }
    impl.log->warn("O_TMPFILE unsupported in staging; using named staging files");
    impl.use_tmpfile.store(false, std::memory_order_relaxed);
  }
  std::string name = RandomName();
  DIGESTD_ASSIGN_OR_RETURN(
      UniqueFd fd, OpenBeneath(impl.staging_fd.Get(), name, O_RDWR | O_CREAT | O_EXCL, 0600));
  return std::make_pair(std::move(fd), std::move(name));
}

}  // namespace

Result<BlobWriterPtr> Store::Ingest(const Digest& expected, std::uint64_t expected_size,
                                    IngestOptions options) {
  DIGESTD_RETURN_IF_ERROR(ValidateMediaType(options.media_type));
  if (!options.tenant.empty()) DIGESTD_RETURN_IF_ERROR(ValidateName("tenant", options.tenant));
  if (IsDenied(expected)) {
    return StoreError(Errc::kPermission, expected.ToString() + " is on the deny list");
  }
  {
    std::unique_lock lock(impl_->mu);
    for (;;) {
      if (Contains(expected)) {
        return StoreError(Errc::kAlreadyExists, expected.ToString() + " is already stored");
      }
      if (impl_->in_flight.insert(expected).second) break;
      if (!options.wait_if_in_flight) {
        return StoreError(Errc::kBusy, expected.ToString() + " is being ingested by another writer");
      }
      impl_->in_flight_cv.wait(lock);
    }
  }
  return StartWriter(expected, expected_size, std::move(options));
}

Result<BlobWriterPtr> Store::StartWriter(const Digest& expected, std::uint64_t expected_size,
                                         IngestOptions options) {
  // The digest is claimed (in flight) by the caller; every failure must release it.
  auto hasher = verify::Hasher::Create(expected.algorithm());
  if (!hasher) {
    impl_->FinishInFlight(expected);
    return hasher.error();
  }
  auto state = std::unique_ptr<BlobWriter::State>(
      new BlobWriter::State{impl_.get(), expected, expected_size, std::move(options),
                            std::move(*hasher), UniqueFd(), std::string(), 0,
                            WritebackPacer(impl_->opts.writeback_interval, kDirtyWindows)});
  auto staging = CreateStagingFile(*impl_);
  if (!staging) {
    impl_->FinishInFlight(expected);
    return std::move(staging).error().Wrap("create staging file");
  }
  state->fd = std::move(staging->first);
  state->staging_name = std::move(staging->second);
  if (state->opts.unpack && !state->opts.diff_id) {
    impl_->FinishInFlight(expected);
    return StoreError(Errc::kInvalidArgument, "unpacking a layer needs its diff_id");
  }
  std::optional<LayerDecoder::Kind> kind;
  if (state->opts.diff_id) {
    auto k = LayerDecoder::KindFor(state->opts.media_type);
    if (!k) {
      impl_->FinishInFlight(expected);
      return k.error();
    }
    kind = *k;
  }
  if (kind && !state->opts.unpack) {
    auto decoder = LayerDecoder::Create(*kind, state->opts.max_uncompressed);
    if (!decoder) {
      impl_->FinishInFlight(expected);
      return decoder.error();
    }
    state->decoder = std::move(*decoder);
  }
  BlobWriter::State* st = state.get();
  if (state->opts.unpack) {
    // The tree reader follows the download: decode, parse, write file objects, check the
    // diff_id. Its verdict is kept for Commit(), which checks the blob's digest first.
    const Digest layer = expected;
    const LayerDecoder::Kind k = *kind;
    state->follower = std::make_unique<StagingFollower>(
        state->fd.Get(), expected_size, state->hasher, [st, layer, k](ByteSource& source) {
          st->tree = ReadPendingTree(*st->store, layer, *st->opts.diff_id, k, *st->opts.unpack,
                                     source, st->expected_size >= st->store->opts.pipeline_threshold);
        });
  } else if (expected_size >= kParallelHashThreshold) {
    // The follower hashes each window and, for layers, decodes it while it is hot in the cache
    // (one pass over the mapping). A decoder error is kept by the decoder and reported by
    // Commit().
    LayerDecoder* d = state->decoder.get();
    state->follower = std::make_unique<StagingFollower>(
        state->fd.Get(), expected_size, state->hasher, [d](ByteSource& source) {
          if (d == nullptr) return;  // the follower hashes what the body leaves
          for (;;) {
            auto chunk = source.Next();
            if (!chunk || chunk->empty()) return;
            (void)d->Feed(*chunk);
          }
        });
  }
  return BlobWriterPtr(new BlobWriter(std::move(state)));
}

BlobWriter::BlobWriter(std::unique_ptr<State> state) : s_(std::move(state)) {}

BlobWriter::~BlobWriter() { Abort(); }

const Digest& BlobWriter::expected_digest() const { return s_->expected; }
std::uint64_t BlobWriter::bytes_written() const { return s_->written; }
std::uint64_t BlobWriter::expected_size() const { return s_->expected_size; }
const IngestOptions& BlobWriter::options() const { return s_->opts; }

Result<BlobWriter::WriteSlot> BlobWriter::BeginWrite(std::size_t n) {
  if (s_->finished) return StoreError(Errc::kAborted, "writer already finished");
  if (s_->poisoned) return *s_->poisoned;
  if (n > s_->expected_size - s_->written) {
    s_->poisoned = StoreError(Errc::kTooLarge, "blob " + s_->expected.ToString() +
                                                   " exceeds its expected size of " +
                                                   std::to_string(s_->expected_size) + " bytes");
    s_->store->counters.size_mismatches.fetch_add(1, std::memory_order_relaxed);
    return *s_->poisoned;
  }
  return WriteSlot{s_->fd.Get(), s_->written};
}

Result<void> BlobWriter::Write(std::span<const std::byte> data) {
  DIGESTD_ASSIGN_OR_RETURN(WriteSlot slot, BeginWrite(data.size()));
  if (auto r = PWriteAll(slot.fd, data, slot.offset); !r) {
    s_->poisoned = std::move(r).error().Wrap("staging " + s_->expected.ToString());
    return *s_->poisoned;
  }
  return CompleteWrite(data);
}

bool BlobWriter::Saturated() const { return s_->follower && s_->follower->Saturated(); }

Result<void> BlobWriter::CompleteWrite(std::span<const std::byte> data, Backpressure backpressure) {
  if (s_->finished) return StoreError(Errc::kAborted, "writer already finished");
  if (s_->poisoned) return *s_->poisoned;
  if (data.size() > s_->expected_size - s_->written) {
    return StoreError(Errc::kInvalidArgument, "CompleteWrite without a matching BeginWrite");
  }
  if (!s_->follower) {
    s_->hasher.Update(data);
    if (s_->decoder) (void)s_->decoder->Feed(data);  // errors surface in Commit()
  }
  s_->written += data.size();
  if (s_->follower) s_->follower->Publish(s_->written, backpressure == Backpressure::kBlock);
  // Start writeback as we go so the final fdatasync has little left to do.
  s_->pacer.Advance(s_->fd.Get(), s_->written);
  return {};
}

void BlobWriter::Abort() {
  if (!s_ || s_->finished) return;
  s_->finished = true;
  s_->follower.reset();  // joins the follower before its fd goes away
  s_->tree.reset();      // an unpacked tree is discarded with the blob
  s_->fd.Reset();
  if (!s_->staging_name.empty()) {
    (void)::unlinkat(s_->store->staging_fd.Get(), s_->staging_name.c_str(), 0);
  }
  s_->store->counters.aborts.fetch_add(1, std::memory_order_relaxed);
  s_->store->FinishInFlight(s_->expected);
}

Result<void> BlobWriter::Verify() {
  if (s_->finished) return StoreError(Errc::kAborted, "writer already finished");
  auto& impl = *s_->store;
  const Digest& expected = s_->expected;
  if (s_->poisoned) return *s_->poisoned;
  if (s_->written != s_->expected_size) {
    impl.counters.size_mismatches.fetch_add(1, std::memory_order_relaxed);
    return StoreError(Errc::kSizeMismatch,
                      "size mismatch for " + expected.ToString() + ": expected " +
                          std::to_string(s_->expected_size) + " bytes, got " +
                          std::to_string(s_->written));
  }
  if (s_->follower && !s_->follower->Finish()) {
    return StoreError(Errc::kIo, "cannot read back staging file of " + expected.ToString());
  }
  const Digest actual = s_->hasher.Finish();
  if (actual != expected) {
    impl.counters.digest_mismatches.fetch_add(1, std::memory_order_relaxed);
    return StoreError(Errc::kDigestMismatch, "digest mismatch for " + expected.ToString() +
                                                 ": expected " + expected.ToString() + ", got " +
                                                 actual.ToString());
  }
  if (s_->decoder) {
    auto diff = s_->decoder->Finish();
    if (!diff) {
      return StoreError(Errc::kCorrupt, "layer " + expected.ToString() + " (" +
                                            s_->opts.media_type + "): " + diff.error().context());
    }
    if (*diff != *s_->opts.diff_id) {
      impl.counters.digest_mismatches.fetch_add(1, std::memory_order_relaxed);
      return StoreError(Errc::kDigestMismatch, "layer " + expected.ToString() +
                                                   " uncompresses to " + diff->ToString() +
                                                   " but its diff_id is " +
                                                   s_->opts.diff_id->ToString());
    }
  }
  if (s_->opts.unpack) {
    if (!s_->tree) return StoreError(Errc::kInternal, "layer tree reader did not run");
    if (!*s_->tree) return s_->tree->error();
  }
  return {};
}

Result<void> BlobWriter::Publish(bool durable) {
  auto& impl = *s_->store;
  const Digest& expected = s_->expected;
  const int fd = s_->fd.Get();
  if (::fchmod(fd, 0444) != 0) return SysError(Module::kStore, "chmod staging file");
  if (durable && ::fdatasync(fd) != 0) return SysError(Module::kStore, "fdatasync staging file");
  auto shard = OpenBeneath(impl.blobs_fd.Get(), Store::Impl::ShardPath(expected),
                           O_RDONLY | O_DIRECTORY);
  if (!shard) return shard.error();
  const std::string hex(expected.hex());

  // Publish under the digest name. The name can already exist only as a leftover nobody recorded
  // (the digest is claimed by this writer): keep it if its bytes match, replace it otherwise.
  auto publish = [&]() -> Result<void> {
    if (s_->staging_name.empty()) {
      const std::string proc = "/proc/self/fd/" + std::to_string(fd);
      if (::linkat(AT_FDCWD, proc.c_str(), shard->Get(), hex.c_str(), AT_SYMLINK_FOLLOW) == 0) {
        return {};
      }
      const int err = errno;
      if (err == EEXIST) return SysError(Module::kStore, "link blob", err);
      if (err == ENOENT &&
          ::linkat(fd, "", shard->Get(), hex.c_str(), AT_EMPTY_PATH) == 0) {  // no /proc
        return {};
      }
      return SysError(Module::kStore, "link blob " + expected.ToString(), err);
    }
    if (::renameat(impl.staging_fd.Get(), s_->staging_name.c_str(), shard->Get(), hex.c_str()) !=
        0) {
      return SysError(Module::kStore, "rename blob " + expected.ToString());
    }
    s_->staging_name.clear();
    return {};
  };
  auto published = publish();
  if (!published && published.error().sys_errno() == EEXIST) {
    if (impl.VerifyFile(shard->Get(), hex, expected, s_->expected_size)) {
      published = {};
    } else {
      impl.log->warn("replacing mismatching leftover file for {}", expected.ToString());
      (void)::unlinkat(shard->Get(), hex.c_str(), 0);
      published = publish();
    }
  }
  if (!published) return published.error();
  if (durable) {
    if (auto r = FsyncFd(shard->Get(), "blob shard directory"); !r) {
      (void)::unlinkat(shard->Get(), hex.c_str(), 0);
      return r.error();
    }
  }
  return {};
}

Result<void> BlobWriter::Stage() {
  if (auto r = Verify(); !r) {
    Abort();
    return r;
  }
  if (auto r = Publish(/*durable=*/false); !r) {
    Abort();
    return r;
  }
  // Staged: the digest stays claimed (in flight) until the image transaction that holds it
  // records it or rolls it back.
  s_->finished = true;
  s_->follower.reset();
  s_->fd.Reset();
  if (s_->tree) s_->committed_tree = std::move(**s_->tree);
  s_->tree.reset();
  return {};
}

Result<void> BlobWriter::Commit() {
  auto& impl = *s_->store;
  const Digest& expected = s_->expected;
  auto fail = [&](Error e) -> Result<void> {
    Abort();
    return e;
  };
  if (auto r = Verify(); !r) return fail(r.error());
  std::shared_lock maint(impl.maint_mu);
  if (auto r = Publish(/*durable=*/true); !r) return fail(r.error());

  const auto now = impl.Now();
  Index::Batch batch;
  batch.Put(Cf::kBlobs, expected.ToString(),
            EncodeBlob(BlobInfo{.digest = expected,
                                .size = s_->expected_size,
                                .media_type = s_->opts.media_type,
                                .created = now,
                                .last_used = now,
                                .tenant = s_->opts.tenant}));
  for (const auto& child : s_->opts.children) {
    batch.Put(Cf::kEdges, EdgeKey(expected, child), "");
    batch.Put(Cf::kBackrefs, EdgeKey(child, expected), "");
  }
  if (auto r = impl.index->Write(batch); !r) {
    // Without a record the file must not stay visible (recovery would remove it anyway).
    if (auto shard = OpenBeneath(impl.blobs_fd.Get(), Store::Impl::ShardPath(expected),
                                 O_RDONLY | O_DIRECTORY)) {
      (void)::unlinkat(shard->Get(), std::string(expected.hex()).c_str(), 0);
    }
    return fail(r.error());
  }
  {
    std::lock_guard lock(impl.mu);
    impl.usage.blobs += 1;
    impl.usage.bytes += s_->expected_size;
  }
  impl.counters.commits.fetch_add(1, std::memory_order_relaxed);
  impl.generation.fetch_add(1, std::memory_order_release);
  s_->finished = true;
  s_->follower.reset();
  s_->fd.Reset();
  if (s_->tree) s_->committed_tree = std::move(**s_->tree);
  s_->tree.reset();
  impl.FinishInFlight(expected);
  return {};
}

PendingTreePtr BlobWriter::TakeTree() { return std::move(s_->committed_tree); }

}  // namespace digestd::store
