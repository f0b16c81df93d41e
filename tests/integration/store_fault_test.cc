// Real faults under the running daemon, as a user meets them:
// - DiskFullTest: the store on a small loop-mounted ext4 that fills up mid-pull;
// - IoErrorTest: libfiu's fiu-run injecting EIO into the daemon's writes and syncs at random.
// In each: the failing pull says why, nothing of it is committed or left staged, reads through
// the mount go on, and once the fault is gone pulls work again and an offline fsck is clean.
// Both skip, saying why, where the host lacks the tool (loop devices, fiu-run).

#include <sys/mount.h>

#include <nlohmann/json.hpp>

#include "integration/daemon_fixture.h"

namespace digestd::daemon {
namespace {

bool StagingEmpty(const fs::path& store) { return fs::is_empty(store / "staging"); }

// ---------------------------------------------------------------------------------------------

class DiskFullTest : public DaemonTest {
 protected:
  void BeforeStart() override {
    image_ = (dir_.path() / "store.img").string();
    store_dir_ = (dir_.path() / "store").string();
    fs::create_directories(store_dir_);
    auto mk = Shell("truncate -s 256M " + image_ + " && mkfs.ext4 -q -F " + image_ + " 2>&1");
    ASSERT_EQ(mk.status, 0) << mk.output;
    auto mount = Shell("timeout -s KILL 30 mount -o loop " + image_ + " " + store_dir_ + " 2>&1");
    if (mount.status != 0) GTEST_SKIP() << "no loop device here (mount -o loop: " << mount.output << ")";
    mounted_ = true;
    ::chmod(store_dir_.c_str(), 0700);
    fs::remove_all(fs::path(store_dir_) / "lost+found");
  }
  void AfterStop() override {
    if (mounted_) (void)Shell("umount -l " + store_dir_);
  }
  std::uint64_t FreeBytes() {
    auto r = Shell("df -B1 --output=avail " + store_dir_ + " | tail -1");
    return std::stoull(r.output);
  }

  std::string image_, store_dir_;
  bool mounted_ = false;
};

TEST_F(DiskFullTest, APullThatFillsTheDiskFailsCleanlyAndPullsWorkOnceThereIsRoom) {
  PushSigned("full/small");
  auto small = Ctl("pull " + registry_->host() + "/full/small:v1");
  ASSERT_EQ(small.status, 0) << small.output;
  const std::string rootfs = Field(small.output, "rootfs");
  // A 40 MiB incompressible layer (stored twice: the blob and its unpacked file) into ~30 MiB.
  ASSERT_EQ(builder_.Busybox("big"), "");
  ASSERT_EQ(builder_.AddLayer("big", "head -c 41943040 /dev/urandom > big.bin"), "");
  ASSERT_EQ(builder_.Push("big", registry_->host() + "/full/big:v1"), "");
  Sign("full/big", DigestOf("full/big:v1"));
  const std::uint64_t leave = 30u << 20;
  const std::uint64_t free_now = FreeBytes();
  ASSERT_GT(free_now, leave);
  ASSERT_EQ(Shell("fallocate -l " + std::to_string(free_now - leave) + " " + store_dir_ +
                  "/filler")
                .status,
            0);
  const std::uint64_t free_before = FreeBytes();

  auto full = Ctl("pull " + registry_->host() + "/full/big:v1");
  EXPECT_NE(full.status, 0) << full.output;
  EXPECT_NE(full.output.find("No space left on device"), std::string::npos) << full.output;
  // Nothing of it committed or staged, its space given back, the other image still served.
  EXPECT_EQ(Ctl("images").output.find("full/big"), std::string::npos);
  EXPECT_TRUE(StagingEmpty(store_dir_));
  EXPECT_GE(FreeBytes() + (1u << 20), free_before);
  EXPECT_EQ(ReadThroughMount(rootfs + "/hello.txt"), "hello\n");
  auto health = Ctl("--json health");
  EXPECT_NE(health.output.find("\"status\":\"ok\""), std::string::npos) << health.output;

  // Room again: the same pull works.
  fs::remove(fs::path(store_dir_) / "filler");
  auto again = Ctl("pull " + registry_->host() + "/full/big:v1");
  ASSERT_EQ(again.status, 0) << again.output;
  auto size = Shell("timeout -s KILL 20 stat -c %s " + Field(again.output, "rootfs") + "/big.bin");
  EXPECT_EQ(size.output, "41943040\n");
  daemon_.Stop();
  auto fsck = Shell("timeout -s KILL 300 " + ctl_ + " fsck --root " + store_dir_ + " 2>&1");
  EXPECT_EQ(fsck.status, 0) << fsck.output;
}

// ---------------------------------------------------------------------------------------------

class IoErrorTest : public DaemonTest {
 protected:
  void BeforeStart() override {
    if (Shell("command -v fiu-run && command -v fiu-ctrl").status != 0) {
      GTEST_SKIP() << "fiu-run/fiu-ctrl not installed (Debian fiu-utils)";
    }
    daemon_prefix_ = {"fiu-run", "-x", "-f", (dir_.path() / "fiu").string()};
  }
  // Turns the random EIO on or off in the running daemon.
  void Faults(bool on, const std::string& probability = "0.1") {
    const std::string fifo = (dir_.path() / "fiu").string();
    // Not writev: that is how libfuse answers the kernel (/dev/fuse), and a lost answer leaves the
    // reader waiting for ever; the store's own writes go through write and pwrite.
    for (const char* point : {"posix/io/rw/write", "posix/io/rw/pwrite", "posix/io/sync/fsync",
                              "posix/io/sync/fdatasync", "posix/io/dir/rename",
                              "posix/io/dir/unlink"}) {
      const std::string cmd = on ? "enable_random name=" + std::string(point) +
                                       ",probability=" + probability + ",failinfo=5"
                                 : "disable name=" + std::string(point);
      auto r = Shell("timeout -s KILL 10 fiu-ctrl -f " + fifo + " -c '" + cmd + "' " +
                     std::to_string(daemon_.pid()) + " 2>&1");
      ASSERT_EQ(r.status, 0) << r.output;
    }
  }
};

TEST_F(IoErrorTest, RandomEioFailsPullsCleanlyAndTheDaemonRecovers) {
  constexpr int kImages = 12;
  ASSERT_EQ(builder_.Busybox("base"), "");
  for (int i = 0; i < kImages; ++i) {
    const std::string tag = "img" + std::to_string(i);
    ASSERT_EQ(Shell("umoci tag --image " + builder_.layout() + ":base " + tag).status, 0);
    ASSERT_EQ(builder_.AddLayer(tag, "echo eio" + std::to_string(i) +
                                         " > id && head -c 2000000 /dev/urandom > own"),
              "");
    ASSERT_EQ(builder_.Push(tag, registry_->host() + "/eio/app" + std::to_string(i) + ":v1"), "");
    Sign("eio/app" + std::to_string(i), DigestOf("eio/app" + std::to_string(i) + ":v1"));
  }
  auto ref = [&](int i) { return registry_->host() + "/eio/app" + std::to_string(i) + ":v1"; };
  // One image before the faults: it must stay readable throughout.
  auto first = Ctl("pull " + ref(0));
  ASSERT_EQ(first.status, 0) << first.output;
  const std::string rootfs0 = Field(first.output, "rootfs");

  Faults(true);
  int failed = 0, reads_failed = 0;
  for (int i = 1; i < kImages; ++i) {
    auto r = Ctl("pull " + ref(i));
    failed += r.status != 0;
    if (r.status != 0) {
      // A clear error, never a crash.
      EXPECT_TRUE(daemon_.Running()) << Slurp(log_);
    }
    reads_failed += ReadThroughMount(rootfs0 + "/id") != "eio0\n";
  }
  Faults(false);
  const std::string metrics = Ctl("metrics").output;
  const auto at = metrics.find("\ndigestd_store_index_write_failures_total ");
  const std::string index_failures =
      at == std::string::npos ? "?" : metrics.substr(at + 42, metrics.find('\n', at + 1) - at - 42);
  std::printf("io error test: %d of %d pulls failed under 10%% EIO, %d reads failed, %s index "
              "writes failed\n",
              failed, kImages - 1, reads_failed, index_failures.c_str());
  ASSERT_TRUE(daemon_.Running()) << Slurp(log_);
  EXPECT_EQ(reads_failed, 0);
  EXPECT_TRUE(StagingEmpty(dir_.path() / "store"));
  // Every image pulls (again) once the faults stop, and reads back through the mount.
  for (int i = 0; i < kImages; ++i) {
    auto r = Ctl("pull " + ref(i));
    ASSERT_EQ(r.status, 0) << r.output << Slurp(log_);
    EXPECT_EQ(ReadThroughMount(Field(r.output, "rootfs") + "/id"), "eio" + std::to_string(i) + "\n");
  }
  auto health = Ctl("--json health");
  EXPECT_NE(health.output.find("\"status\":\"ok\""), std::string::npos) << health.output;
  daemon_.Stop();
  auto fsck = Shell("timeout -s KILL 300 " + ctl_ + " fsck --root " +
                    (dir_.path() / "store").string() + " 2>&1");
  EXPECT_EQ(fsck.status, 0) << fsck.output;
}

}  // namespace
}  // namespace digestd::daemon
