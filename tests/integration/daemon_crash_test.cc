// digestd itself killed at random moments: 200 seeded SIGKILLs of the daemon while three
// `digestctl pull`s of six signed images sharing a base layer run against it and a reader loops
// over the mount; removals and GC in between. After each kill digestd is started again (as
// systemd would) and: every image whose pull reported success and was not removed since is listed
// and reads back through the mount (its own id file, its own data's size, busybox's bytes); no
// staging file is left; no image is reported broken. Every 50 kills the daemon is stopped and an
// offline fsck must be clean. DIGESTD_DAEMON_KILLS and DIGESTD_CRASH_SEED override the defaults.
//
// Every command is bounded (timeout -s KILL): a hang fails the test instead of stalling CI.

#include <signal.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>
#include <map>
#include <random>
#include <set>

#include "integration/daemon_fixture.h"

namespace digestd::daemon {
namespace {

std::uint64_t EnvOr(const char* name, std::uint64_t def) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : def;
}

class DaemonCrashTest : public DaemonTest {
 protected:
  static constexpr int kImages = 6;

  void PushImages() {
    ASSERT_EQ(builder_.Busybox("base"), "");
    for (int i = 0; i < kImages; ++i) {
      const std::string tag = "img" + std::to_string(i);
      // Same base layer bytes in every image (one tag of the base manifest each).
      auto tagged = Shell("umoci tag --image " + builder_.layout() + ":base " + tag + " 2>&1");
      ASSERT_EQ(tagged.status, 0) << tagged.output;
      ASSERT_EQ(builder_.AddLayer(tag, "echo image" + std::to_string(i) +
                                           " > id && head -c 300000 /dev/urandom > own"),
                "");
      ASSERT_EQ(builder_.Push(tag, registry_->host() + "/crash/app" + std::to_string(i) + ":v1"),
                "");
      Sign("crash/app" + std::to_string(i), DigestOf("crash/app" + std::to_string(i) + ":v1"));
    }
  }
  std::string Ref(int i) const {
    return registry_->host() + "/crash/app" + std::to_string(i) + ":v1";
  }
  // Each listed image's rootfs through the mount, by reference (from `digestctl images`).
  std::map<std::string, std::string> Rootfs() {
    std::map<std::string, std::string> out;
    auto list = Ctl("--json images");
    auto j = nlohmann::json::parse(list.output, nullptr, false);
    if (!j.is_array()) return out;
    for (const auto& item : j) {
      const std::string digest = item.value("digest", "");
      if (digest.size() > 7) {
        out[item.value("reference", "")] = mnt_ + "/images/sha256/" + digest.substr(7) + "/rootfs";
      }
    }
    return out;
  }
};

TEST_F(DaemonCrashTest, SurvivesRandomSigkillsDuringConcurrentPullsWithReaders) {
  PushImages();
  if (HasFatalFailure()) return;
  const std::uint64_t seed = EnvOr("DIGESTD_CRASH_SEED", 20261207);
  const std::uint64_t kills = EnvOr("DIGESTD_DAEMON_KILLS", 200);
  std::mt19937_64 rng(seed);
  std::set<int> present;
  std::uint64_t completed = 0, cut = 0, checks = 0, fscks = 0, stuck = 0;
  const std::string busybox_sum = Shell("sha256sum /bin/busybox | cut -c1-64").output;
  for (std::uint64_t k = 0; k < kills; ++k) {
    SCOPED_TRACE("seed=" + std::to_string(seed) + " kill=" + std::to_string(k));
    // Three pulls and a reader against the running daemon.
    std::vector<std::unique_ptr<testing::ChildProcess>> pulls;
    std::vector<int> pulled;
    for (int p = 0; p < 3; ++p) {
      const int i = static_cast<int>(rng() % kImages);
      pulled.push_back(i);
      pulls.push_back(std::make_unique<testing::ChildProcess>());
      pulls.back()->Start({"timeout", "-s", "KILL", "60", ctl_, "--socket", socket_, "pull",
                           Ref(i)},
                          (dir_.path() / ("pull" + std::to_string(p) + ".log")).string());
    }
    testing::ChildProcess reader;
    reader.Start({"timeout", "-s", "KILL", "30", "sh", "-c",
                  "while :; do cat " + mnt_ + "/images/sha256/*/rootfs/id >/dev/null 2>&1; done"},
                 (dir_.path() / "reader.log").string());
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400000));
    // A kill that lands while the daemon's io thread waits in a kernel notification for a
    // directory lock a reader's lookup holds leaves it unable to exit (its workers, which would
    // answer the lookup, are gone): counted, and ended by aborting the connection.
    if (StopBounded(daemon_, SIGKILL)) ++stuck;
    for (std::size_t p = 0; p < pulls.size(); ++p) {
      const int status = pulls[p]->Wait();
      const auto out = Slurp((dir_.path() / ("pull" + std::to_string(p) + ".log")).string());
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        present.insert(pulled[p]);
        ++completed;
      } else {
        ++cut;
      }
    }
    reader.Stop();
    // Restart, as systemd would.
    Start(daemon_);
    if (HasFatalFailure()) return;
    ASSERT_TRUE(fs::is_empty(dir_.path() / "store" / "staging"));
    auto health = Ctl("--json health");
    auto h = nlohmann::json::parse(health.output, nullptr, false);
    ASSERT_TRUE(h.is_object()) << health.output;
    ASSERT_TRUE(h["images_broken"].empty()) << health.output;
    const auto listed = Rootfs();
    for (int i : present) {
      const auto it = listed.find(Ref(i));
      ASSERT_TRUE(it != listed.end()) << "image " << i << " reported pulled is not listed";
      const std::string& rootfs = it->second;
      ASSERT_EQ(ReadThroughMount(rootfs + "/id"), "image" + std::to_string(i) + "\n") << rootfs;
      auto size = Shell("timeout -s KILL 20 stat -c %s " + rootfs + "/own");
      ASSERT_EQ(size.output, "300000\n") << rootfs;
      auto sum = Shell("timeout -s KILL 20 sha256sum " + rootfs + "/bin/busybox | cut -c1-64");
      ASSERT_EQ(sum.output, busybox_sum) << rootfs;
      ++checks;
    }
    // Now and then an image goes (removal + GC), so removals also meet kills and pulls.
    if (rng() % 5 == 0 && !present.empty()) {
      const int victim = *std::next(present.begin(), static_cast<long>(rng() % present.size()));
      ASSERT_EQ(Ctl("rm " + Ref(victim)).status, 0);
      present.erase(victim);
    }
    if ((k + 1) % 50 == 0) {
      if (StopBounded(daemon_)) ++stuck;
      (void)::umount2(mnt_.c_str(), MNT_DETACH);
      auto fsck = Shell("timeout -s KILL 300 " + ctl_ + " fsck --root " +
                        (dir_.path() / "store").string() + " 2>&1");
      ASSERT_EQ(fsck.status, 0) << fsck.output;
      ++fscks;
      Start(daemon_);
      if (HasFatalFailure()) return;
    }
  }
  std::printf("daemon crash test: %llu kills, %llu pulls completed, %llu cut, %llu image checks "
              "through the mount, %llu offline fscks clean, %llu kills needed the connection "
              "aborted\n",
              static_cast<unsigned long long>(kills), static_cast<unsigned long long>(completed),
              static_cast<unsigned long long>(cut), static_cast<unsigned long long>(checks),
              static_cast<unsigned long long>(fscks), static_cast<unsigned long long>(stuck));
  // A killed daemon always exits: no thread of it waits in the kernel on a lookup only its
  // workers could answer (FuseMountTest.AnInvalidationNeverWaitsOnALookupInFlight). Before
  // the mount stopped using entry invalidations, 1 kill in 20 wedged here.
  EXPECT_EQ(stuck, 0u);
  // The kills must land in pulls, and pulls must also finish (loose bounds: a slower machine
  // completes fewer pulls in the same kill window; here 373 completed and 227 cut of 600).
  EXPECT_GT(completed, kills / 5);
  EXPECT_GT(cut, kills / 10);
}

}  // namespace
}  // namespace digestd::daemon
