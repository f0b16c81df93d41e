// The FUSE session's hand-over state (a sealed memfd): what a successor reads back, the backing
// table across "processes" (two mappings of one memfd), and refusal of anything that is not one.

#include "fusefs/session_state.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "testing/test_util.h"

namespace digestd::fusefs {
namespace {

std::span<const std::byte> Bytes(const std::string& s) { return std::as_bytes(std::span(s)); }

SessionState Reopen(const SessionState& s) {
  auto again = SessionState::Open(UniqueFd(::dup(s.fd())));
  EXPECT_TRUE(again.has_value()) << again.error().ToString();
  return std::move(*again);
}

TEST(SessionStateTest, ASuccessorReadsWhatThePredecessorWrote) {
  auto s = SessionState::Create("/run/digestd/mnt");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_TRUE(s->init().empty());
  ASSERT_OK(s->SetInit(Bytes("init-request")));
  ASSERT_OK(s->SetInitReply(Bytes("init-reply")));
  ASSERT_TRUE(s->PutBacking(42, {.id = 7, .opens = 2}));
  SessionState next = Reopen(*s);
  EXPECT_EQ(next.mountpoint(), "/run/digestd/mnt");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(next.init().data()), next.init().size()),
            "init-request");
  EXPECT_EQ(next.init_reply().size(), 10u);
  auto b = next.GetBacking(42);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->id, 7);
  EXPECT_EQ(b->opens, 2);
  EXPECT_EQ(next.backing_count(), 1u);
  // Shared, not copied: the successor's change is what the predecessor's mapping shows.
  next.EraseBacking(42);
  EXPECT_FALSE(s->GetBacking(42).has_value());
  EXPECT_EQ(next.backing_count(), 0u);
  EXPECT_FALSE(s->SetInit(Bytes(std::string(SessionState::kMaxMessage + 1, 'x'))).has_value());
}

// During a hand-over both processes serve and share the backing table: TableLock excludes the
// other one (its own open file description of the memfd, so another SessionState over a dup'ed
// fd is "the other process"), and the one taking the lock catches up with the other's changes.
TEST(SessionStateTest, TwoProcessesTakeTheBackingTableInTurn) {
  auto a = SessionState::Create("/run/digestd/mnt");
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  SessionState b = Reopen(*a);
  std::atomic<bool> a_done{false};
  std::atomic<bool> b_saw_a_done{false};
  std::atomic<bool> b_waiting{false};
  std::thread other;
  {
    SessionState::TableLock lock(*a);
    other = std::thread([&] {
      b_waiting = true;
      SessionState::TableLock theirs(b);
      b_saw_a_done = a_done.load();
      EXPECT_EQ(b.backing_count(), 3u) << "recounted after the other process's changes";
      b.EraseBacking(2);
    });
    while (!b_waiting) std::this_thread::yield();
    // Room for the other one to get in if the lock let it (not a timing assertion: with the
    // lock it waits however long this takes).
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (std::uint64_t ino = 1; ino <= 3; ++ino) ASSERT_TRUE(a->PutBacking(ino, {.id = 9, .opens = 1}));
    a_done = true;
  }
  other.join();
  EXPECT_TRUE(b_saw_a_done) << "the other process got the table while this one held it";
  SessionState::TableLock lock(*a);
  EXPECT_EQ(a->backing_count(), 2u);
  EXPECT_FALSE(a->GetBacking(2).has_value());
}

TEST(SessionStateTest, TheBackingTableSurvivesChurnAndRehashes) {
  auto s = SessionState::Create("/m");
  ASSERT_TRUE(s.has_value());
  // Far more opens and releases over time than slots: tombstones are rehashed away.
  for (std::uint64_t round = 0; round < 8; ++round) {
    for (std::uint64_t i = 0; i < SessionState::kSlots / 2; ++i) {
      ASSERT_TRUE(s->PutBacking(round * 1'000'000 + i + 1, {.id = static_cast<int>(i + 1), .opens = 1}))
          << round << " " << i;
    }
    for (std::uint64_t i = 0; i < SessionState::kSlots / 2; ++i) s->EraseBacking(round * 1'000'000 + i + 1);
    EXPECT_EQ(s->backing_count(), 0u);
  }
  ASSERT_TRUE(s->PutBacking(5, {.id = 9, .opens = 1}));
  SessionState next = Reopen(*s);
  EXPECT_EQ(next.GetBacking(5)->id, 9);
  EXPECT_FALSE(next.GetBacking(6).has_value());
  // Full: the open goes without passthrough rather than failing.
  for (std::uint64_t i = 100; i < 100 + SessionState::kSlots; ++i) (void)next.PutBacking(i, {.id = 1, .opens = 1});
  EXPECT_FALSE(next.PutBacking(999'999'999, {.id = 1, .opens = 1}));
}

TEST(SessionStateTest, AnythingElseIsRefused) {
  // An ordinary file, a memfd of the wrong size, an unsealed memfd, a bad magic.
  const std::string path = ::testing::TempDir() + "/not-state";
  { UniqueFd f(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600)); ASSERT_EQ(::ftruncate(f.Get(), 4096), 0); }
  ASSERT_ERRC(SessionState::Open(UniqueFd(::open(path.c_str(), O_RDWR))), Errc::kCorrupt);
  UniqueFd small(::memfd_create("x", MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(small.Get(), 100), 0);
  ASSERT_ERRC(SessionState::Open(std::move(small)), Errc::kCorrupt);
  auto s = SessionState::Create("/m");
  ASSERT_TRUE(s.has_value());
  struct stat st {};
  ASSERT_EQ(::fstat(s->fd(), &st), 0);
  UniqueFd unsealed(::memfd_create("y", MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(unsealed.Get(), st.st_size), 0);
  ASSERT_ERRC(SessionState::Open(std::move(unsealed)), Errc::kCorrupt);
  UniqueFd forged(::memfd_create("z", MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(forged.Get(), st.st_size), 0);
  ASSERT_EQ(::fcntl(forged.Get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  ASSERT_EQ(::pwrite(forged.Get(), "NOTDGST!", 8, 0), 8);
  ASSERT_ERRC(SessionState::Open(std::move(forged)), Errc::kCorrupt);
  // The state cannot be grown or shrunk by anyone holding it.
  EXPECT_NE(::ftruncate(s->fd(), 10), 0);
}

}  // namespace
}  // namespace digestd::fusefs
