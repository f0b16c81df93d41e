// Listening Unix sockets: stale sockets replaced, anything else refused, mode and group set.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/unix_socket.h"
#include "testing/test_util.h"

namespace digestd {
namespace {

TEST(UnixSocketTest, ListensWithModeAndGroupAndReplacesOnlyStaleSockets) {
  digestd::testing::TempDir dir;
  const auto path = dir.path() / "sub" / "api.sock";  // the parent is created
  auto first = ListenUnixSocket(path, 0660, ::getegid(), Module::kCommon);
  ASSERT_OK(first);
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, ::getegid());
  // A socket left behind by a previous run is replaced.
  first->Reset();
  ASSERT_OK(ListenUnixSocket(path, 0600, ::getegid(), Module::kCommon));
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // Anything else at that path is never removed.
  const auto file = dir.path() / "not-a-socket";
  std::ofstream(file) << "keep me";
  ASSERT_ERRC(ListenUnixSocket(file, 0660, ::getegid(), Module::kCommon), Errc::kBusy);
  EXPECT_TRUE(std::filesystem::is_regular_file(file));
  ASSERT_ERRC(ListenUnixSocket(dir.path() / std::string(200, 'x'), 0660, ::getegid(),
                               Module::kCommon),
              Errc::kInvalidArgument);
}

TEST(UnixSocketTest, UnknownGroupsAreNamed) {
  auto g = GroupId("no-such-group-digestd", Module::kDaemon);
  ASSERT_ERRC(g, Errc::kInvalidArgument);
  EXPECT_NE(g.error().context().find("no-such-group-digestd"), std::string::npos);
  ASSERT_OK(GroupId("root", Module::kDaemon));
}

}  // namespace
}  // namespace digestd
