// The hand-off to containerd's content store: what it accepts before it dials anything.

#include <gtest/gtest.h>

#include "snapshotter/content_seed.h"
#include "testing/test_util.h"

namespace digestd::snapshotter {
namespace {

TEST(ContentSeedTest, NamespacesFollowContainerdsRule) {
  for (const char* ok : {"default", "k8s.io", "moby", "a", "a-b_c.d", "A1"}) {
    EXPECT_TRUE(ValidContainerdNamespace(ok)) << ok;
  }
  for (const char* bad : {"", ".", "-a", "a-", "a..b", "a/b", "a b", "../x", "k8s.io\n"}) {
    EXPECT_FALSE(ValidContainerdNamespace(bad)) << bad;
  }
  EXPECT_TRUE(ValidContainerdNamespace(std::string(76, 'n')));
  EXPECT_FALSE(ValidContainerdNamespace(std::string(77, 'n')));
}

TEST(ContentSeedTest, ABadNamespaceIsRefusedBeforeAnythingIsSent) {
  digestd::testing::TempDir dir;
  auto store = store::Store::Open({.root = dir.path() / "store"});
  ASSERT_OK(store);
  auto r = SeedContainerdContent(**store, {}, {.containerd_socket = "/nonexistent.sock", .ns = "../x"});
  ASSERT_ERRC(r, Errc::kInvalidArgument);
  // With a good namespace and nothing to hand over, nothing is dialled either.
  EXPECT_OK(SeedContainerdContent(**store, {}, {.containerd_socket = "/nonexistent.sock", .ns = "default"}));
}

}  // namespace
}  // namespace digestd::snapshotter
