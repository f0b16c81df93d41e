// The real FUSE mount (runs as root, as CI does): what the kernel sees, overlayfs stacked on the
// layer views, writes refused, stale mounts of a crashed daemon cleared.

#include <fcntl.h>
#include <cstring>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "fusefs/fuse_mount.h"
#include "testing/mount_reader.h"
#include "testing/process_util.h"
#include "testing/store_image.h"
#include "testkit/tar_builder.h"
#include "testing/test_util.h"

namespace digestd::fusefs {
namespace {

namespace fs = std::filesystem;
using digestd::testing::ChildProcess;
using digestd::testing::MountReader;
using digestd::testing::PutImage;
using digestd::testing::Shell;
using digestd::testing::StoredImage;
using digestd::testing::kTreeListing;
using digestd::testing::Slurp;
using digestd::testing::TarBuilder;
using digestd::testing::TempDir;

// The tree under `dir` as kTreeListing prints it.
std::string Listing(const std::string& dir) {
  auto r = Shell("cd " + dir + " && " + kTreeListing);
  EXPECT_EQ(r.status, 0) << r.output;
  return r.output;
}

class FuseMountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "mount tests need root (CI runs them as root)";
    auto s = store::Store::Open({.root = dir_.path() / "store"});
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
    TarBuilder base;
    base.Dir("bin/")
        .File("bin/busybox", "BUSYBOX", {.mode = 04755})
        .Hardlink("bin/sh", "bin/busybox")
        .Symlink("bin/up", "../../../../etc/shadow")
        .Dir("etc/")
        .File("etc/passwd", "root:x:0:0")
        .File("etc/hosts", "127.0.0.1 localhost")
        .Dir("opt/")
        .Dir("opt/sub/")
        .File("opt/sub/lower-only", "hidden by the opaque dir above")
        .CharDev("dev/null", 1, 3, {.mode = 0666});
    TarBuilder top;
    top.File("etc/.wh.hosts", "")
        .File("opt/.wh..wh..opq", "")
        .Xattr("user.tag", "v1")
        .File("opt/upper", "upper")
        .File("etc/passwd", "root:x:0:0:replaced");
    auto img = PutImage(*store_, {base.Finish(), top.Finish()});
    ASSERT_TRUE(img.has_value()) << img.error().ToString();
    image_ = *img;
    mnt_ = (dir_.path() / "mnt").string();
    Mount();
  }
  void Mount() {
    auto m = FuseMount::Mount(*store_, {.mountpoint = mnt_, .dynamic_timeout_s = 0});
    ASSERT_TRUE(m.has_value()) << m.error().ToString();
    mount_ = std::move(*m);
  }
  void TearDown() override {
    mount_.reset();
    if (!mnt_.empty()) (void)::umount2(mnt_.c_str(), MNT_DETACH);
  }
  // Unmounts ours and mounts a store of its own (the child must not share our store's lock) at
  // the same mount point from the helper process; returns once it says "ready".
  void StartChildMount(ChildProcess& child, const std::string& store_name, const std::string& log) {
    mount_.reset();
    ASSERT_TRUE(child.Start({DIGESTD_FUSE_CHILD, (dir_.path() / store_name).string(), mnt_}, log));
    for (int i = 0; i < 500 && Slurp(log).find("ready") == std::string::npos; ++i) {
      ASSERT_TRUE(child.Running()) << Slurp(log);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_NE(Slurp(log).find("ready"), std::string::npos) << Slurp(log);
  }
  std::string Layer(std::size_t i) const {
    return mnt_ + "/layers/sha256/" + std::string(image_.layers[i].hex());
  }
  std::string Image() const { return mnt_ + "/images/sha256/" + std::string(image_.manifest.hex()); }

  TempDir dir_;
  store::StorePtr store_;
  StoredImage image_{verify::Digest::Parse("sha256:" + std::string(64, '0')).value(), {}};
  std::string mnt_;
  FuseMountPtr mount_;
};

TEST_F(FuseMountTest, ServesLayersReadOnly) {
  struct stat a {}, b {};
  ASSERT_EQ(::stat((Layer(0) + "/bin/busybox").c_str(), &a), 0) << std::strerror(errno);
  ASSERT_EQ(::stat((Layer(0) + "/bin/sh").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_EQ(a.st_mode, static_cast<mode_t>(S_IFREG | 04755));
  EXPECT_EQ(Slurp(Layer(0) + "/bin/sh"), "BUSYBOX");
  EXPECT_EQ(fs::read_symlink(Layer(0) + "/bin/up"), "../../../../etc/shadow");
  EXPECT_EQ(Slurp(mnt_ + "/blobs/sha256/" + std::string(image_.layers[0].hex())).substr(0, 2),
            "\x1f\x8b");

  // Overlay metadata as overlayfs reads it.
  char value[16] = {};
  ASSERT_EQ(::getxattr((Layer(1) + "/opt").c_str(), "trusted.overlay.opaque", value, sizeof(value)),
            1)
      << std::strerror(errno);
  EXPECT_EQ(value[0], 'y');
  struct stat wh {};
  ASSERT_EQ(::lstat((Layer(1) + "/etc/hosts").c_str(), &wh), 0);
  EXPECT_TRUE(S_ISCHR(wh.st_mode));
  EXPECT_EQ(wh.st_rdev, makedev(0, 0));
  ASSERT_EQ(::getxattr((Layer(1) + "/opt/upper").c_str(), "user.tag", value, sizeof(value)), 2);
  EXPECT_EQ(::getxattr((Layer(1) + "/opt/upper").c_str(), "user.none", value, sizeof(value)), -1);
  EXPECT_EQ(errno, ENODATA);

  // Every write is refused.
  EXPECT_EQ(::open((Layer(0) + "/etc/passwd").c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::open((Layer(0) + "/etc/new").c_str(), O_CREAT | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::mkdir((Layer(0) + "/d").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::unlink((Layer(0) + "/etc/passwd").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::chmod((Layer(0) + "/etc/passwd").c_str(), 0777), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(::setxattr((Layer(0) + "/etc").c_str(), "user.x", "1", 1, 0), -1);
  EXPECT_EQ(errno, EROFS);

  // Unknown digests, and the mount's flags.
  EXPECT_FALSE(fs::exists(mnt_ + "/layers/sha256/" + std::string(64, 'f')));
  EXPECT_FALSE(fs::exists(mnt_ + "/blobs/sha256/nope"));
  struct statvfs sv {};
  ASSERT_EQ(::statvfs(mnt_.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  EXPECT_TRUE(sv.f_flag & ST_NOSUID);
  EXPECT_TRUE(sv.f_flag & ST_NODEV);
  EXPECT_GT(sv.f_blocks, 0u);
  auto mi = Shell("grep ' " + mnt_ + " ' /proc/self/mountinfo");
  EXPECT_NE(mi.output.find("fuse.digestd"), std::string::npos) << mi.output;
  EXPECT_NE(mi.output.find("allow_other"), std::string::npos) << mi.output;
  EXPECT_NE(mi.output.find("default_permissions"), std::string::npos) << mi.output;
  // A device node in the image cannot be used as one (nodev).
  EXPECT_EQ(::open((Layer(0) + "/dev/null").c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, EACCES);
}

TEST_F(FuseMountTest, OverlayStackOfLayerViewsEqualsMergedRootfs) {
  const std::string lowerdir = Slurp(Image() + "/lowerdir");
  EXPECT_EQ(lowerdir, Layer(1) + ":" + Layer(0));
  const std::string target = (dir_.path() / "overlay").string();
  fs::create_directories(target);
  // A private mount namespace: nothing leaks to the host even if the test dies.
  auto r = Shell("unshare -m sh -c 'mount -t overlay overlay -o lowerdir=" + lowerdir + " " +
                 target + " && cd " + target + " && " + kTreeListing + "' 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string merged = Listing(Image() + "/rootfs");
  EXPECT_EQ(r.output, merged);
  EXPECT_EQ(merged.find("etc/hosts"), std::string::npos) << merged;
  EXPECT_EQ(merged.find("lower-only"), std::string::npos) << merged;
  EXPECT_NE(merged.find("opt/upper"), std::string::npos) << merged;
  EXPECT_EQ(Slurp(Image() + "/rootfs/etc/passwd"), "root:x:0:0:replaced");
}

TEST_F(FuseMountTest, DeniedLayerDisappears) {
  ASSERT_TRUE(fs::exists(Layer(0) + "/etc/passwd"));
  ASSERT_OK(store_->Deny(image_.layers[0], "test"));
  EXPECT_FALSE(fs::exists(Layer(0)));
  EXPECT_FALSE(fs::exists(Image()));
  ASSERT_OK(store_->Undeny(image_.layers[0]));
  EXPECT_TRUE(fs::exists(Layer(0) + "/etc/passwd"));
}

TEST_F(FuseMountTest, PassthroughReadsNeverReachTheDaemon) {
  std::string big(64u << 20, '\0');
  std::uint64_t x = 99;
  for (std::size_t i = 0; i + 8 <= big.size(); i += 8) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    std::memcpy(big.data() + i, &x, 8);
  }
  auto img = PutImage(*store_, {TarBuilder().File("big", big).Finish()});
  ASSERT_TRUE(img.has_value()) << img.error().ToString();
  const std::string path = mnt_ + "/layers/sha256/" + std::string(img->layers[0].hex()) + "/big";
  for (bool passthrough : {true, false}) {
    mount_.reset();
    auto m = FuseMount::Mount(*store_, {.mountpoint = mnt_, .passthrough = passthrough});
    ASSERT_TRUE(m.has_value()) << m.error().ToString();
    mount_ = std::move(*m);
    ASSERT_EQ(mount_->passthrough_active(), passthrough);
    EXPECT_EQ(Slurp(path), big) << "passthrough=" << passthrough;
    if (passthrough) {
      EXPECT_EQ(mount_->stats().reads.load(), 0u);  // the kernel read the backing file itself
      EXPECT_GT(mount_->stats().passthrough_opens.load(), 0u);
      EXPECT_EQ(mount_->stats().passthrough_fallbacks.load(), 0u);
    } else {
      EXPECT_GT(mount_->stats().reads.load(), 0u);
    }
  }
}

TEST_F(FuseMountTest, PassthroughOpenOutlivesADenyButNewOpensFail) {
  ASSERT_TRUE(mount_->passthrough_active());
  const std::string path = Layer(0) + "/etc/passwd";
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_OK(store_->Deny(image_.layers[0], "test"));
  mount_->Invalidate(image_.layers[0]);
  EXPECT_EQ(::open(path.c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, ENOENT);
  char buf[32] = {};
  EXPECT_EQ(::pread(fd, buf, sizeof(buf), 0), 10);  // granted before the deny: lives until close
  ::close(fd);
}

// The kernel takes one backing file per FUSE inode: concurrent opens must share it. A second
// backing id for an inode that is open (a shell exec'ing itself, two containers on one layer) was
// refused with EIO.
TEST_F(FuseMountTest, ConcurrentPassthroughOpensOfOneFileShareItsBacking) {
  ASSERT_TRUE(mount_->passthrough_active());
  const std::string path = Layer(0) + "/etc/passwd";
  const int a = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(a, 0);
  const int b = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(b, 0) << std::strerror(errno);
  char buf[32] = {};
  EXPECT_EQ(::pread(b, buf, sizeof(buf), 0), 10);
  ::close(a);
  EXPECT_EQ(::pread(b, buf, sizeof(buf), 0), 10);  // the first close left the backing in place
  const int c = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(c, 0) << std::strerror(errno);
  ::close(b);
  ::close(c);
  // And after every close, a fresh open registers a new backing file.
  const int d = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(d, 0) << std::strerror(errno);
  EXPECT_EQ(::pread(d, buf, sizeof(buf), 0), 10);
  ::close(d);
  EXPECT_EQ(mount_->stats().reads.load(), 0u);
}

TEST_F(FuseMountTest, InvalidateMakesADeniedDigestVanishAtOnce) {
  // Default timeouts: top entries live 1 s in the kernel's cache, tree entries 4 h.
  mount_.reset();
  auto m = FuseMount::Mount(*store_, {.mountpoint = mnt_});
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  mount_ = std::move(*m);
  const std::string in_layer = Layer(0) + "/etc/passwd";
  const std::string in_image = Image() + "/rootfs/etc/passwd";
  ASSERT_EQ(Slurp(in_layer), "root:x:0:0");
  ASSERT_EQ(Slurp(in_image), "root:x:0:0:replaced");
  ASSERT_OK(store_->Deny(image_.layers[0], "test"));
  mount_->Invalidate(image_.layers[0]);
  EXPECT_FALSE(fs::exists(in_layer));  // no wait: the cached entries were dropped
  EXPECT_FALSE(fs::exists(in_image));
  EXPECT_TRUE(fs::exists(Layer(1) + "/opt/upper"));  // other layers are unaffected
}

TEST_F(FuseMountTest, TopListingsFollowTheStore) {
  // Listings are cached by the kernel (no opendir, cache_readdir); the top ones must still come
  // to show what the store holds, within their (default, 1 s) attribute timeout.
  mount_.reset();
  auto m = FuseMount::Mount(*store_, {.mountpoint = mnt_});
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  mount_ = std::move(*m);
  auto count = [&](const std::string& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
  };
  // Polls (never times): true once `dir` lists `want` entries, false after 10 s.
  auto becomes = [&](const std::string& dir, std::size_t want) {
    for (int i = 0; i < 200; ++i) {
      if (count(dir) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  const std::string layers = mnt_ + "/layers/sha256";
  const std::string images = mnt_ + "/images/sha256";
  EXPECT_EQ(count(layers), 2u);
  EXPECT_EQ(count(images), 1u);
  auto more = PutImage(*store_, {TarBuilder().File("new", "a third layer").Finish()});
  ASSERT_TRUE(more.has_value()) << more.error().ToString();
  EXPECT_TRUE(becomes(layers, 3u));
  EXPECT_TRUE(becomes(images, 2u));
  ASSERT_OK(store_->Deny(more->layers[0], "test"));
  EXPECT_TRUE(becomes(layers, 2u));
  EXPECT_TRUE(becomes(images, 1u));
  // Trees stay cached and right.
  EXPECT_EQ(count(Layer(0) + "/etc"), 2u);
  EXPECT_EQ(count(Layer(0) + "/etc"), 2u);
}

// A deny while a reader's lookup waits on the daemon, then the daemon killed: it must still
// exit, or no successor can start to answer that lookup. An entry invalidation takes the
// directory lock the lookup holds, uninterruptibly, so a killed daemon whose thread sat in one
// never exited (DaemonCrashTest saw 1 kill in 20 wedge so). Invalidation must not wait.
TEST_F(FuseMountTest, AnInvalidationNeverWaitsOnALookupInFlight) {
  const std::string log = (dir_.path() / "child.log").string();
  mount_.reset();
  ChildProcess child;
  ASSERT_TRUE(child.Start({DIGESTD_FUSE_CHILD, (dir_.path() / "store2").string(), mnt_,
                           image_.layers[0].ToString()},
                          log));
  // Polls (never times): true once the child's log says `what`, false after `tenths` / 10 s.
  auto says = [&](const std::string& what, int tenths) {
    for (int i = 0; i < tenths * 10; ++i) {
      if (Slurp(log).find(what) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(says("ready", 100)) << Slurp(log);
  std::thread reader([&] {
    struct stat st {};
    (void)::stat((mnt_ + "/layers/sha256/held-lookup").c_str(), &st);
  });
  const bool held = says("lookup held", 100);
  ::kill(child.pid(), SIGUSR1);
  const bool invalidated = held && says("invalidated", 100);
  ::kill(child.pid(), SIGKILL);
  bool exited = false;
  for (int i = 0; i < 1000 && !exited; ++i) {
    exited = !child.Running();
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!exited) digestd::testing::AbortFuseConnection(mnt_);  // frees the wedged process (and the reader)
  reader.join();
  child.Stop();
  EXPECT_TRUE(held) << Slurp(log);
  EXPECT_TRUE(invalidated) << "the invalidation waited on the lookup in flight\n" << Slurp(log);
  EXPECT_TRUE(exited) << "the killed daemon could not exit";
  Mount();  // clears the stale mount for the fixture
}

TEST_F(FuseMountTest, StaleMountOfACrashedDaemonIsCleared) {
  const std::string log = (dir_.path() / "child.log").string();
  ChildProcess child;
  StartChildMount(child, "store2", log);
  if (HasFatalFailure()) return;
  ::kill(child.pid(), SIGKILL);
  child.Stop();
  struct statvfs st {};
  ASSERT_EQ(::statvfs(mnt_.c_str(), &st), -1);
  EXPECT_EQ(errno, ENOTCONN);
  Mount();  // clears the stale mount and serves again
  EXPECT_EQ(Slurp(Layer(0) + "/etc/passwd"), "root:x:0:0");
  // A live mount is not stacked on.
  auto again = FuseMount::Mount(*store_, {.mountpoint = mnt_});
  ASSERT_ERRC(again, Errc::kBusy);
}

TEST_F(FuseMountTest, SigtermUnmountsCleanly) {
  const std::string log = (dir_.path() / "child3.log").string();
  ChildProcess child;
  StartChildMount(child, "store3", log);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(fs::exists(mnt_ + "/layers/sha256"));
  ::kill(child.pid(), SIGTERM);
  const int status = child.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Slurp(log);
  EXPECT_NE(Slurp(log).find("unmounted"), std::string::npos) << Slurp(log);
  auto mi = Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo");
  EXPECT_EQ(mi.output, "0\n");
  struct statvfs st {};
  EXPECT_EQ(::statvfs(mnt_.c_str(), &st), 0) << std::strerror(errno);  // not a dead mount
}

TEST_F(FuseMountTest, UnmountIsCleanAndLookupCountsDrain) {
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Slurp(Layer(0) + "/etc/passwd"), "root:x:0:0");
  ASSERT_OK(mount_->Unmount());
  auto mi = Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo");
  EXPECT_EQ(mi.output, "0\n");
  EXPECT_GT(mount_->stats().lookups.load(), 0u);
}


// Live restart in one process: the session goes from one FuseMount to the next (as from one
// digestd to its successor): the mount, the kernel's inode numbers and files open through it stay.
TEST_F(FuseMountTest, AHandedOverSessionKeepsTheMountItsNumbersAndOpenFiles) {
  const std::string held_path = Image() + "/rootfs/etc/passwd";
  const int held = ::open(held_path.c_str(), O_RDONLY | O_CLOEXEC);  // never inherited by Shell()
  ASSERT_GE(held, 0);
  struct stat before {};
  ASSERT_EQ(::stat((Layer(0) + "/bin/busybox").c_str(), &before), 0);
  auto fds = mount_->Export();
  ASSERT_TRUE(fds.has_value()) << fds.error().ToString();
  ASSERT_OK(mount_->Detach());
  // Nothing serves the mount until the successor adopts it: no request may be made here.
  auto next = FuseMount::Adopt(*store_, {.mountpoint = mnt_, .dynamic_timeout_s = 0}, std::move(*fds));
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_TRUE((*next)->adopted());
  EXPECT_TRUE((*next)->resend_supported());  // this kernel (6.18) has FUSE_NOTIFY_RESEND
  mount_.reset();  // the predecessor's session goes; the successor's copy keeps the connection
  mount_ = std::move(*next);

  char buf[64] = {};
  ASSERT_GT(::pread(held, buf, sizeof(buf), 0), 0);
  EXPECT_STREQ(buf, "root:x:0:0:replaced");
  EXPECT_EQ(Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo").output, "1\n");
  // Opened again while the first open (the predecessor's passthrough backing) is still open.
  EXPECT_EQ(Slurp(held_path), "root:x:0:0:replaced");
  ::close(held);
  EXPECT_EQ(Slurp(held_path), "root:x:0:0:replaced");
  struct stat after {};
  ASSERT_EQ(::stat((Layer(0) + "/bin/busybox").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(Listing(Layer(1)), Listing(Layer(1)));
  // A deny after the hand-over still takes the layer away.
  ASSERT_OK(store_->Deny(image_.layers[0], "test"));
  mount_->Invalidate(image_.layers[0]);
  EXPECT_FALSE(fs::exists(Layer(0) + "/etc/passwd"));
  ASSERT_OK(mount_->Unmount());
  EXPECT_EQ(Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo").output, "0\n");
}

TEST_F(FuseMountTest, ASessionIsOnlyAdoptedForItsOwnLiveMount) {
  auto fds = mount_->Export();
  ASSERT_TRUE(fds.has_value());
  // Another mount point: refused, nothing changes.
  auto other = FuseMount::Adopt(*store_, {.mountpoint = mnt_ + "-other"},
                                {UniqueFd(::dup(fds->fuse.Get())), UniqueFd(::dup(fds->state.Get()))});
  ASSERT_ERRC(other, Errc::kInvalidArgument);
  // A state that is not one: an ordinary file, a memfd of the wrong size.
  const std::string junk = (dir_.path() / "junk").string();
  std::ofstream(junk) << std::string(4096, 'x');
  auto bad = FuseMount::Adopt(*store_, {.mountpoint = mnt_},
                              {UniqueFd(::dup(fds->fuse.Get())), UniqueFd(::open(junk.c_str(), O_RDWR))});
  ASSERT_ERRC(bad, Errc::kCorrupt);
  EXPECT_EQ(Slurp(Layer(0) + "/etc/passwd"), "root:x:0:0");
  // Once unmounted, the session is not adopted: the caller mounts afresh.
  ASSERT_OK(mount_->Unmount());
  auto gone = FuseMount::Adopt(*store_, {.mountpoint = mnt_}, std::move(*fds));
  ASSERT_ERRC(gone, Errc::kNotFound);
}

// The service-manager path end to end: digestd-supervise keeps the session in its fd store while
// the serving process is killed at random moments (SIGKILL, the kernel resends what it had read)
// and restarted gracefully (SIGHUP: hand-over at a request boundary). A reader that opens, reads
// and stats files in a loop, and holds one file open, sees no error and no hang.
TEST_F(FuseMountTest, KilledAndRestartedUnderSupervisionNoReaderSeesAnError) {
  mount_.reset();
  store_.reset();
  const std::string log = (dir_.path() / "supervise.log").string();
  ChildProcess supervise;
  ASSERT_TRUE(supervise.Start({DIGESTD_SUPERVISE, "--restart-sec", "0.05", "--unmount", mnt_, "--",
                               DIGESTD_FUSE_CHILD, (dir_.path() / "store").string(), mnt_},
                              log));
  auto count = [&](const std::string& what) {
    const std::string text = Slurp(log);
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
    return n;
  };
  auto wait_ready = [&](std::size_t n) {
    for (int i = 0; i < 1500 && count("ready pid") < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return count("ready pid") >= n;
  };
  ASSERT_TRUE(wait_ready(1)) << Slurp(log);
  MountReader reader(DIGESTD_MOUNT_READER, mnt_, dir_.path().string());
  ASSERT_TRUE(reader.Start({Image() + "/rootfs/etc/passwd", Layer(0) + "/bin/busybox",
                            Layer(1) + "/opt/upper", Image() + "/rootfs/opt/upper",
                            Image() + "/lowerdir", Layer(0) + "/etc/hosts"}))
      << Slurp(reader.log());
  std::srand(static_cast<unsigned>(::getpid()));
  std::size_t readies = 1;
  auto current_pid = [&]() -> pid_t {
    const std::string text = Slurp(log);
    const auto pos = text.rfind("started pid ");
    return pos == std::string::npos ? -1 : std::atoi(text.c_str() + pos + 12);
  };
  for (int round = 0; round < 12; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + std::rand() % 150));
    if (round % 3 == 2) {
      ::kill(supervise.pid(), SIGHUP);  // graceful
    } else {
      const pid_t pid = current_pid();
      ASSERT_GT(pid, 0);
      ::kill(pid, SIGKILL);
    }
    ASSERT_TRUE(wait_ready(++readies)) << Slurp(log);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto outcome = reader.Finish(std::chrono::seconds(20));
  EXPECT_FALSE(outcome.hung) << outcome.log;
  EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) == 0) << outcome.log;
  EXPECT_NE(outcome.log.find(" errors=0 "), std::string::npos) << outcome.log;
  std::cout << outcome.log.substr(outcome.log.rfind("reader loops")) << std::flush;
  EXPECT_GE(count("ready adopted"), 12u) << Slurp(log);
  // Stopping the supervisor takes the mount away cleanly (no dead mount left behind).
  ::kill(supervise.pid(), SIGTERM);
  supervise.Wait();
  EXPECT_NE(Slurp(log).find("detached " + mnt_), std::string::npos) << Slurp(log);
  EXPECT_EQ(Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo").output, "0\n");
}

}  // namespace
}  // namespace digestd::fusefs
