// Live restart of the whole daemon (issue #18): digestd runs under digestd-supervise (the same
// fd-store and socket protocol as systemd's), a reader loops over an image's files through the
// mount, a runc container whose rootfs is overlayfs over the mount's layers reads every file of
// its image in a loop, and the daemon is killed at random moments (SIGKILL: the supervisor restarts it and the
// kernel resends what the dead process had read), restarted gracefully (SIGHUP: hand-over at a
// request boundary) and upgraded to a different build (digestd-next). The reader must see no
// error and no hang; a digest denied before a kill stays unreadable through the adopted mount;
// a client of the control socket during the restart is queued, not refused.
//
// Every command is bounded; a reader stuck in the kernel is ended by aborting the FUSE connection.

#include <signal.h>

#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "integration/daemon_fixture.h"
#include "testing/mount_reader.h"

namespace digestd::daemon {
namespace {

using digestd::testing::MountReader;

class LiveRestartTest : public DaemonTest {
 protected:
  void BeforeStart() override {
    // The supervisor runs whatever this link points at: the upgrade swaps it.
    binary_ = (dir_.path() / "digestd-current").string();
    fs::create_symlink(DIGESTD_BIN, binary_);
    daemon_prefix_ = {DIGESTD_SUPERVISE, "--restart-sec", "0.1", "--unmount", mnt_,
                      "--socket", "control=" + socket_, "--"};
    daemon_bin_ = binary_;
  }
  std::size_t Count(const std::string& what) {
    const std::string text = Slurp(log_);
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
    return n;
  }
  bool WaitReady(std::size_t n) {
    for (int i = 0; i < 3000 && Count("supervise: ready pid") < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return Count("supervise: ready pid") >= n;
  }
  pid_t DaemonPid() {
    const std::string text = Slurp(log_);
    const auto pos = text.rfind("started pid ");
    return pos == std::string::npos ? -1 : std::atoi(text.c_str() + pos + 12);
  }

  std::string binary_;
};

TEST_F(LiveRestartTest, KillsHandoversAndAnUpgradeLoseNoRead) {
  ASSERT_TRUE(WaitReady(1)) << Slurp(log_);  // the fixture started it under the supervisor
  const std::string digest = PushSigned("live/app");
  auto pulled = Ctl("pull " + registry_->host() + "/live/app:v1");
  ASSERT_EQ(pulled.status, 0) << pulled.output;
  const std::string image = mnt_ + "/images/sha256/" + digest.substr(7);
  auto lower = Slurp(image + "/lowerdir");
  const std::string top_layer = lower.substr(0, lower.find(':'));
  MountReader reader(DIGESTD_MOUNT_READER, mnt_, dir_.path().string());
  ASSERT_TRUE(reader.Start({image + "/rootfs/bin/busybox", image + "/rootfs/hello.txt",
                            image + "/lowerdir", top_layer + "/hello.txt"}))
      << Slurp(reader.log());

  // The container: overlayfs over the image's layer views (as containerd's snapshotter stacks
  // them), run by runc, in a private mount namespace (its mounts go with it). It reads every
  // file of its image in a loop and records failures and loops in /x (a host directory).
  const std::string t = (dir_.path() / "ctr").string();
  const std::string id = "digestd-live-" + std::to_string(::getpid());
  fs::create_directories(t + "/x");
  const std::string loop =
      "cd /; n=0; while [ ! -e /x/stop ]; do "
      "for f in $(/bin/busybox find / -xdev -type f); do "
      "/bin/busybox cat $f > /dev/null || echo \"ERR $f\" >> /x/errors; done; "
      "n=$((n+1)); echo $n > /x/loops; done; echo done > /x/done";
  std::ofstream(t + "/run.sh")
      << "set -e; T=" << t << "; mkdir -p $T/u $T/w $T/b/rootfs\n"
      << "mount -t tmpfs tmpfs $T/u && mkdir $T/u/u $T/u/w\n"
      << "mount -t overlay overlay -o lowerdir=" << lower << ",upperdir=$T/u/u,workdir=$T/u/w $T/b/rootfs\n"
      << "cd $T/b && runc spec\n"
      << "jq --arg x $T/x '.process.args=[\"/bin/busybox\",\"sh\",\"-c\"," << nlohmann::json(loop).dump()
      << "] | .process.terminal=false | .mounts += [{\"destination\":\"/x\",\"type\":\"bind\","
         "\"source\":$x,\"options\":[\"rbind\",\"rw\"]}]' config.json > c.json && mv c.json config.json\n"
      << "exec runc --root $T/runc run --bundle $T/b " << id << " </dev/null\n";
  testing::ChildProcess container;
  ASSERT_TRUE(container.Start({"unshare", "-m", "--propagation", "private", "sh", t + "/run.sh"},
                              t + "/run.log"));
  for (int i = 0; i < 1000 && !fs::exists(t + "/x/loops"); ++i) {
    ASSERT_TRUE(container.Running()) << Slurp(t + "/run.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(fs::exists(t + "/x/loops")) << Slurp(t + "/run.log");

  std::mt19937 rng(20261207);
  std::size_t readies = 1;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 250));
    if (round == 12) {
      // Upgrade: another build of the binary, handed the mount gracefully.
      fs::remove(binary_);
      fs::create_symlink(DIGESTD_NEXT_BIN, binary_);
      ::kill(daemon_.pid(), SIGHUP);
    } else if (round % 4 == 3) {
      ::kill(daemon_.pid(), SIGHUP);  // graceful restart
    } else {
      const pid_t pid = DaemonPid();
      ASSERT_GT(pid, 0);
      ::kill(pid, SIGKILL);
      // A client arriving while no daemon runs is queued on the supervisor's socket.
      auto listed = Ctl("images");
      EXPECT_EQ(listed.status, 0) << listed.output;
    }
    ASSERT_TRUE(WaitReady(++readies)) << Slurp(log_);
  }
  EXPECT_NE(Slurp(log_).find("ready: build=next"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto outcome = reader.Finish(std::chrono::seconds(30));
  EXPECT_FALSE(outcome.hung) << outcome.log;
  EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) == 0) << outcome.log;
  EXPECT_NE(outcome.log.find(" errors=0 "), std::string::npos) << outcome.log;
  if (outcome.log.find("reader loops") != std::string::npos) {
    std::cout << outcome.log.substr(outcome.log.rfind("reader loops")) << std::flush;
  }
  EXPECT_EQ(Count("(mounted)"), 1u) << "every restart after the first adopts the mount";
  // The container: done, every file read in every loop.
  std::ofstream(t + "/x/stop") << "stop";
  for (int i = 0; i < 1500 && !fs::exists(t + "/x/done"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!fs::exists(t + "/x/done")) {
    ADD_FAILURE() << "the container's reader hung: aborting the FUSE connection";
    digestd::testing::AbortFuseConnection(mnt_);
  }
  container.Wait();
  EXPECT_FALSE(fs::exists(t + "/x/errors")) << Slurp(t + "/x/errors");
  std::cout << "container loops=" << Slurp(t + "/x/loops") << std::flush;
  EXPECT_GT(std::atoi(Slurp(t + "/x/loops").c_str()), 20);

  // A deny of the image's top layer made just before a crash holds through the adopted mount:
  // the layer and every image using it are unreadable, whatever the kernel had cached.
  ASSERT_EQ(ReadThroughMount(image + "/rootfs/hello.txt"), "hello\n");
  ASSERT_EQ(ReadThroughMount(top_layer + "/hello.txt"), "hello\n");
  const std::string layer_digest = "sha256:" + top_layer.substr(top_layer.rfind('/') + 1);
  auto denied = Ctl("deny add " + layer_digest + " --reason live-restart-test");
  ASSERT_EQ(denied.status, 0) << denied.output;
  ::kill(DaemonPid(), SIGKILL);
  ASSERT_TRUE(WaitReady(++readies)) << Slurp(log_);
  EXPECT_NE(ReadThroughMount(image + "/rootfs/hello.txt"), "hello\n");
  EXPECT_NE(ReadThroughMount(top_layer + "/hello.txt"), "hello\n");
  EXPECT_FALSE(fs::exists(image + "/rootfs/hello.txt"));

  // Stopping the supervisor takes the mount away; nothing is left mounted.
  ::kill(daemon_.pid(), SIGTERM);
  daemon_.Wait();
  EXPECT_EQ(Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo").output, "0\n");
}

}  // namespace
}  // namespace digestd::daemon
