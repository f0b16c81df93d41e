#pragma once

// digestd as a process for tests (root, as in CI): the pull fixture's registry, images and keys,
// a config file, the daemon started from it, and digestctl run against its socket.
// Users define DIGESTD_BIN and DIGESTD_DIGESTCTL.

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
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
  // Stops `p` (SIGTERM, then SIGKILL) without ever hanging: a process killed while one of its
  // threads waits in the kernel for a FUSE request its own dead workers would have answered (a
  // kernel notification blocked on a directory lock held by a reader's lookup) cannot exit until
  // the mount's FUSE connection is aborted. Returns whether that was needed.
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
