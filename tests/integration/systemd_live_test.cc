// Live restart under a real systemd (issue #18, 6c). systemd-nspawn boots this machine's own
// root (an overlay of `/` on a tmpfs: systemd 252 from Debian bookworm as PID 1, nothing written
// to the host) into a target that starts only digestd.socket and digestd.service, the units the
// project ships with ExecStart and the socket path pointed at the test's build and directory. A
// reader inside the container loops over an image's files through the mount while the test runs
// `systemctl restart digestd`, an upgrade (another build behind ExecStart, then restart) and
// a hand-over to a waiting successor (`systemctl kill -s USR2 --kill-whom=main digestd`: systemd
// must take the successor as the main process) and `systemctl kill -s KILL digestd`
// (Restart=always): no error, no hang, and every start after the first adopts the mount from
// systemd's fd store (or, for the hand-over, from its predecessor). Then what systemd 252 does on stop: it releases
// the fd store, so `stop` + `start` mounts afresh (docs/operations.md says so).
//
// Every command is bounded; a reader stuck in the kernel is ended by aborting the FUSE connection.

#include <signal.h>
#include <sys/mount.h>

#include <cstring>
#include <iostream>

#include "integration/daemon_fixture.h"
#include "testing/mount_reader.h"

namespace digestd::daemon {
namespace {

using digestd::testing::MountReader;

class SystemdLiveRestartTest : public DaemonTest {
 protected:
  void BeforeStart() override {
    if (Shell("command -v systemd-nspawn").status != 0) {
      GTEST_FAIL() << "systemd-nspawn is missing (package systemd-container, scripts/install-deps.sh)";
    }
    // The container's root: this machine's, as an overlay whose writes go to a tmpfs (the
    // upper layer must not be on the lower's file system). Outside dir_, so that nothing ever
    // walks into it to delete.
    char tmpl[] = "/tmp/digestd-nspawn-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    area_ = tmpl;
    ASSERT_EQ(::mount("tmpfs", area_.c_str(), "tmpfs", 0, "mode=0755"), 0) << std::strerror(errno);
    for (const char* d : {"/upper", "/work", "/root"}) fs::create_directory(area_ + d);
    root_ = area_ + "/root";
    const std::string opts = "lowerdir=/,upperdir=" + area_ + "/upper,workdir=" + area_ + "/work";
    ASSERT_EQ(::mount("overlay", root_.c_str(), "overlay", 0, opts.c_str()), 0) << std::strerror(errno);

    // The shipped units, pointed at this test's binary (a link the upgrade swaps), config,
    // socket and log.
    binary_ = (dir_.path() / "digestd-current").string();
    fs::create_symlink(DIGESTD_BIN, binary_);
    const std::string units = root_ + "/etc/systemd/system";
    fs::create_directories(units);
    std::string service = Slurp(std::string(DIGESTD_SYSTEMD_DIR) + "/digestd.service");
    const auto exec = service.find("ExecStart=");
    ASSERT_NE(exec, std::string::npos);
    service.replace(exec, service.find('\n', exec) - exec,
                    "ExecStart=" + binary_ + " --config " + (dir_.path() / "digestd.toml").string() +
                        "\nStandardOutput=append:" + (dir_.path() / "unit.log").string() +
                        "\nStandardError=append:" + (dir_.path() / "unit.log").string());
    std::ofstream(units + "/digestd.service") << service;
    std::string socket = Slurp(std::string(DIGESTD_SYSTEMD_DIR) + "/digestd.socket");
    const auto listen = socket.find("ListenStream=");
    ASSERT_NE(listen, std::string::npos);
    socket.replace(listen, socket.find('\n', listen) - listen, "ListenStream=" + socket_);
    std::ofstream(units + "/digestd.socket") << socket;
    std::ofstream(units + "/digestd-test.target")
        << "[Unit]\nDescription=digestd test boot\nRequires=sysinit.target digestd.socket "
           "digestd.service\nAfter=sysinit.target digestd.socket\n";

    // The fixture starts "the daemon" as its command and waits for the socket to answer: here
    // that is the container's boot.
    const std::string boot = (dir_.path() / "boot.sh").string();
    std::ofstream(boot) << "#!/bin/sh\nexec systemd-nspawn -q -D " << root_
                        << " --boot --register=no --keep-unit --bind=/dev/fuse --bind="
                        << dir_.path().string() << " -- --unit=digestd-test.target\n";
    ::chmod(boot.c_str(), 0755);
    daemon_bin_ = boot;
  }

  void AfterStop() override {
    // The fixture stopped nspawn (SIGTERM: the container shuts down; SIGKILL after 5 s leaves
    // its init running): an init still there ends with its whole PID namespace.
    if (const pid_t init = Init(); init > 0) {
      ::kill(init, SIGKILL);
      for (int i = 0; i < 500 && ::kill(init, 0) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (!root_.empty()) (void)::umount2(root_.c_str(), MNT_DETACH);
    if (!area_.empty()) {
      (void)::umount2(area_.c_str(), MNT_DETACH);
      (void)::rmdir(area_.c_str());
    }
  }

  // The container's init (its PID 1): the process named systemd below nspawn, or -1.
  pid_t Init() {
    if (daemon_.pid() <= 0) return -1;
    auto r = Shell("for p in $(pgrep -x systemd); do a=$p; while [ \"$a\" -gt 1 ]; do "
                   "[ \"$a\" = " + std::to_string(daemon_.pid()) + " ] && { echo $p; exit 0; }; "
                   "a=$(awk '{print $4}' /proc/$a/stat 2>/dev/null || echo 1); done; done");
    return r.output.empty() ? -1 : std::atoi(r.output.c_str());
  }

  // Runs `command` in the container (all its namespaces and its root directory: nspawn run in a
  // chroot, as on the fresh-machine check, cannot pivot the namespace's root, so entering the
  // mount namespace alone lands at the host's root), bounded.
  digestd::testing::CommandResult InContainer(const std::string& command) {
    return Shell("timeout 60 nsenter -t " + std::to_string(init_) + " -a -r " + command + " 2>&1");
  }

  // Polls (never times) until the log says `what` `n` times; false after 60 s.
  bool WaitFor(const std::string& what, std::size_t n) {
    for (int i = 0; i < 6000 && CountInLog(what) < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return CountInLog(what) >= n;
  }

  std::string area_, root_, binary_;
  pid_t init_ = -1;
};

TEST_F(SystemdLiveRestartTest, RestartUpgradeAndKillUnderSystemdLoseNoRead) {
  const std::string boot_log = log_;
  init_ = Init();
  ASSERT_GT(init_, 0) << Slurp(boot_log);
  log_ = (dir_.path() / "unit.log").string();  // digestd's own, appended to by systemd
  auto version = InContainer("systemctl --version");
  std::cout << "container: " << version.output.substr(0, version.output.find('\n')) << std::endl;
  ASSERT_TRUE(WaitFor("ready: build=", 1)) << Slurp(log_);
  EXPECT_EQ(CountInLog("(mounted)"), 1u) << Slurp(log_);

  const std::string digest = PushSigned("live/systemd");
  auto pulled = Ctl("pull " + registry_->host() + "/live/systemd:v1");
  ASSERT_EQ(pulled.status, 0) << pulled.output;
  const std::string image = mnt_ + "/images/sha256/" + digest.substr(7);
  auto lower = InContainer("cat " + image + "/lowerdir");
  ASSERT_EQ(lower.status, 0) << lower.output << InContainer("grep fuse /proc/self/mountinfo").output
                             << Slurp(log_);
  const std::string top_layer = lower.output.substr(0, lower.output.find(':'));

  // The reader runs in the container's mount namespace, where the mount is.
  const std::string in_ctr = (dir_.path() / "in-container.sh").string();
  std::ofstream(in_ctr) << "#!/bin/sh\nexec nsenter -t " << init_ << " -m -r -- " << DIGESTD_MOUNT_READER
                        << " \"$@\"\n";
  ::chmod(in_ctr.c_str(), 0755);
  MountReader reader(in_ctr, mnt_, dir_.path().string(),
                     "/proc/" + std::to_string(init_) + "/mountinfo");
  ASSERT_TRUE(reader.Start({image + "/rootfs/bin/busybox", image + "/rootfs/hello.txt",
                            image + "/lowerdir", top_layer + "/hello.txt"}))
      << Slurp(reader.log());

  struct Step {
    const char* what;
    std::string command;
    bool upgrade;
  };
  const std::vector<Step> steps = {
      {"systemctl restart", "systemctl restart digestd", false},
      {"upgrade", "systemctl restart digestd", true},
      // The hand-over to a waiting successor: digestd starts it and makes it the main process.
      {"hand-over", "systemctl kill -s USR2 --kill-whom=main digestd", false},
      {"systemctl kill -s KILL", "systemctl kill -s KILL digestd", false},
      {"systemctl restart after the kill", "systemctl restart digestd", false},
  };
  std::size_t adopted = 0;
  for (const auto& step : steps) {
    SCOPED_TRACE(step.what);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (step.upgrade) {
      fs::remove(binary_);
      fs::create_symlink(DIGESTD_NEXT_BIN, binary_);
    }
    auto r = InContainer(step.command);
    EXPECT_EQ(r.status, 0) << r.output;
    ASSERT_TRUE(WaitFor("adopted the mount", ++adopted)) << Slurp(log_);
    ASSERT_TRUE(WaitFor("ready: build=", adopted + 1)) << Slurp(log_);
    auto listed = Ctl("images");  // through digestd.socket
    EXPECT_EQ(listed.status, 0) << listed.output;
    if (step.command.find("USR2") != std::string::npos) {
      // systemd took the successor as the service's main process (MAINPID=) and restarted nothing.
      const std::string text = Slurp(log_);
      const auto at = text.rfind("started successor pid ");
      ASSERT_NE(at, std::string::npos) << text;
      const std::string successor = std::to_string(std::atoi(text.c_str() + at + 22));
      auto main_pid = InContainer("systemctl show -p MainPID --value digestd");
      EXPECT_EQ(main_pid.output, successor + "\n") << text;
      auto restarts = InContainer("systemctl show -p NRestarts --value digestd");
      EXPECT_EQ(restarts.output, "0\n") << restarts.output;
      // The store went over while the old process served, and it stopped once retired.
      EXPECT_EQ(CountInLog("released the store and serves until we do"), 1u) << text;
      EXPECT_EQ(CountInLog("detached; serving alone"), 1u) << text;
    }
  }
  EXPECT_NE(Slurp(log_).find("ready: build=next"), std::string::npos) << Slurp(log_);
  EXPECT_EQ(CountInLog("(mounted)"), 1u) << "every start after the first adopts the mount\n"
                                    << Slurp(log_);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ExpectReaderSawNoError(reader);

  // systemd 252 releases a unit's fd store when it stops: `stop` then `start` is a new mount.
  auto stopped = InContainer("systemctl stop digestd");
  EXPECT_EQ(stopped.status, 0) << stopped.output;
  // Six starts in a few seconds: past systemd's default start limit (5 in 10 s), which would
  // refuse this one (docs/operations.md).
  (void)InContainer("systemctl reset-failed digestd");
  auto started = InContainer("systemctl start digestd");
  EXPECT_EQ(started.status, 0) << started.output;
  ASSERT_TRUE(WaitFor("(mounted)", 2)) << Slurp(log_);
  auto hello = InContainer("cat " + image + "/rootfs/hello.txt");
  EXPECT_EQ(hello.status, 0) << hello.output;
}

}  // namespace
}  // namespace digestd::daemon
