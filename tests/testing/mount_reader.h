#pragma once

// Runs tests/integration/mount_reader against a mount while a test restarts, kills or hands over
// the process serving it, and collects what the reader saw. A reader the kernel holds in an
// unanswered FUSE request cannot be killed, so a reader that does not finish in time is ended by
// aborting the mount's FUSE connection (/sys/fs/fuse/connections/<minor>/abort): the test then
// fails with "hung" instead of hanging CI.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "testing/process_util.h"
#include "testing/test_util.h"

namespace digestd::testing {

// Aborts the FUSE connection of the mount at `mountpoint` (as `mountinfo` lists it: another
// mount namespace's is /proc/<pid>/mountinfo); true if one was found. Mounts the fusectl file
// system first where the machine has not (a fresh root has not).
inline bool AbortFuseConnection(const std::string& mountpoint,
                                const std::string& mountinfo_path = "/proc/self/mountinfo") {
  if (::access("/sys/fs/fuse/connections", F_OK) == 0 &&
      Shell("mountpoint -q /sys/fs/fuse/connections").status != 0) {
    (void)Shell("mount -t fusectl fusectl /sys/fs/fuse/connections");
  }
  std::ifstream mountinfo(mountinfo_path);
  bool found = false;
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point != mountpoint || line.find(" - fuse") == std::string::npos) continue;
    std::ofstream("/sys/fs/fuse/connections/" + dev.substr(dev.find(':') + 1) + "/abort") << "1";
    found = true;
  }
  return found;
}

class MountReader {
 public:
  // `mountinfo`: where the mount is listed (a reader in another mount namespace: its
  // /proc/<pid>/mountinfo), for aborting the connection should the reader hang.
  MountReader(std::string binary, std::string mountpoint, std::string workdir,
              std::string mountinfo = "/proc/self/mountinfo")
      : binary_(std::move(binary)), mnt_(std::move(mountpoint)), dir_(std::move(workdir)),
        mountinfo_(std::move(mountinfo)) {}
  ~MountReader() { (void)Finish(std::chrono::seconds(5)); }

  // Starts reading `paths` (their bytes as first read are the expected ones); returns once the
  // first pass is done.
  bool Start(const std::vector<std::string>& paths) {
    std::vector<std::string> argv = {binary_, dir_ + "/reader.stop"};
    argv.insert(argv.end(), paths.begin(), paths.end());
    (void)::unlink((dir_ + "/reader.stop").c_str());
    if (!child_.Start(argv, log())) return false;
    started_ = true;
    for (int i = 0; i < 1000; ++i) {
      if (Slurp(log()).find("reader started") != std::string::npos) return true;
      if (!child_.Running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  struct Outcome {
    bool hung = false;
    int status = -1;
    std::string log;
  };
  // Stops the reader and waits up to `wait` for it; aborts the connection if it hangs.
  Outcome Finish(std::chrono::seconds wait) {
    Outcome out;
    if (!started_) return out;
    started_ = false;
    std::ofstream(dir_ + "/reader.stop") << "stop";
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (child_.Running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (child_.Running()) {
      out.hung = true;
      AbortFuseConnection(mnt_, mountinfo_);
    }
    out.status = child_.Wait();
    out.log = Slurp(log());
    return out;
  }
  std::string log() const { return dir_ + "/reader.log"; }

 private:
  std::string binary_, mnt_, dir_, mountinfo_;
  ChildProcess child_;
  bool started_ = false;
};

}  // namespace digestd::testing
