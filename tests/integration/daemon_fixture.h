#pragma once

// digestd as a process for tests (root, as in CI): the pull fixture's registry, images and keys,
// a config file, the daemon started from it, and digestctl run against its socket.
// Users define DIGESTD_BIN and DIGESTD_DIGESTCTL.

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>

#include "integration/pull_fixture.h"
#include "testing/mount_reader.h"
#include "testing/process_util.h"
#include "testing/test_util.h"

namespace digestd::daemon {

using digestd::testing::ChildProcess;
using digestd::testing::Slurp;

// The value of `key` in digestctl's human output ("key   value" lines), or "".
inline std::string Field(const std::string& out, const std::string& key) {
  const auto at = out.find("\n" + key);
  if (at == std::string::npos) return "";
  auto start = out.find_first_not_of(' ', at + 1 + key.size());
  return out.substr(start, out.find('\n', start) - start);
}

class DaemonTest : public PullTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "daemon tests need root (CI runs them as root)";
    PullTest::SetUp();
    if (HasFatalFailure()) return;
    store_.reset();  // the daemon owns the store
    // Other users must reach the socket (group nogroup) and run digestctl.
    ::chmod(dir_.path().c_str(), 0755);
    ctl_ = (dir_.path() / "digestctl").string();
    fs::copy_file(DIGESTD_DIGESTCTL, ctl_);
    ::chmod(ctl_.c_str(), 0755);
    socket_ = (dir_.path() / "d.sock").string();
    mnt_ = (dir_.path() / "mnt").string();
    BeforeStart();
    if (IsSkipped() || HasFatalFailure()) return;
    WriteConfig();
    Start(daemon_);
  }
  void TearDown() override {
    StopBounded(daemon_);
    if (!mnt_.empty()) (void)::umount2(mnt_.c_str(), MNT_DETACH);
    AfterStop();
  }
  // Hooks for fixtures that prepare the store's filesystem (a loop-mounted ext4) or wrap the
  // daemon (daemon_prefix_, e.g. fiu-run), and clean up after it has stopped.
  virtual void BeforeStart() {}
  virtual void AfterStop() {}
  void WriteConfig() {
    std::ofstream(dir_.path() / "digestd.toml")
        << "[store]\nroot = \"" << (dir_.path() / "store").string() << "\"\n"
        << "[policy]\nfile = \"" << (dir_.path() / "policy.json").string() << "\"\ntrust = \""
        << (dir_.path() / "trust.json").string() << "\"\n"
        << "[daemon]\nsocket = \"" << socket_ << "\"\nsocket_group = \"nogroup\"\nmountpoint = \""
        << mnt_ << "\"\nadmin_uids = [0]\nreader_uids = [65534]\n"
        << "[timeouts]\nconnect_ms = 2000\nfirst_byte_ms = 3000\nstall_ms = 3000\n"
        << "[[registry]]\nhost = \"" << registry_->host() << "\"\ninsecure = true\n"
        << extra_config_;
  }
  // Stops `p` (SIGTERM, then SIGKILL) without ever hanging: should a regression leave a killed
  // process with a thread waiting in the kernel on a FUSE request its own dead workers would
  // have answered, it could not exit until the mount's FUSE connection is aborted. Returns
  // whether that was needed (tests expect never).
  bool StopBounded(ChildProcess& p, int signal = SIGTERM) {
    if (p.pid() <= 0) return false;
    ::kill(p.pid(), signal);
    for (int i = 0; i < 250 && p.Running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (p.Running()) ::kill(p.pid(), SIGKILL);
    for (int i = 0; i < 500 && p.Running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const bool stuck = p.Running();
    if (stuck) digestd::testing::AbortFuseConnection(mnt_);
    p.Wait();
    return stuck;
  }
  // Starts digestd and waits until it answers on its socket.
  void Start(ChildProcess& p, const std::string& log_name = "digestd.log") {
    log_ = (dir_.path() / log_name).string();
    std::vector<std::string> argv = daemon_prefix_;
    for (const std::string& a : {daemon_bin_, std::string("--config"),
                                (dir_.path() / "digestd.toml").string()}) {
      argv.push_back(a);
    }
    ASSERT_TRUE(p.Start(argv, log_));
    for (int i = 0; i < 500; ++i) {
      if (Ctl("health").status == 0) return;
      ASSERT_TRUE(p.Running()) << Slurp(log_);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "digestd did not come up\n" << Slurp(log_);
  }
  // Bounded: a daemon that stops answering fails the test instead of hanging it.
  digestd::testing::CommandResult Ctl(const std::string& args, const std::string& as = "") {
    return Shell("timeout 120 " + as + " " + ctl_ + " --socket " + socket_ + " " + args + " 2>&1");
  }
  // Reads a file through the mount, bounded even when the daemon never answers: `timeout -s
  // KILL` cannot end a reader the kernel holds in an unanswered FUSE request, so after 30 s the
  // mount's FUSE connection is aborted (/sys/fs/fuse/connections/<dev>/abort), which fails the
  // read (and the test) instead of hanging it.
  std::string ReadThroughMount(const std::string& path) {
    auto reader = std::async(std::launch::async, [path] {
      return Shell("timeout -s KILL 20 cat " + path + " 2>&1").output;
    });
    if (reader.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      ADD_FAILURE() << "a read of " << path << " hung: aborting the mount's FUSE connection";
      digestd::testing::AbortFuseConnection(mnt_);
    }
    return reader.get();
  }
#ifdef DIGESTD_SUPERVISE
  // Runs digestd under digestd-supervise (set in BeforeStart, or before DaemonTest::SetUp),
  // which holds its FUSE session and these sockets (name=path, besides control) across restarts.
  void Supervise(const std::vector<std::string>& sockets = {}) {
    daemon_prefix_ = {DIGESTD_SUPERVISE, "--restart-sec", "0.1", "--unmount", mnt_,
                      "--socket", "control=" + socket_};
    for (const auto& s : sockets) {
      daemon_prefix_.push_back("--socket");
      daemon_prefix_.push_back(s);
    }
    daemon_prefix_.push_back("--");
  }
#endif
  std::size_t CountInLog(const std::string& what) {
    const std::string text = Slurp(log_);
    std::size_t n = 0;
    for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
    return n;
  }
  // Polls (never times) until the supervisor has reported `n` ready starts; false after 30 s.
  bool WaitSupervisedReady(std::size_t n) {
    for (int i = 0; i < 3000 && CountInLog("supervise: ready pid") < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return CountInLog("supervise: ready pid") >= n;
  }
  // The pid of the digestd the supervisor counts as the service now (the one it started last,
  // or the successor a hand-over made the main process: "main pid N"), or -1.
  pid_t SupervisedPid() {
    const std::string text = Slurp(log_);
    const auto started = text.rfind("supervise: started pid ");
    const auto main = text.rfind("supervise: main pid ");
    if (started == std::string::npos && main == std::string::npos) return -1;
    if (main != std::string::npos && (started == std::string::npos || main > started)) {
      return std::atoi(text.c_str() + main + 20);
    }
    return std::atoi(text.c_str() + started + 23);
  }
  // Stops `reader` (after 30 s, aborting the mount's connection should it hang) and expects that
  // it never saw an error; prints its counts.
  void ExpectReaderSawNoError(digestd::testing::MountReader& reader) {
    const auto outcome = reader.Finish(std::chrono::seconds(30));
    EXPECT_FALSE(outcome.hung) << outcome.log;
    EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) == 0) << outcome.log;
    EXPECT_NE(outcome.log.find(" errors=0 "), std::string::npos) << outcome.log;
    if (outcome.log.find("reader loops") != std::string::npos) {
      std::printf("%s", outcome.log.substr(outcome.log.rfind("reader loops")).c_str());
    }
  }
  // The shell loop a container runs to read every file of its image, again and again, until
  // /x/stop exists (/x: a directory of the host bound in): failures go to /x/errors, the count
  // of finished loops to /x/loops, and /x/done says it ended.
  static constexpr const char* kContainerReadLoop =
      "cd /; n=0; while [ ! -e /x/stop ]; do "
      "for f in $(/bin/busybox find / -xdev -type f); do "
      "/bin/busybox cat $f > /dev/null || echo ERR $f >> /x/errors; done; "
      "n=$((n+1)); echo $n > /x/loops; done; echo done > /x/done";
  // Ends a container running kContainerReadLoop with `x` as /x (after 30 s, aborting the mount's
  // connection should it hang) and expects that no read failed; returns its loop count.
  int StopContainerReadLoop(const std::string& x) {
    std::ofstream(x + "/stop") << "stop";
    for (int i = 0; i < 1500 && !fs::exists(x + "/done"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!fs::exists(x + "/done")) {
      ADD_FAILURE() << "the container's reader hung: aborting the FUSE connection";
      digestd::testing::AbortFuseConnection(mnt_);
    }
    EXPECT_FALSE(fs::exists(x + "/errors")) << Slurp(x + "/errors");
    const int loops = std::atoi(Slurp(x + "/loops").c_str());
    std::printf("container loops=%d\n", loops);
    return loops;
  }
  std::string PushSigned(const std::string& repo) {
    const std::string digest = PushBusybox(repo + ":v1");
    Sign(repo, digest);
    return digest;
  }

  std::string ctl_, socket_, mnt_, log_;
  std::string extra_config_;  // appended to digestd.toml (set before SetUp)
  std::vector<std::string> daemon_prefix_;  // runs digestd under this command (e.g. fiu-run -x)
  std::string daemon_bin_ = DIGESTD_BIN;     // the daemon binary (or a link to one)
  ChildProcess daemon_;
};

}  // namespace digestd::daemon
