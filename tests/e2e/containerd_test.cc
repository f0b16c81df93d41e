// containerd runs containers on layers digestd verified (root, as CI runs it): a real registry,
// digestd with its snapshotter, and Debian's containerd started with its own config, root, state
// and sockets in the test's directory, the snapshotter wired in as a proxy plugin. Images are
// pulled by containerd two ways: through its CRI plugin (kubelet's PullImage; remote snapshots,
// so containerd fetches no layer blob) and with `ctr image pull` (containerd 1.6's ctr downloads
// every blob into its content store before it unpacks; digestd hands it the verified blobs after
// each pull, [snapshotter] seed_namespaces, so ctr fetches only the manifest by tag). Everything
// the test starts is stopped, and every mount and cgroup directory it leaves is removed, even
// when it fails.

#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>
#include <set>

#include <nlohmann/json.hpp>

#include "integration/daemon_fixture.h"

namespace digestd::daemon {
namespace {

namespace fs = std::filesystem;

// Cgroup directories one and two levels down (cgroup v2: <name>; v1: <controller>/<name>).
std::set<std::string> CgroupDirs() {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    if (!e.is_directory() || e.is_symlink()) continue;
    out.insert(e.path().filename());
    std::error_code ec2;
    for (const auto& sub : fs::directory_iterator(e.path(), ec2)) {
      if (sub.is_directory()) out.insert((e.path().filename() / sub.path().filename()).string());
    }
  }
  return out;
}

class SnapshotterTest : public DaemonTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "containerd tests need root (CI runs them as root)";
    if (::access("/usr/bin/containerd", X_OK) != 0) {
      GTEST_SKIP() << "containerd is not installed (scripts/install-deps.sh installs it)";
    }
    cgroups_before_ = CgroupDirs();
    // SetUp of the base classes creates dir_; the paths are relative to it.
    extra_config_ = "[snapshotter]\nenabled = true\nsocket = \"" + SnapSock() +
                    "\"\nroot = \"" + (dir_.path() / "snaps").string() + "\"\n" +
                    "containerd_socket = \"" + Ctd() + "/containerd.sock\"\n" +
                    "seed_namespaces = [\"default\"]\n" +
                    (PullOnDemand() ? "pull_on_demand = true\n" : "");
    DaemonTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    StartContainerd();
  }
  void TearDown() override {
    if (containerd_.Running()) containerd_.Stop();
    // Shims of containers that a failed test left behind.
    (void)Shell("pkill -f 'containerd-shim.*-address " + Ctd() + "/containerd.sock' || true");
    // Mounts under the test directory (container rootfs, overlays), innermost first.
    std::vector<std::string> mounts;
    std::ifstream in("/proc/self/mounts");
    for (std::string dev, dir, rest; in >> dev >> dir && std::getline(in, rest);) {
      if (dir.starts_with(dir_.path().string() + "/ctd")) mounts.push_back(dir);
    }
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    DaemonTest::TearDown();
    // runc leaves its namespace's cgroup directories behind ("default", "k8s.io").
    std::vector<std::string> added;
    for (const auto& d : CgroupDirs()) {
      if (!cgroups_before_.count(d)) added.push_back(d);
    }
    std::sort(added.begin(), added.end(), [](const std::string& a, const std::string& b) {
      return a.size() > b.size();  // deeper first
    });
    for (const auto& d : added) {
      (void)Shell("find /sys/fs/cgroup/" + d + " -depth -type d -exec rmdir {} \\; 2>/dev/null");
    }
  }

  virtual bool PullOnDemand() const { return false; }
  std::string SnapSock() { return (dir_.path() / "snap.sock").string(); }
  std::string Ctd() { return (dir_.path() / "ctd").string(); }

  void StartContainerd() {
    fs::create_directories(Ctd());
    std::ofstream(Ctd() + "/config.toml")
        << "version = 2\nroot = \"" << Ctd() << "/root\"\nstate = \"" << Ctd() << "/state\"\n"
        << "[grpc]\n  address = \"" << Ctd() << "/containerd.sock\"\n"
        << "[ttrpc]\n  address = \"" << Ctd() << "/containerd.sock.ttrpc\"\n"
        << "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"" << Ctd() << "/opt\"\n"
        << "[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_apparmor = true\n"
        << "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
        << "    snapshotter = \"digestd\"\n    disable_snapshot_annotations = false\n"
        << "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"" << registry_->host()
        << "\"]\n    endpoint = [\"http://" << registry_->host() << "\"]\n"
        << "[proxy_plugins]\n  [proxy_plugins.digestd]\n    type = \"snapshot\"\n"
        << "    address = \"" << SnapSock() << "\"\n";
    ASSERT_TRUE(containerd_.Start({"/usr/bin/containerd", "--config", Ctd() + "/config.toml"},
                                  Ctd() + "/containerd.log"));
    for (int i = 0; i < 500; ++i) {
      if (Ctr("version").status == 0) return;
      ASSERT_TRUE(containerd_.Running()) << Slurp(Ctd() + "/containerd.log");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "containerd did not come up\n" << Slurp(Ctd() + "/containerd.log");
  }
  digestd::testing::CommandResult Ctr(const std::string& args, const std::string& ns = "default") {
    return Shell("timeout 120 ctr -a " + Ctd() + "/containerd.sock -n " + ns + " " + args);
  }
  digestd::testing::CommandResult CriPull(const std::string& image) {
    return Shell("timeout 120 " DIGESTD_CRI_PULL " " + Ctd() + "/containerd.sock " + image);
  }
  // A signed two-layer busybox image (the second layer adds /bin/sh) at `repo:v1`.
  std::string PushImage(const std::string& repo) {
    const std::string tag = "s" + std::to_string(++images_);
    EXPECT_EQ(builder_.Busybox(tag), "");
    EXPECT_EQ(builder_.AddLayer(tag, "ln -s busybox bin/sh && echo " + repo + " > name.txt"), "");
    EXPECT_EQ(builder_.Push(tag, registry_->host() + "/" + repo + ":v1"), "");
    const std::string digest = DigestOf(repo + ":v1");
    Sign(repo, digest);
    return digest;
  }
  std::vector<std::string> Layers(const std::string& repo) {
    auto r = Shell("skopeo inspect --raw --tls-verify=false docker://" + registry_->host() + "/" +
                   repo + ":v1 | jq -r '.layers[].digest'");
    std::vector<std::string> out;
    std::istringstream in(r.output);
    for (std::string l; std::getline(in, l);) {
      if (!l.empty()) out.push_back(l);
    }
    return out;
  }
  // Registry access-log lines by containerd (its User-Agent) since `from` bytes.
  std::string ContainerdRequests(std::size_t from) {
    const std::string log = registry_->Log().substr(std::min(from, registry_->Log().size()));
    std::string out;
    std::istringstream in(log);
    for (std::string l; std::getline(in, l);) {
      if (l.find("\"containerd/") != std::string::npos) out += l + "\n";
    }
    return out;
  }

  ChildProcess containerd_;
  std::set<std::string> cgroups_before_;
};

TEST_F(SnapshotterTest, ContainerdRunsVerifiedLayersWithoutFetchingThem) {
  PushImage("e2e/app");
  ASSERT_EQ(Ctl("pull " + registry_->host() + "/e2e/app:v1").status, 0);
  const std::string image = registry_->host() + "/e2e/app:v1";
  const std::size_t mark = registry_->Log().size();
  auto pull = CriPull(image);
  ASSERT_EQ(pull.status, 0) << pull.output << Slurp(log_);
  const std::string requests = ContainerdRequests(mark);
  EXPECT_NE(requests.find("/manifests/"), std::string::npos) << requests;
  for (const auto& layer : Layers("e2e/app")) {
    EXPECT_EQ(requests.find(layer), std::string::npos) << "containerd fetched layer " << layer
                                                       << "\n" << requests;
  }
  auto run = Ctr("run --rm --snapshotter digestd " + image + " c1 /bin/sh -c 'echo ok; /bin/busybox cat /name.txt'", "k8s.io");
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(run.output, "ok\ne2e/app\n");
  // A container writes to its own upper directory; the layers stay read-only and shared.
  auto write = Ctr("run --rm --snapshotter digestd " + image + " c2 /bin/sh -c 'echo x > /hello.txt && /bin/busybox cat /hello.txt'", "k8s.io");
  EXPECT_EQ(write.output, "x\n");
  auto again = Ctr("run --rm --snapshotter digestd " + image + " c3 /bin/busybox cat /hello.txt", "k8s.io");
  EXPECT_EQ(again.output, "hello\n");

  // `ctr image pull` (namespace "default"): ctr downloads every blob before it unpacks, but
  // digestd handed the verified blobs to containerd's content store when it pulled the image,
  // so containerd asks the registry for the manifest by tag and nothing else.
  const std::size_t ctr_mark = registry_->Log().size();
  auto ctr_pull = Ctr("image pull --plain-http --snapshotter digestd " + image);
  ASSERT_EQ(ctr_pull.status, 0) << ctr_pull.output;
  const std::string by_ctr = ContainerdRequests(ctr_mark);
  EXPECT_NE(by_ctr.find("/manifests/v1"), std::string::npos) << by_ctr;
  EXPECT_EQ(by_ctr.find("/blobs/"), std::string::npos) << "ctr fetched blobs\n" << by_ctr;
  auto run2 = Ctr("run --rm --snapshotter digestd " + image + " c4 /bin/sh -c 'echo ok'");
  EXPECT_EQ(run2.output, "ok\n");
}

// A tenant's pull is not handed to containerd's shared content store: a lease wipe could not
// reach (or overwrite) the copies there.
TEST_F(SnapshotterTest, TenantPullsAreNotHandedToContainerd) {
  PushImage("e2e/private");
  const std::string image = registry_->host() + "/e2e/private:v1";
  auto pull = Ctl("--json pull --tenant team-a " + image);
  ASSERT_EQ(pull.status, 0) << pull.output;
  auto j = nlohmann::json::parse(pull.output.substr(pull.output.rfind("\n{") + 1), nullptr, false);
  const std::string manifest = j.is_object() ? j.value("manifest", "") : "";
  ASSERT_FALSE(manifest.empty()) << pull.output;
  auto content = Ctr("content ls");
  ASSERT_EQ(content.status, 0) << content.output;
  EXPECT_EQ(content.output.find(manifest), std::string::npos) << content.output;
  for (const auto& layer : Layers("e2e/private")) {
    EXPECT_EQ(content.output.find(layer), std::string::npos) << content.output;
  }
  EXPECT_NE(Slurp(log_).find("not handed over (tenant team-a"), std::string::npos);
}

TEST_F(SnapshotterTest, ImagesDigestdHasNotVerifiedCannotRun) {
  PushImage("e2e/unpulled");  // signed, pushed, but never pulled through digestd
  const std::string image = registry_->host() + "/e2e/unpulled:v1";
  auto cri = CriPull(image);
  EXPECT_NE(cri.status, 0) << cri.output;
  EXPECT_NE(cri.output.find("not pulled through digestd"), std::string::npos) << cri.output;
  EXPECT_NE(cri.output.find("digestctl pull " + image), std::string::npos) << cri.output;
  auto ctr_pull = Ctr("image pull --plain-http --snapshotter digestd " + image);
  EXPECT_NE(ctr_pull.status, 0) << ctr_pull.output;
  EXPECT_NE(ctr_pull.output.find("not verified by digestd"), std::string::npos) << ctr_pull.output;
  auto run = Ctr("run --rm --snapshotter digestd " + image + " u1 /bin/sh -c 'echo ok'");
  EXPECT_NE(run.status, 0);
  EXPECT_EQ(run.output.find("ok\n"), std::string::npos) << run.output;
}

TEST_F(SnapshotterTest, ADeniedDigestCanNoLongerStart) {
  const std::string digest = PushImage("e2e/denied");
  ASSERT_EQ(Ctl("pull " + registry_->host() + "/e2e/denied:v1").status, 0);
  const std::string image = registry_->host() + "/e2e/denied:v1";
  ASSERT_EQ(CriPull(image).status, 0);
  ASSERT_EQ(Ctr("run --rm --snapshotter digestd " + image + " d1 /bin/sh -c 'echo ok'", "k8s.io").output,
            "ok\n");
  ASSERT_EQ(Ctl("deny add " + digest + " --reason compromised").status, 0);
  auto run = Ctr("run --rm --snapshotter digestd " + image + " d2 /bin/sh -c 'echo ok'", "k8s.io");
  EXPECT_NE(run.status, 0);
  EXPECT_EQ(run.output.find("ok\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("denied"), std::string::npos) << run.output;
  // Lifting the deny lets it run again.
  ASSERT_EQ(Ctl("deny rm " + digest).status, 0);
  EXPECT_EQ(Ctr("run --rm --snapshotter digestd " + image + " d3 /bin/sh -c 'echo ok'", "k8s.io").output,
            "ok\n");
}

// digestd restarted under running containers (issue #18): it runs under digestd-supervise,
// which holds its FUSE session, its control socket and its snapshotter socket across restarts.
// A container started with `ctr run --snapshotter digestd` reads every file of its image in a
// loop across a graceful restart (SIGHUP), a kill -9 and an upgrade-style restart, and a new
// container starts right after each, through the same containerd (never restarted).
class RestartUnderContainerdTest : public SnapshotterTest {
 protected:
  void BeforeStart() override { Supervise({"snapshotter=" + SnapSock()}); }
};

TEST_F(RestartUnderContainerdTest, ContainersKeepReadingAndNewOnesStartAcrossRestarts) {
  ASSERT_TRUE(WaitSupervisedReady(1)) << Slurp(log_);
  PushImage("e2e/live");
  const std::string image = registry_->host() + "/e2e/live:v1";
  ASSERT_EQ(Ctl("pull " + image).status, 0);
  auto pull = CriPull(image);
  ASSERT_EQ(pull.status, 0) << pull.output << Slurp(log_);
  const std::string x = (dir_.path() / "x").string();
  fs::create_directories(x);
  auto started = Ctr("run -d --snapshotter digestd --mount type=bind,src=" + x +
                         ",dst=/x,options=rbind:rw " + image + " reader /bin/sh -c '" + kContainerReadLoop + "'",
                     "k8s.io");
  ASSERT_EQ(started.status, 0) << started.output;
  auto loops = [&] { return std::atoi(Slurp(x + "/loops").c_str()); };
  // Polls (never times): true once the container has finished `n` more loops, false after 30 s.
  auto progresses = [&](int n) {
    const int from = loops();
    for (int i = 0; i < 1500 && loops() < from + n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return loops() >= from + n;
  };
  ASSERT_TRUE(progresses(1)) << "the container never read its files";

  std::size_t readies = 1;
  for (const std::string how : {"SIGHUP", "SIGKILL", "SIGHUP"}) {
    SCOPED_TRACE(how);
    if (how == "SIGHUP") {
      ::kill(daemon_.pid(), SIGHUP);  // the supervisor: graceful restart (an upgrade's path)
    } else {
      ::kill(SupervisedPid(), SIGKILL);
    }
    ASSERT_TRUE(WaitSupervisedReady(++readies)) << Slurp(log_);
    // A new container starts at once, through the snapshotter socket containerd already used.
    const std::string id = "n" + std::to_string(readies);
    auto run = Ctr("run --rm --snapshotter digestd " + image + " " + id +
                       " /bin/sh -c '/bin/busybox cat /name.txt'",
                   "k8s.io");
    EXPECT_EQ(run.status, 0) << run.output << Slurp(log_);
    EXPECT_EQ(run.output, "e2e/live\n");
    EXPECT_TRUE(progresses(2)) << "the running container stopped reading";
  }
  EXPECT_EQ(CountInLog("(mounted)"), 1u) << "every restart adopts the mount\n" << Slurp(log_);

  StopContainerReadLoop(x);
  (void)Ctr("task kill -s KILL reader", "k8s.io");
  (void)Ctr("task delete reader", "k8s.io");
  (void)Ctr("container delete reader", "k8s.io");
}

// With [snapshotter] pull_on_demand, an image kubelet (CRI) asks for that digestd does not hold is
// pulled by digestd through its verified pipeline, under its policy; containerd still fetches no
// layer, and an image the policy refuses is refused.
class OnDemandTest : public SnapshotterTest {
 protected:
  bool PullOnDemand() const override { return true; }
};

TEST_F(OnDemandTest, CriPullsAreVerifiedByDigestdFirst) {
  PushImage("e2e/ondemand");  // signed, never pulled through digestd
  const std::string image = registry_->host() + "/e2e/ondemand:v1";
  const std::size_t mark = registry_->Log().size();
  auto pull = CriPull(image);
  ASSERT_EQ(pull.status, 0) << pull.output << Slurp(log_);
  const std::string by_containerd = ContainerdRequests(mark);
  const std::string all = registry_->Log().substr(mark);
  for (const auto& layer : Layers("e2e/ondemand")) {
    EXPECT_EQ(by_containerd.find(layer), std::string::npos) << "containerd fetched " << layer;
    EXPECT_NE(all.find(layer), std::string::npos) << "digestd did not fetch " << layer;
  }
  EXPECT_EQ(Ctr("run --rm --snapshotter digestd " + image + " o1 /bin/sh -c 'echo ok'", "k8s.io").output,
            "ok\n");
  auto audit = Ctl("audit");
  EXPECT_NE(audit.output.find("e2e/ondemand"), std::string::npos) << audit.output;

  // An unsigned image with a layer of its own: the policy (signatures required) refuses it, so
  // containerd gets nothing. (Layers containerd already holds are not asked for again: see
  // docs/operations.md on image-level admission.)
  const std::string tag = "unsigned";
  ASSERT_EQ(builder_.Busybox(tag), "");
  ASSERT_EQ(builder_.AddLayer(tag, "echo unsigned > unsigned.txt"), "");
  ASSERT_EQ(builder_.Push(tag, registry_->host() + "/e2e/unsigned:v1"), "");
  auto refused = CriPull(registry_->host() + "/e2e/unsigned:v1");
  EXPECT_NE(refused.status, 0) << refused.output;
  EXPECT_NE(refused.output.find("digestd did not pull"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace digestd::daemon
