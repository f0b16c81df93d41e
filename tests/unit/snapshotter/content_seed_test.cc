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

// The daemon's after-pull hook: a tenant's image never reaches containerd's shared content store;
// a shared one goes to every configured namespace, and the first failure is the hook's error,
// naming the namespace.
TEST(ContentSeedTest, TheHandOffSkipsTenantsAndNamesTheNamespaceThatFailed) {
  digestd::testing::TempDir dir;
  auto store = store::Store::Open({.root = dir.path() / "store"});
  ASSERT_OK(store);
  auto digest = [](char c) { return *verify::Digest::Parse("sha256:" + std::string(64, c)); };
  PulledImage image{.manifest = digest('a'), .image_manifest = digest('a'), .config = digest('b'),
                    .layers = {digest('c')}, .tenant = "team-a"};
  const HandOffOptions opts{.containerd_socket = dir.path() / "no-containerd.sock",
                            .namespaces = {"default", "k8s.io"}};
  bool skipped = false;
  EXPECT_OK(HandOffToContainerd(**store, image, opts, &skipped));  // nothing dialled
  EXPECT_TRUE(skipped);
  image.tenant.clear();
  auto r = HandOffToContainerd(**store, image, opts, &skipped);
  EXPECT_FALSE(skipped);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().ToString().find("namespace default"), std::string::npos) << r.error().ToString();
  // No namespaces configured: nothing to do.
  EXPECT_OK(HandOffToContainerd(**store, image, {.containerd_socket = opts.containerd_socket}));
}

}  // namespace
}  // namespace digestd::snapshotter
