#include "fusefs/session_state.h"
#include "fusefs/errors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <cstring>

namespace digestd::fusefs {
namespace {

constexpr char kMagic[8] = {'D', 'G', 'S', 'T', 'F', 'U', 'S', '1'};
constexpr std::uint64_t kEmpty = 0;
constexpr std::uint64_t kTombstone = ~std::uint64_t{0};

}  // namespace

struct SessionState::Slot {
  std::atomic<std::uint64_t> ino;
  std::atomic<std::int32_t> id;
  std::atomic<std::int32_t> opens;
};

struct SessionState::Layout {
  char magic[8];
  std::uint32_t version;
  std::uint32_t slots;
  std::uint32_t init_len;
  std::uint32_t reply_len;
  std::byte init[kMaxMessage];
  std::byte reply[kMaxMessage];
  char mountpoint[4096];
  // Two tables: a rehash (dropping tombstones) fills the other one and then flips `active`, so
  // a kill at any moment leaves one whole table.
  std::atomic<std::uint32_t> active;
  // Bumped by every change of the backing table (was padding, 0 in older states): a process that
  // takes the table's lock after another process changed it recounts (TableLock).
  std::atomic<std::uint32_t> writes;
  Slot table[2][kSlots];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

SessionState::SessionState(UniqueFd fd, Layout* map) : fd_(std::move(fd)), map_(map) {
  Recount();
  seen_writes_ = map_->writes.load(std::memory_order_acquire);
  // A file description of our own for the memfd: OFD locks exclude other descriptions (the
  // other process's), and closing some other fd of the memfd (an exported copy) does not drop
  // them, as it would a POSIX record lock.
  lock_fd_ = UniqueFd(::open(("/proc/self/fd/" + std::to_string(fd_.Get())).c_str(),
                             O_RDWR | O_CLOEXEC));
}

SessionState::TableLock::TableLock(SessionState& s) : s_(s) {
  if (!s_.lock_fd_) return;  // no /proc: one process at a time, as before hand-overs overlapped
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  while (::fcntl(s_.lock_fd_.Get(), F_OFD_SETLKW, &fl) != 0 && errno == EINTR) {
  }
  if (s_.map_->writes.load(std::memory_order_acquire) != s_.seen_writes_) s_.Recount();
}

SessionState::TableLock::~TableLock() {
  s_.seen_writes_ = s_.map_->writes.load(std::memory_order_acquire);
  if (!s_.lock_fd_) return;
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  (void)::fcntl(s_.lock_fd_.Get(), F_OFD_SETLK, &fl);
}

SessionState::Slot* SessionState::Table() const {
  return map_->table[map_->active.load(std::memory_order_acquire) & 1];
}

void SessionState::Recount() {
  used_ = tombstones_ = 0;
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    const std::uint64_t k = Table()[i].ino.load(std::memory_order_relaxed);
    used_ += (k != kEmpty && k != kTombstone) ? 1 : 0;
    tombstones_ += k == kTombstone ? 1 : 0;
  }
}

void SessionState::Rehash() {
  const std::uint32_t from = map_->active.load(std::memory_order_acquire) & 1;
  Slot* src = map_->table[from];
  Slot* dst = map_->table[from ^ 1];
  for (std::uint32_t i = 0; i < kSlots; ++i) dst[i].ino.store(kEmpty, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    const std::uint64_t k = src[i].ino.load(std::memory_order_relaxed);
    if (k == kEmpty || k == kTombstone) continue;
    for (std::uint32_t j = 0; j < kSlots; ++j) {
      auto& d = dst[(k + j) % kSlots];
      if (d.ino.load(std::memory_order_relaxed) != kEmpty) continue;
      d.id.store(src[i].id.load(std::memory_order_relaxed), std::memory_order_relaxed);
      d.opens.store(src[i].opens.load(std::memory_order_relaxed), std::memory_order_relaxed);
      d.ino.store(k, std::memory_order_relaxed);
      break;
    }
  }
  map_->active.store(from ^ 1, std::memory_order_release);
  map_->writes.fetch_add(1, std::memory_order_release);
  Recount();
}
SessionState::SessionState(SessionState&& o) noexcept
    : fd_(std::move(o.fd_)),
      lock_fd_(std::move(o.lock_fd_)),
      map_(std::exchange(o.map_, nullptr)),
      used_(o.used_),
      tombstones_(o.tombstones_),
      seen_writes_(o.seen_writes_) {}
SessionState& SessionState::operator=(SessionState&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, sizeof(Layout));
    fd_ = std::move(o.fd_);
    lock_fd_ = std::move(o.lock_fd_);
    map_ = std::exchange(o.map_, nullptr);
    used_ = o.used_;
    tombstones_ = o.tombstones_;
    seen_writes_ = o.seen_writes_;
  }
  return *this;
}
SessionState::~SessionState() {
  if (map_) ::munmap(map_, sizeof(Layout));
}

Result<SessionState> SessionState::Create(std::string_view mountpoint) {
  if (mountpoint.size() >= sizeof(Layout::mountpoint)) {
    return FuseError(Errc::kInvalidArgument, "session state: mount point too long");
  }
  UniqueFd fd(::memfd_create("digestd-fuse-state", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return SysError(Module::kFuse, "memfd_create");
  if (::ftruncate(fd.Get(), sizeof(Layout)) != 0) return SysError(Module::kFuse, "size memfd");
  // Its size is fixed for good: a successor maps exactly this much.
  (void)::fcntl(fd.Get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  void* p = ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED, fd.Get(), 0);
  if (p == MAP_FAILED) return SysError(Module::kFuse, "map session state");
  auto* m = static_cast<Layout*>(p);  // zero-filled by ftruncate
  m->version = 1;
  m->slots = kSlots;
  std::memcpy(m->mountpoint, mountpoint.data(), mountpoint.size());
  std::memcpy(m->magic, kMagic, sizeof(kMagic));
  return SessionState(std::move(fd), m);
}

Result<SessionState> SessionState::Open(UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return SysError(Module::kFuse, "stat session state");
  if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) != sizeof(Layout)) {
    return FuseError(Errc::kCorrupt, "session state: not a digestd session state (size " +
                                          std::to_string(st.st_size) + ")");
  }
  // A memfd only (nobody can swap a file on disk in): sealed against growing and shrinking.
  const int seals = ::fcntl(fd.Get(), F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    return FuseError(Errc::kCorrupt, "session state: not a sealed memfd");
  }
  void* p = ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED, fd.Get(), 0);
  if (p == MAP_FAILED) return SysError(Module::kFuse, "map session state");
  auto* m = static_cast<Layout*>(p);
  SessionState s(std::move(fd), m);
  if (std::memcmp(m->magic, kMagic, sizeof(kMagic)) != 0 || m->version != 1 ||
      m->slots != kSlots || m->init_len > kMaxMessage || m->reply_len > kMaxMessage ||
      ::strnlen(m->mountpoint, sizeof(m->mountpoint)) == sizeof(m->mountpoint)) {
    return FuseError(Errc::kCorrupt, "session state: bad header (another version of digestd?)");
  }
  return s;
}

std::string SessionState::mountpoint() const {
  return std::string(map_->mountpoint, ::strnlen(map_->mountpoint, sizeof(map_->mountpoint)));
}

namespace {

// Writes one saved message: its length is cleared first and published last, so a reader of a
// state whose writer was killed half way sees the old length 0, never a torn message.
Result<void> SetMessage(std::byte* dst, std::uint32_t& len, std::span<const std::byte> src,
                        std::string_view what) {
  if (src.size() > SessionState::kMaxMessage) {
    return FuseError(Errc::kTooLarge, "session state: " + std::string(what) + " too large");
  }
  len = 0;
  std::memcpy(dst, src.data(), src.size());
  std::atomic_thread_fence(std::memory_order_release);
  len = static_cast<std::uint32_t>(src.size());
  return {};
}

}  // namespace

Result<void> SessionState::SetInit(std::span<const std::byte> request) {
  return SetMessage(map_->init, map_->init_len, request, "INIT request");
}

Result<void> SessionState::SetInitReply(std::span<const std::byte> reply) {
  return SetMessage(map_->reply, map_->reply_len, reply, "INIT reply");
}

std::span<const std::byte> SessionState::init() const {
  return {map_->init, std::min<std::size_t>(map_->init_len, kMaxMessage)};
}
std::span<const std::byte> SessionState::init_reply() const {
  return {map_->reply, std::min<std::size_t>(map_->reply_len, kMaxMessage)};
}

// Open addressing with linear probing; erased slots are tombstones reused by later inserts.
std::optional<SessionState::Backing> SessionState::GetBacking(std::uint64_t ino) const {
  if (ino == kEmpty || ino == kTombstone) return std::nullopt;
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    const auto& s = Table()[(ino + i) % kSlots];
    const std::uint64_t k = s.ino.load(std::memory_order_acquire);
    if (k == kEmpty) return std::nullopt;
    if (k == ino) {
      return Backing{.id = s.id.load(std::memory_order_relaxed),
                     .opens = s.opens.load(std::memory_order_relaxed)};
    }
  }
  return std::nullopt;
}

bool SessionState::PutBacking(std::uint64_t ino, Backing b) {
  if (ino == kEmpty || ino == kTombstone) return false;
  if (used_ + tombstones_ + 1 > kSlots / 4 * 3 && tombstones_ > 0) Rehash();
  Slot* free_slot = nullptr;
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    auto& s = Table()[(ino + i) % kSlots];
    const std::uint64_t k = s.ino.load(std::memory_order_acquire);
    if (k == ino) {
      s.id.store(b.id, std::memory_order_relaxed);
      s.opens.store(b.opens, std::memory_order_release);
      map_->writes.fetch_add(1, std::memory_order_release);
      return true;
    }
    if (k == kTombstone && free_slot == nullptr) free_slot = &s;
    if (k == kEmpty) {
      if (free_slot == nullptr) free_slot = &s;
      break;
    }
  }
  if (free_slot == nullptr) return false;
  if (free_slot->ino.load(std::memory_order_relaxed) == kTombstone) --tombstones_;
  ++used_;
  free_slot->id.store(b.id, std::memory_order_relaxed);
  free_slot->opens.store(b.opens, std::memory_order_relaxed);
  free_slot->ino.store(ino, std::memory_order_release);  // published last
  map_->writes.fetch_add(1, std::memory_order_release);
  return true;
}

void SessionState::EraseBacking(std::uint64_t ino) {
  if (ino == kEmpty || ino == kTombstone) return;
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    auto& s = Table()[(ino + i) % kSlots];
    const std::uint64_t k = s.ino.load(std::memory_order_acquire);
    if (k == kEmpty) return;
    if (k == ino) {
      s.ino.store(kTombstone, std::memory_order_release);
      --used_;
      ++tombstones_;
      map_->writes.fetch_add(1, std::memory_order_release);
      return;
    }
  }
}

std::size_t SessionState::backing_count() const { return used_; }

}  // namespace digestd::fusefs
