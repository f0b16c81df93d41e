#pragma once

// What a FUSE session's successor needs besides the /dev/fuse fd, kept in a memfd that is handed
// over with it (docs/architecture.md, "Live restart"): the kernel's FUSE_INIT request and the
// answer this daemon gave it (the kernel sends INIT once per connection; a successor replays the
// saved one into its own libfuse session), the mount point, and the passthrough backing ids of
// files open right now (the kernel allows one backing file per inode: a successor must reuse the
// id its predecessor registered while any file it opened is still open).
//
// The memfd is shared, not copied: a predecessor killed at any moment leaves it as it last wrote
// it. Fields are written before the counts/keys that publish them; a slot write interrupted by a
// kill at worst leaks one backing id (a reference to a file object until the mount goes).
//
// Thread safety: Backing* calls are made under a TableLock, and by one thread of a process at a
// time (the caller's mutex: the lock excludes other processes only). During a hand-over two
// processes serve the same connection and share the table. Everything else is set once, before
// the session serves.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace digestd::fusefs {

class SessionState {
 public:
  static constexpr std::size_t kMaxMessage = 256;
  static constexpr std::uint32_t kSlots = 1u << 15;

  // A new state for a fresh mount at `mountpoint`.
  static Result<SessionState> Create(std::string_view mountpoint);
  // The state a predecessor handed over; kCorrupt when it is not one (wrong magic, version or
  // size), never trusted beyond its bounds.
  static Result<SessionState> Open(UniqueFd fd);
  SessionState(SessionState&&) noexcept;
  SessionState& operator=(SessionState&&) noexcept;
  ~SessionState();

  int fd() const { return fd_.Get(); }
  std::string mountpoint() const;

  // The kernel's INIT request (fuse_in_header + fuse_init_in) and the reply this daemon sent.
  Result<void> SetInit(std::span<const std::byte> request);
  Result<void> SetInitReply(std::span<const std::byte> reply);
  // Empty when no INIT was recorded (a predecessor killed before the kernel's INIT arrived).
  std::span<const std::byte> init() const;
  std::span<const std::byte> init_reply() const;

  // Passthrough backing id registered for `ino`, with the number of opens using it.
  struct Backing {
    int id = 0;
    int opens = 0;
  };
  // Excludes other processes from the backing table (an OFD lock on the memfd, released if the
  // holder dies) and catches up with their changes. Take the caller's mutex first.
  class TableLock {
   public:
    explicit TableLock(SessionState& s);
    ~TableLock();
    TableLock(const TableLock&) = delete;
    TableLock& operator=(const TableLock&) = delete;

   private:
    SessionState& s_;
  };
  std::optional<Backing> GetBacking(std::uint64_t ino) const;
  // Records (or updates) ino's backing; false when the table is full (the open then goes
  // without passthrough).
  bool PutBacking(std::uint64_t ino, Backing b);
  void EraseBacking(std::uint64_t ino);
  std::size_t backing_count() const;

  struct Layout;

 private:
  SessionState(UniqueFd fd, Layout* map);
  struct Slot;
  Slot* Table() const;
  void Recount();
  void Rehash();
  UniqueFd fd_;
  UniqueFd lock_fd_;  // our own open file description of the memfd, for TableLock
  Layout* map_ = nullptr;
  std::size_t used_ = 0;        // live slots of the active table
  std::size_t tombstones_ = 0;  // erased slots (rehashed away when the table fills)
  std::uint32_t seen_writes_ = 0;  // Layout::writes when this process last had the table
};

}  // namespace digestd::fusefs
