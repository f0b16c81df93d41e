// Store file helpers: direct (O_DIRECT) appends and the writeback pacer.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <string>

#include "store/fs_util.h"
#include "testing/test_util.h"

namespace digestd::store {
namespace {

using digestd::testing::TempDir;

std::string ReadAll(int fd) {
  std::string out;
  char buf[65536];
  off_t at = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    at += n;
  }
  return out;
}

// Every size around the alignment and buffer boundaries comes back byte for byte, with the
// file's size exact (the padded tail is truncated away), whatever the pieces it was given in.
TEST(DirectAppenderTest, ContentAndSizeAreExact) {
  TempDir dir;
  std::mt19937_64 rng(1);
  const std::size_t kA = DirectAppender::kAlign;
  const std::size_t kB = DirectAppender::kBuffer;
  DirectAppender direct;  // reused across files, as the unpacker does
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, kA - 1, kA, kA + 1, kB - 1, kB, kB + 1,
                           2 * kB + kA + 3}) {
    std::string data(size, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    const std::string path = (dir.path() / ("f" + std::to_string(size))).string();
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd);
    if (!direct.Start(fd.Get())) GTEST_SKIP() << "this filesystem refuses O_DIRECT";
    for (std::size_t at = 0, piece = 1; at < size; piece = piece * 5 % 1000003 + 1) {
      const std::size_t n = std::min(piece, size - at);
      ASSERT_OK(direct.Append(std::as_bytes(std::span(data.data() + at, n))));
      at += n;
    }
    ASSERT_OK(direct.Finish());
    struct stat st {};
    ASSERT_EQ(::fstat(fd.Get(), &st), 0);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), size);
    // Read back through a new descriptor (the writer's is O_DIRECT: aligned reads only).
    UniqueFd reader(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(reader);
    EXPECT_TRUE(ReadAll(reader.Get()) == data) << "content differs at size " << size;
  }
}

// The pacer only schedules writeback; the file's content is untouched whatever it does.
TEST(WritebackPacerTest, LeavesContentIntact) {
  TempDir dir;
  const std::string path = (dir.path() / "f").string();
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  WritebackPacer pacer(4096, 2);
  std::string all;
  for (int i = 0; i < 100; ++i) {
    const std::string piece(1000 + i, static_cast<char>('a' + i % 26));
    ASSERT_OK(PWriteAll(fd.Get(), std::as_bytes(std::span(piece)), all.size()));
    all += piece;
    pacer.Advance(fd.Get(), all.size());
  }
  EXPECT_EQ(ReadAll(fd.Get()), all);
}

}  // namespace
}  // namespace digestd::store
