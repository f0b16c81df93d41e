// End to end, as the container runtime uses digestd (root, as in CI): pull from a real registry,
// mount, stack the image's layer views with overlayfs in a private mount namespace, and run
// busybox from it with chroot and with runc. A multi-layer image with deletions and an opaque
// directory must look exactly as `umoci unpack` lays it out, through both the merged rootfs view
// and the overlay stack.

#include <sys/mount.h>
#include <unistd.h>

#include "fusefs/fuse_mount.h"
#include "integration/pull_fixture.h"
#include "testkit/tar_builder.h"

namespace digestd::daemon {
namespace {

using digestd::testing::kTreeListing;
using digestd::testing::Slurp;
using digestd::testing::TarBuilder;


class RuntimeTest : public PullTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "runtime tests need root (CI runs them as root)";
    PullTest::SetUp();
    if (HasFatalFailure()) return;
    mnt_ = (dir_.path() / "mnt").string();
    auto m = fusefs::FuseMount::Mount(*store_, {.mountpoint = mnt_});
    ASSERT_TRUE(m.has_value()) << m.error().ToString();
    mount_ = std::move(*m);
  }
  void TearDown() override {
    mount_.reset();
    if (!mnt_.empty()) (void)::umount2(mnt_.c_str(), MNT_DETACH);
  }

  // Pushes `tag` of the builder's layout as repo:v1, signs it, pulls it; returns the image dir.
  std::string PushSignPull(const std::string& tag, const std::string& repo) {
    EXPECT_EQ(builder_.Push(tag, registry_->host() + "/" + repo + ":v1"), "");
    const std::string digest = DigestOf(repo + ":v1");
    Sign(repo, digest);
    auto r = Pull(repo + ":v1");
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().ToString());
    if (!r) return "";
    return mnt_ + "/images/sha256/" + std::string(r->image_manifest.hex());
  }

  // Runs a shell script in a private mount namespace: its mounts vanish with it, even when the
  // test fails half way.
  digestd::testing::CommandResult InPrivateMountNamespace(const std::string& script) {
    const std::string path = (dir_.path() / ("script" + std::to_string(++scripts_) + ".sh")).string();
    std::ofstream(path) << script << "\n";
    return Shell("unshare -m --propagation private sh " + path + " 2>&1");
  }

  std::string mnt_;
  fusefs::FuseMountPtr mount_;
  int scripts_ = 0;
};

TEST_F(RuntimeTest, BusyboxRunsFromTheMountWithChrootAndRunc) {
  ASSERT_TRUE(mount_->passthrough_active());  // the default, where the kernel has it
  ASSERT_EQ(builder_.Busybox("bb"), "");
  const std::string image = PushSignPull("bb", "e2e/busybox");
  ASSERT_FALSE(image.empty());
  const std::string lowerdir = Slurp(image + "/lowerdir");
  ASSERT_NE(lowerdir.find(mnt_ + "/layers/sha256/"), std::string::npos) << lowerdir;
  const std::string t = (dir_.path() / "ovl").string();
  const std::string id = "digestd-e2e-" + std::to_string(::getpid());
  const std::string script =
      "set -e; T=" + t + "; mkdir -p $T; mount -t tmpfs tmpfs $T; mkdir $T/u $T/w $T/root $T/b; "
      "mount -t overlay overlay -o lowerdir=" + lowerdir + ",upperdir=$T/u,workdir=$T/w $T/root; "
      "chroot $T/root /bin/busybox sh -c 'echo chroot-ok'; "
      "cat $T/root/hello.txt; "
      "mkdir $T/b/rootfs; mount --bind $T/root $T/b/rootfs; cd $T/b; runc spec; "
      "jq '.process.args=[\"/bin/busybox\",\"sh\",\"-c\",\"echo runc-ok\"] | "
      ".process.terminal=false' config.json > c.json; mv c.json config.json; "
      "runc --root $T/runc run --bundle $T/b " + id + " </dev/null; "
      "runc --root $T/runc delete -f " + id + " 2>/dev/null || true";
  auto r = InPrivateMountNamespace(script);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("chroot-ok"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("hello"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("runc-ok"), std::string::npos) << r.output;
  EXPECT_GT(mount_->stats().passthrough_opens.load(), 0u);
}

TEST_F(RuntimeTest, BusyboxRunsWithPassthroughOff) {
  mount_.reset();
  auto m = fusefs::FuseMount::Mount(*store_, {.mountpoint = mnt_, .passthrough = false});
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  mount_ = std::move(*m);
  ASSERT_FALSE(mount_->passthrough_active());
  ASSERT_EQ(builder_.Busybox("bb2"), "");
  const std::string image = PushSignPull("bb2", "e2e/busybox-nopt");
  ASSERT_FALSE(image.empty());
  const std::string t = (dir_.path() / "ovl2").string();
  auto r = InPrivateMountNamespace(
      "set -e; T=" + t + "; mkdir -p $T; mount -t tmpfs tmpfs $T; mkdir $T/u $T/w $T/root; "
      "mount -t overlay overlay -o lowerdir=" + Slurp(image + "/lowerdir") +
      ",upperdir=$T/u,workdir=$T/w $T/root; chroot $T/root /bin/busybox sh -c 'echo no-passthrough-ok'");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("no-passthrough-ok"), std::string::npos) << r.output;
  EXPECT_GT(mount_->stats().reads.load(), 0u);
}

TEST_F(RuntimeTest, DeletionsAndOpaqueDirectoryMatchUmociUnpack) {
  ASSERT_EQ(builder_.Busybox("ml"), "");
  ASSERT_EQ(builder_.AddLayer("ml",
                              "mkdir -p opt/a opt/b etc && echo 1 > opt/a/f && echo 2 > opt/b/g && "
                              "echo keep > opt/a/keep && ln -s ../hello.txt opt/link && "
                              "ln bin/busybox bin/sh && chmod 4755 bin/busybox && "
                              "echo cfg > etc/app.conf"),
            "");
  ASSERT_EQ(builder_.AddLayer("ml", "rm -f hello.txt etc/app.conf && rm -rf opt/b"), "");
  // An opaque directory, which umoci's own diffs never produce: a layer we build ourselves.
  const std::string tar = (dir_.path() / "opaque.tar").string();
  std::ofstream(tar, std::ios::binary) << TarBuilder()
                                              .Dir("opt/", {.mode = 0755})
                                              .Dir("opt/a/", {.mode = 0755})
                                              .File("opt/a/.wh..wh..opq", "")
                                              .File("opt/a/new", "new\n", {.mode = 0640})
                                              .Finish();
  auto add = Shell("umoci raw add-layer --image " + builder_.layout() + ":ml " + tar + " 2>&1");
  ASSERT_EQ(add.status, 0) << add.output;
  const std::string image = PushSignPull("ml", "e2e/multilayer");
  ASSERT_FALSE(image.empty());

  const std::string bundle = (dir_.path() / "umoci-bundle").string();
  auto unpack = Shell("umoci unpack --image " + builder_.layout() + ":ml " + bundle + " 2>&1");
  ASSERT_EQ(unpack.status, 0) << unpack.output;
  auto want = Shell("cd " + bundle + "/rootfs && " + kTreeListing);
  ASSERT_EQ(want.status, 0) << want.output;
  ASSERT_NE(want.output.find("opt/a/new"), std::string::npos) << want.output;
  ASSERT_EQ(want.output.find("opt/a/keep"), std::string::npos) << want.output;
  ASSERT_EQ(want.output.find("hello.txt|"), std::string::npos) << want.output;

  auto merged = Shell("cd " + image + "/rootfs && " + kTreeListing);
  ASSERT_EQ(merged.status, 0) << merged.output;
  EXPECT_EQ(merged.output, want.output);

  const std::string target = (dir_.path() / "stack").string();
  fs::create_directories(target);
  auto stacked = InPrivateMountNamespace("set -e; mount -t overlay overlay -o lowerdir=" +
                                         Slurp(image + "/lowerdir") + " " + target + "; cd " +
                                         target + "; " + kTreeListing);
  ASSERT_EQ(stacked.status, 0) << stacked.output;
  EXPECT_EQ(stacked.output, want.output);
}

}  // namespace
}  // namespace digestd::daemon
