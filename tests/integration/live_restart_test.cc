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

#include <algorithm>
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
    Supervise();
    daemon_bin_ = binary_;
  }

  // Pushes `repo`:v1 signed, pulls it, and starts `reader` over its files (in the image's
  // rootfs, its lowerdir file, its top layer's view); sets image_, lower_ and top_layer_.
  void PullAndRead(const std::string& repo, MountReader& reader) {
    const std::string digest = PushSigned(repo);
    auto pulled = Ctl("pull " + registry_->host() + "/" + repo + ":v1");
    ASSERT_EQ(pulled.status, 0) << pulled.output;
    image_ = mnt_ + "/images/sha256/" + digest.substr(7);
    lower_ = Slurp(image_ + "/lowerdir");
    top_layer_ = lower_.substr(0, lower_.find(':'));
    ASSERT_TRUE(reader.Start({image_ + "/rootfs/bin/busybox", image_ + "/rootfs/hello.txt",
                              image_ + "/lowerdir", top_layer_ + "/hello.txt"}))
        << Slurp(reader.log());
  }

  std::string binary_;
  std::string image_, lower_, top_layer_;
};

TEST_F(LiveRestartTest, KillsHandoversAndAnUpgradeLoseNoRead) {
  ASSERT_TRUE(WaitSupervisedReady(1)) << Slurp(log_);  // the fixture started it under the supervisor
  MountReader reader(DIGESTD_MOUNT_READER, mnt_, dir_.path().string());
  ASSERT_NO_FATAL_FAILURE(PullAndRead("live/app", reader));
  const std::string image = image_, lower = lower_, top_layer = top_layer_;

  // The container: overlayfs over the image's layer views (as containerd's snapshotter stacks
  // them), run by runc, in a private mount namespace (its mounts go with it). It reads every
  // file of its image in a loop and records failures and loops in /x (a host directory).
  const std::string t = (dir_.path() / "ctr").string();
  const std::string id = "digestd-live-" + std::to_string(::getpid());
  fs::create_directories(t + "/x");
  std::ofstream(t + "/run.sh")
      << "set -e; T=" << t << "; mkdir -p $T/u $T/w $T/b/rootfs\n"
      << "mount -t tmpfs tmpfs $T/u && mkdir $T/u/u $T/u/w\n"
      << "mount -t overlay overlay -o lowerdir=" << lower << ",upperdir=$T/u/u,workdir=$T/u/w $T/b/rootfs\n"
      << "cd $T/b && runc spec\n"
      << "jq --arg x $T/x '.process.args=[\"/bin/busybox\",\"sh\",\"-c\"," << nlohmann::json(kContainerReadLoop).dump()
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
      const pid_t pid = SupervisedPid();
      ASSERT_GT(pid, 0);
      ::kill(pid, SIGKILL);
      // A client arriving while no daemon runs is queued on the supervisor's socket.
      auto listed = Ctl("images");
      EXPECT_EQ(listed.status, 0) << listed.output;
    }
    ASSERT_TRUE(WaitSupervisedReady(++readies)) << Slurp(log_);
  }
  EXPECT_NE(Slurp(log_).find("ready: build=next"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ExpectReaderSawNoError(reader);
  EXPECT_EQ(CountInLog("(mounted)"), 1u) << "every restart after the first adopts the mount";
  // The container: done, every file read in every loop.
  const int loops = StopContainerReadLoop(t + "/x");
  container.Wait();
  EXPECT_GT(loops, 20);

  // A deny of the image's top layer made just before a crash holds through the adopted mount:
  // the layer and every image using it are unreadable, whatever the kernel had cached.
  ASSERT_EQ(ReadThroughMount(image + "/rootfs/hello.txt"), "hello\n");
  ASSERT_EQ(ReadThroughMount(top_layer + "/hello.txt"), "hello\n");
  const std::string layer_digest = "sha256:" + top_layer.substr(top_layer.rfind('/') + 1);
  auto denied = Ctl("deny add " + layer_digest + " --reason live-restart-test");
  ASSERT_EQ(denied.status, 0) << denied.output;
  ::kill(SupervisedPid(), SIGKILL);
  ASSERT_TRUE(WaitSupervisedReady(++readies)) << Slurp(log_);
  EXPECT_NE(ReadThroughMount(image + "/rootfs/hello.txt"), "hello\n");
  EXPECT_NE(ReadThroughMount(top_layer + "/hello.txt"), "hello\n");
  EXPECT_FALSE(fs::exists(image + "/rootfs/hello.txt"));

  // Stopping the supervisor takes the mount away; nothing is left mounted.
  ::kill(daemon_.pid(), SIGTERM);
  daemon_.Wait();
  EXPECT_EQ(Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo").output, "0\n");
}

// A pull in flight when digestd dies fails retryably (exit 75, "cut short") and leaves nothing:
// no clean stop is recorded, the next start recovers in full, staging is empty, and the same
// pull then succeeds.
TEST_F(LiveRestartTest, APullCutByARestartFailsRetryablyAndLeavesNothing) {
  ASSERT_TRUE(WaitSupervisedReady(1)) << Slurp(log_);
  const std::string tag = "big";
  ASSERT_EQ(builder_.Busybox(tag), "");
  ASSERT_EQ(builder_.AddLayer(tag, "head -c 64000000 /dev/urandom > big"), "");
  const std::string ref = registry_->host() + "/live/big:v1";
  ASSERT_EQ(builder_.Push(tag, ref), "");
  Sign("live/big", DigestOf("live/big:v1"));
  const std::string out = (dir_.path() / "pull.out").string();
  testing::ChildProcess pull;
  ASSERT_TRUE(pull.Start({ctl_, "--socket", socket_, "--json", "pull", ref}, out));
  // Polls (never times): the kill lands once a blob is under way.
  for (int i = 0; i < 6000 && Slurp(out).find("\"type\":\"blob\"") == std::string::npos; ++i) {
    ASSERT_TRUE(pull.Running()) << Slurp(out);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(SupervisedPid(), SIGKILL);
  const int status = pull.Wait();
  ASSERT_EQ(Slurp(out).find("\"type\":\"result\""), std::string::npos)
      << "the pull finished before the kill (make its layer bigger)\n" << Slurp(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 75) << Slurp(out);
  EXPECT_NE(Slurp(out).find("cut short"), std::string::npos) << Slurp(out);
  ASSERT_TRUE(WaitSupervisedReady(2)) << Slurp(log_);
  EXPECT_NE(Slurp(log_).find("recovery=full"), std::string::npos) << Slurp(log_);
  std::size_t staged = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_.path() / "store" / "staging")) ++staged;
  EXPECT_EQ(staged, 0u);
  auto again = Ctl("pull " + ref);
  EXPECT_EQ(again.status, 0) << again.output;
}

// The hand-over to a waiting successor (SIGUSR2, passed on by the supervisor as systemd's `kill
// -s USR2 --kill-who=main` would): digestd starts the next process itself, which loads while the
// old one serves, opens the store the old one released while it still serves, serves the mount
// alongside it and then retires it. Five hand-overs, one of them an upgrade to another build,
// one whose predecessor is SIGKILLed right after it made the successor the service, and one
// whose predecessor is SIGKILLed while it serves the mount alone on a released store (its
// successor held stopped): a reader of the mount sees no error, the mount is adopted every
// time, and the control socket answers throughout.
TEST_F(LiveRestartTest, HandOversToAWaitingSuccessorLoseNoRead) {
  ASSERT_TRUE(WaitSupervisedReady(1)) << Slurp(log_);
  MountReader reader(DIGESTD_MOUNT_READER, mnt_, dir_.path().string());
  ASSERT_NO_FATAL_FAILURE(PullAndRead("live/handover", reader));
  const std::string image = image_;
  std::size_t readies = 1;
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const pid_t before = SupervisedPid();
    ASSERT_GT(before, 0);
    if (round == 2) {
      fs::remove(binary_);
      fs::create_symlink(DIGESTD_NEXT_BIN, binary_);  // the successor runs the new build
    }
    const std::size_t released = CountInLog("serving until it takes the mount");
    const std::size_t standing = CountInLog("hand-over: standing by");
    ::kill(daemon_.pid(), SIGUSR2);
    if (round == 4) {
      // The successor stopped as soon as it stands by; the predecessor releases the store and
      // serves alone, and is killed: requests it read die with it, and those after it wait.
      // Then the successor goes on: it adopts, sees its predecessor gone instead of detached, and
      // has the kernel resend what the dead one left unanswered.
      for (int i = 0; i < 6000 && CountInLog("hand-over: standing by") <= standing; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      const std::string text = Slurp(log_);
      const auto at = text.rfind("started successor pid ");
      ASSERT_NE(at, std::string::npos) << text;
      const pid_t next = std::atoi(text.c_str() + at + 22);
      ::kill(next, SIGSTOP);
      for (int i = 0; i < 6000 && CountInLog("serving until it takes the mount") <= released; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // it serves alone
      ::kill(before, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nobody serves
      ::kill(next, SIGCONT);
    }
    if (round == 3) {
      // Killed right after it made the successor the service: the successor still takes over
      // (it waits for the predecessor's exit), and the kernel resends what was left unanswered.
      for (int i = 0; i < 3000 && CountInLog("is the service now;") < 4; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ::kill(before, SIGKILL);
    }
    ASSERT_TRUE(WaitSupervisedReady(++readies)) << Slurp(log_);
    EXPECT_NE(SupervisedPid(), before);
    auto listed = Ctl("images");
    EXPECT_EQ(listed.status, 0) << listed.output;
  }
  EXPECT_NE(Slurp(log_).find("ready: build=next"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ExpectReaderSawNoError(reader);
  EXPECT_EQ(CountInLog("(mounted)"), 1u) << "every hand-over adopts the mount";
  EXPECT_EQ(CountInLog("adopted the mount"), 5u) << Slurp(log_);
  EXPECT_EQ(CountInLog("supervise: main pid "), 5u) << Slurp(log_);
  EXPECT_GE(CountInLog("has exited; taking over"), 1u) << "the killed predecessor's successor";
  // The predecessor killed right after "go" (most likely before it recorded a clean stop)
  // released nothing; the others released the store and served on until retired.
  EXPECT_GE(CountInLog("released the store and serves until we do"), 4u) << Slurp(log_);
  EXPECT_GE(CountInLog("detached; serving alone"), 3u) << Slurp(log_);
  EXPECT_EQ(CountInLog("exited without detaching"), 1u) << "the one killed while serving alone\n"
                                                         << Slurp(log_);
  EXPECT_LE(CountInLog("recovery=full"), 2u) << "only the first start and the killed one recover in full";
  EXPECT_EQ(ReadThroughMount(image + "/rootfs/hello.txt"), "hello\n");
  // No process is left behind: the supervisor's service and nothing else.
  EXPECT_EQ(Shell("pgrep -c -f '^" + binary_ + " '").output, "1\n") << Slurp(log_);
}

// A successor that fails before it stands by changes nothing: the running digestd keeps serving
// (audited), and one that is stuck standing by is killed when the service stops. A local user
// cannot ask for a hand-over at all.
TEST_F(LiveRestartTest, AFailedSuccessorLeavesTheServiceServing) {
  ASSERT_TRUE(WaitSupervisedReady(1)) << Slurp(log_);
  const pid_t pid = SupervisedPid();
  ASSERT_GT(pid, 0);
  auto as_user = Shell("setpriv --reuid=65534 --regid=65534 --clear-groups kill -USR2 " +
                       std::to_string(pid) + " 2>&1");
  EXPECT_NE(as_user.status, 0) << as_user.output;

  // A binary that exits at once.
  fs::remove(binary_);
  fs::create_symlink("/bin/false", binary_);
  ::kill(daemon_.pid(), SIGUSR2);
  for (int i = 0; i < 3000 && CountInLog("failed, still serving") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(CountInLog("failed, still serving: it exited before standing by"), 1u) << Slurp(log_);
  EXPECT_EQ(SupervisedPid(), pid);
  EXPECT_TRUE(fs::exists(mnt_ + "/images"));
  auto audit = Ctl("audit");
  EXPECT_NE(audit.output.find("daemon.handover_failed"), std::string::npos) << audit.output;

  // One that never stands by: the service stops with it still waiting; it goes too.
  const std::string stuck = (dir_.path() / "stuck.sh").string();
  const std::string stuck_pid = (dir_.path() / "stuck.pid").string();
  std::ofstream(stuck) << "#!/bin/sh\necho $$ > " << stuck_pid << "\nexec sleep 600\n";
  fs::permissions(stuck, fs::perms::owner_all);
  fs::remove(binary_);
  fs::create_symlink(stuck, binary_);
  ::kill(daemon_.pid(), SIGUSR2);
  for (int i = 0; i < 3000 && !fs::exists(stuck_pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(fs::exists(stuck_pid)) << Slurp(log_);
  const pid_t waiting = std::atoi(Slurp(stuck_pid).c_str());
  ASSERT_GT(waiting, 0);
  ::kill(daemon_.pid(), SIGUSR2);  // a second request while one is under way changes nothing
  for (int i = 0; i < 3000 && CountInLog("already under way") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(CountInLog("already under way"), 1u) << Slurp(log_);
  ::kill(daemon_.pid(), SIGTERM);
  daemon_.Wait();
  EXPECT_NE(::kill(waiting, 0), 0) << "the waiting successor outlived the service";
  EXPECT_EQ(Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo").output, "0\n");
}

// The supervisor's notify socket is the service manager's door: whoever could store fds under
// "fuse" would have the next digestd adopt their session. A local user cannot reach it (a 0700
// directory), and even root's other processes are ignored (the sender must be the service, by
// SCM_CREDENTIALS): after a forged FDSTORE, a kill still adopts the real session.
TEST_F(LiveRestartTest, OnlyTheServiceCanStoreASession) {
  ASSERT_TRUE(WaitSupervisedReady(1)) << Slurp(log_);
  const pid_t pid = SupervisedPid();
  ASSERT_GT(pid, 0);
  std::string environ = Slurp("/proc/" + std::to_string(pid) + "/environ");
  std::replace(environ.begin(), environ.end(), '\0', '\n');
  const auto at = environ.find("NOTIFY_SOCKET=");
  ASSERT_NE(at, std::string::npos) << environ;
  const std::string notify = environ.substr(at + 14, environ.find('\n', at) - at - 14);
  ASSERT_FALSE(notify.empty());
  ASSERT_NE(notify[0], '@') << "an abstract socket has no permissions to keep users out";
  const std::string forge = (dir_.path() / "forge.py").string();
  std::ofstream(forge)
      << "import array, os, socket, sys\n"
         "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
         "fd = os.open('/dev/null', os.O_RDONLY)\n"
         "try:\n"
         "    s.sendmsg([b'FDSTORE=1\\nFDNAME=fuse\\nREADY=1\\n'], [(socket.SOL_SOCKET, "
         "socket.SCM_RIGHTS, array.array('i', [fd]))], 0, sys.argv[1])\n"
         "    print('sent')\n"
         "except OSError as e:\n"
         "    print('refused', e.errno)\n";
  auto as_user = Shell("setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 " + forge + " " +
                       notify + " 2>&1");
  EXPECT_NE(as_user.output.find("refused"), std::string::npos) << as_user.output;
  auto as_root = Shell("/usr/bin/python3 " + forge + " " + notify + " 2>&1");
  ASSERT_NE(as_root.output.find("sent"), std::string::npos) << as_root.output;
  for (int i = 0; i < 500 && CountInLog("ignored a notification") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(CountInLog("ignored a notification"), 1u) << Slurp(log_);
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(WaitSupervisedReady(2)) << Slurp(log_);
  EXPECT_EQ(CountInLog("adopted the mount"), 1u) << Slurp(log_);
  EXPECT_EQ(CountInLog("(mounted)"), 1u) << Slurp(log_);
  auto listed = Ctl("images");
  EXPECT_EQ(listed.status, 0) << listed.output;
}

}  // namespace
}  // namespace digestd::daemon
