// The adversarial suite: each attack a hostile review found against a running digestd, replayed
// against a real daemon, its real mount and its real socket, as the unprivileged user a local
// attacker is (nobody, via setpriv) wherever a user would be. Every test here failed on the main
// it was written against; each must keep holding.
//
// Attacks covered elsewhere, with the same rule (a reproduction that failed before the fix):
//  - a poststop hook naming another tenant's lease: service_test
//    (DaemonTest.PoststopHookOfARuncContainerWipesTheTenantsLease);
//  - host case and default port escaping scopes and denyReferences: verify unit tests
//    (PolicyTest.HostCaseAndDefaultPortDoNotEscapeRules, ReferenceTest.RegistryHostsHaveOneSpelling);
//  - a registry trickling a blob under the stall timeout: pull_fault_test
//    (PullFaultTest.TrickleUnderTheMinimumRateHitsTheBodyDeadline);
//  - a removed object served by a stale view: fusefs unit test
//    (NamespaceTest.RemovedObjectsLeaveNoViews).

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "integration/daemon_fixture.h"

namespace digestd::daemon {
namespace {

const std::string kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
// Every command that touches the mount or the socket is bounded: a daemon that stops answering
// (the old accept loop spinning at its fd limit did) fails the test instead of hanging it.
// SIGKILL: a process waiting on a FUSE request only dies of that.
const std::string kBounded = "timeout -s KILL 120 ";

class SecurityTest : public DaemonTest {
 protected:
  nlohmann::json Client(const std::string& args, const std::string& as = "") {
    // A copy nobody can read, run by the system's python (not a user's shim).
    const std::string script = (dir_.path() / "socket_client.py").string();
    if (!fs::exists(script)) {
      fs::copy_file(DIGESTD_SECURITY_DIR "/socket_client.py", script);
      ::chmod(script.c_str(), 0755);
    }
    auto r = Shell(kBounded + as + " /usr/bin/python3 " + script + " " + socket_ + " " + args + " 2>&1");
    EXPECT_EQ(r.status, 0) << r.output;
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.output;
    return j;
  }
  std::uint64_t Metric(const std::string& name) {
    auto m = Ctl("metrics");
    const auto at = m.output.find("\n" + name + " ");
    if (at == std::string::npos) {
      ADD_FAILURE() << "no metric " << name << "\n" << m.output;
      return 0;
    }
    return std::stoull(m.output.substr(at + name.size() + 2));
  }
  // Pulls `ref` as root; returns digestctl's human output.
  std::string PullOk(const std::string& ref, const std::string& flags = "") {
    auto p = Ctl("pull " + flags + " " + ref);
    EXPECT_EQ(p.status, 0) << p.output;
    return p.output;
  }
  std::vector<std::string> Layers(const std::string& ref) {
    auto j = nlohmann::json::parse(Ctl("--json inspect " + ref).output, nullptr, false);
    std::vector<std::string> out;
    if (!j.is_object()) return out;
    for (const auto& l : j["layers"]) out.push_back(l["digest"].get<std::string>().substr(7));
    return out;
  }
  void Restart(const std::vector<std::string>& prefix) {
    daemon_.Stop();
    (void)::umount2(mnt_.c_str(), MNT_DETACH);
    std::vector<std::string> argv = prefix;
    argv.insert(argv.end(), {DIGESTD_BIN, "--config", (dir_.path() / "digestd.toml").string()});
    log_ = (dir_.path() / "digestd-2.log").string();
    ASSERT_TRUE(daemon_.Start(argv, log_));
    for (int i = 0; i < 500; ++i) {
      if (Ctl("health").status == 0) return;
      ASSERT_TRUE(daemon_.Running()) << Slurp(log_);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "digestd did not come up\n" << Slurp(log_);
  }
};

// Review: `cat` over 1500 files as nobody took digestd to its fd limit; every read on the mount
// then failed with EIO for everybody, health timed out, and the accept loop spun logging
// "Too many open files" millions of times.
TEST_F(SecurityTest, NobodyCannotExhaustDigestdsFileDescriptors) {
  ASSERT_EQ(builder_.Busybox("fd"), "");
  ASSERT_EQ(builder_.AddLayer("fd", "mkdir many && for i in $(seq 1500); do echo $i > many/f$i; done"),
            "");
  ASSERT_EQ(builder_.Push("fd", registry_->host() + "/sec/fd:v1"), "");
  Sign("sec/fd", DigestOf("sec/fd:v1"));
  // A small limit, as systemd's default soft limit is to a daemon that does not raise it.
  Restart({"prlimit", "--nofile=512:512", "--"});
  const std::string rootfs = Field(PullOk(registry_->host() + "/sec/fd:v1"), "rootfs");
  ASSERT_FALSE(rootfs.empty());
  for (int round = 0; round < 2; ++round) {
    auto cat = Shell(kBounded + kNobody + " sh -c 'cd " + rootfs + "/many && cat * | wc -l' 2>&1");
    ASSERT_EQ(cat.status, 0) << cat.output;
    EXPECT_EQ(cat.output, "1500\n") << "round " << round;
  }
  // 600 connections held open against 512 fds: accept backs off instead of spinning, and once
  // they go, the socket answers again.
  auto held = Client("hold 600");
  EXPECT_GT(held["held"].get<int>(), 100) << held.dump();
  EXPECT_EQ(Ctl("health").status, 0) << Slurp(log_);
  EXPECT_EQ(Shell(kBounded + "cat " + rootfs + "/many/f77").output, "77\n");
  const std::string log = Slurp(log_);
  std::size_t reports = 0;
  for (auto at = log.find("accept failed"); at != std::string::npos;
       at = log.find("accept failed", at + 1)) {
    ++reports;
  }
  EXPECT_LE(reports, 20u) << "accept failures are logged at most once per 10 s";
  EXPECT_EQ(log.find("fuse error errno=24"), std::string::npos);
}

// Review: blobs were 0444 under a 0755 mount with allow_other, so nobody could read a 0600 file
// of a layer (or another tenant's config) with `tar -xzOf mnt/blobs/sha256/<layer>`.
TEST_F(SecurityTest, NobodyReadsOnlyWhatFileModesAllow) {
  ASSERT_EQ(builder_.Busybox("modes"), "");
  ASSERT_EQ(builder_.AddLayer("modes", "echo s3cret > secret && chmod 600 secret && "
                                       "mkdir private && chmod 700 private && echo x > private/x"),
            "");
  ASSERT_EQ(builder_.Push("modes", registry_->host() + "/sec/modes:v1"), "");
  Sign("sec/modes", DigestOf("sec/modes:v1"));
  const std::string ref = registry_->host() + "/sec/modes:v1";
  PullOk(ref);
  const auto layers = Layers(ref);
  ASSERT_EQ(layers.size(), 2u);
  const std::string blob = mnt_ + "/blobs/sha256/" + layers[1];
  // Root reads the raw blob; nobody cannot even look into blobs/.
  EXPECT_EQ(Shell(kBounded + "tar -xzOf " + blob + " secret").output, "s3cret\n");
  auto tar = Shell(kBounded + kNobody + " tar -xzOf " + blob + " secret 2>&1");
  EXPECT_NE(tar.status, 0);
  EXPECT_EQ(tar.output.find("s3cret"), std::string::npos) << tar.output;
  EXPECT_NE(Shell(kBounded + kNobody + " ls " + mnt_ + "/blobs/sha256 2>&1").status, 0);
  // Every file under layers/ and images/: nobody can read it exactly when its mode lets others
  // read it (and every directory above lets others search).
  const std::string walk =
      "find " + mnt_ + "/layers " + mnt_ + "/images -type f 2>/dev/null | sort | "
      "while read -r f; do if head -c1 \"$f\" >/dev/null 2>&1; then echo \"R $f\"; "
      "else echo \"D $f\"; fi; done";
  auto as_nobody = Shell(kBounded + kNobody + " sh -c '" + walk + "'");
  auto modes = Shell(kBounded + "find " + mnt_ + "/layers " + mnt_ + "/images -type f | sort | while read -r f; do "
                     "d=$(dirname \"$f\"); ok=R; while [ \"$d\" != \"" + mnt_ + "\" ]; do "
                     "[ $(( 0$(stat -c %a \"$d\") & 1 )) -eq 1 ] || ok=D; d=$(dirname \"$d\"); done; "
                     "[ $(( 0$(stat -c %a \"$f\") & 4 )) -eq 4 ] || ok=D; echo \"$ok $f\"; done");
  ASSERT_EQ(modes.status, 0) << modes.output;
  // nobody's find cannot enter 0700 directories: compare only the files it saw.
  std::istringstream seen(as_nobody.output);
  std::size_t compared = 0;
  for (std::string line; std::getline(seen, line);) {
    EXPECT_NE(modes.output.find(line + "\n"), std::string::npos) << line;
    ++compared;
  }
  EXPECT_GT(compared, 4u);
  EXPECT_NE(as_nobody.output.find("D " + mnt_ + "/layers/sha256/" + layers[1] + "/secret"),
            std::string::npos)
      << as_nobody.output;
  EXPECT_NE(Shell(kBounded + kNobody + " cat " + mnt_ + "/layers/sha256/" + layers[1] + "/private/x 2>&1").status, 0);
}

// Review: after `deny add <image>`, the image view vanished but its layer (used by no other
// image) stayed readable under layers/ by a new open.
TEST_F(SecurityTest, DenyingAnImageWithdrawsTheLayersOnlyItUses) {
  ASSERT_EQ(builder_.Busybox("base"), "");
  ASSERT_EQ(builder_.Push("base", registry_->host() + "/sec/base:v1"), "");
  Sign("sec/base", DigestOf("sec/base:v1"));
  ASSERT_EQ(builder_.AddLayer("base", "echo only-a > only-a.txt"), "");
  ASSERT_EQ(builder_.Push("base", registry_->host() + "/sec/a:v1"), "");
  const std::string manifest_a = DigestOf("sec/a:v1");
  Sign("sec/a", manifest_a);
  PullOk(registry_->host() + "/sec/base:v1");
  PullOk(registry_->host() + "/sec/a:v1");
  const auto layers = Layers(registry_->host() + "/sec/a:v1");
  ASSERT_EQ(layers.size(), 2u);
  const std::string shared = mnt_ + "/layers/sha256/" + layers[0] + "/hello.txt";
  const std::string own = mnt_ + "/layers/sha256/" + layers[1] + "/only-a.txt";
  EXPECT_EQ(Shell(kBounded + "cat " + own).output, "only-a\n");
  ASSERT_EQ(Ctl("deny add " + manifest_a + " --reason test").status, 0);
  for (const std::string& as : {std::string(), kNobody}) {
    EXPECT_NE(Shell(kBounded + as + " cat " + own + " 2>&1").status, 0) << "as '" << as << "'\n" << Slurp(log_);
    EXPECT_EQ(Shell(kBounded + as + " cat " + shared).output, "hello\n") << "the base image still uses it";
  }
  ASSERT_EQ(Ctl("deny rm " + manifest_a).status, 0);
  EXPECT_EQ(Shell(kBounded + "cat " + own).output, "only-a\n");
}

// Review: after a lease wipe and a re-pull of an image sharing the wiped layer, the rootfs view
// read NULs (a cached fd to the wiped file), and the wiped layer's names stayed listable.
TEST_F(SecurityTest, WipeThenRePullServesFreshContentAndNoStaleNames) {
  PushSigned("sec/wipe");
  const std::string ref = registry_->host() + "/sec/wipe:v1";
  const std::string out = PullOk(ref, "--tenant team-a");
  const std::string rootfs = Field(out, "rootfs");
  const auto layers = Layers(ref);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(Shell(kBounded + "cat " + rootfs + "/hello.txt").output, "hello\n");
  EXPECT_EQ(Shell(kBounded + kNobody + " cat " + mnt_ + "/layers/sha256/" + layers[0] + "/hello.txt").output,
            "hello\n");
  ASSERT_EQ(Ctl("lease create --id wl --tenant team-a " + ref).status, 0);
  auto wipe = Ctl("lease release --wipe wl");
  ASSERT_EQ(wipe.status, 0) << wipe.output;
  for (const std::string& as : {std::string(), kNobody}) {
    EXPECT_NE(Shell(kBounded + as + " ls " + mnt_ + "/layers/sha256/" + layers[0] + " 2>&1").status, 0);
    EXPECT_NE(Shell(kBounded + as + " cat " + rootfs + "/hello.txt 2>&1").status, 0);
  }
  PullOk(ref, "--tenant team-a");
  EXPECT_EQ(Shell(kBounded + "cat " + rootfs + "/hello.txt").output, "hello\n");
  EXPECT_EQ(Shell(kBounded + "cat " + mnt_ + "/layers/sha256/" + layers[0] + "/hello.txt").output, "hello\n");
}

// Review: 3000 forbidden POSTs with 15 KB paths in 8 s grew the audit index from 0.84 MB to
// 46 MB.
TEST_F(SecurityTest, RefusalsCannotFloodTheAuditLog) {
  const std::uint64_t before = Metric("digestd_audit_bytes");
  // Forbidden (a reader may not POST) with 7 KB paths, then malformed (15 KB targets are refused
  // as such): both kinds of refusal share each peer's budget.
  auto forbidden = Client("flood 2000 7000", kNobody);
  EXPECT_EQ(forbidden["statuses"]["403"], 2000) << forbidden.dump();
  auto malformed = Client("flood 1000 15000", kNobody);
  EXPECT_EQ(malformed["statuses"]["400"], 1000) << malformed.dump();
  const std::uint64_t after = Metric("digestd_audit_bytes");
  EXPECT_LT(after - before, 200u << 10) << "audit grew by " << (after - before) << " bytes";
  EXPECT_GE(Metric("digestd_audit_suppressed_total"), 2900u);
  auto audit = Ctl("--json audit");
  EXPECT_NE(audit.output.find("api.forbidden"), std::string::npos);
  EXPECT_EQ(audit.output.find(std::string(2000, 'x')), std::string::npos) << "paths are clipped";
  EXPECT_EQ(Ctl("health").status, 0);
}

// Review: a request path with non-UTF-8 bytes got no reply (json::dump threw) and its refusal was
// not audited.
TEST_F(SecurityTest, NonUtf8PathsAreAnsweredAndAudited) {
  // "GET /v1/\xff\xfe HTTP/1.1", as root (admin) and as nobody (reader).
  const std::string raw = "474554202f76312fff fe20485454502f312e310d0a486f73743a20640d0a0d0a";
  std::string hex;
  for (char c : raw) {
    if (c != ' ') hex.push_back(c);
  }
  EXPECT_EQ(Client("raw " + hex)["status"], 400);
  EXPECT_EQ(Client("raw " + hex, kNobody)["status"], 400);
  // A forbidden POST with invalid UTF-8 from nobody: answered too.
  const std::string post = "504f5354202f76312fff20485454502f312e310d0a486f73743a20640d0a0d0a";
  EXPECT_EQ(Client("raw " + post, kNobody)["status"], 400);
  auto audit = Ctl("--json audit");
  EXPECT_NE(audit.output.find("api.bad_request"), std::string::npos) << audit.output;
  EXPECT_EQ(Ctl("health").status, 0);
}

// Abuse of the socket that holds today and must keep holding.
TEST_F(SecurityTest, SocketAbuse) {
  int n = 0;
  auto hex = [&](const std::string& s) {
    const std::string file = (dir_.path() / ("req" + std::to_string(++n))).string();
    std::ofstream(file, std::ios::binary) << s;
    ::chmod(file.c_str(), 0644);
    return " " + file;
  };
  auto post = [&](const std::string& path, const std::string& body) {
    return "POST " + path + " HTTP/1.1\r\nHost: d\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  };
  // Oversize body and headers, bad JSON, deep nesting, unknown endpoints.
  EXPECT_EQ(Client("rawfile" + hex(post("/v1/deny", std::string(2 << 20, ' '))))["status"], 413);
  EXPECT_EQ(Client("rawfile" + hex("GET /v1/health HTTP/1.1\r\nX: " + std::string(20000, 'a') +
                                "\r\n\r\n"))["status"],
            431);
  EXPECT_EQ(Client("rawfile" + hex(post("/v1/deny", "{not json")))["status"], 400);
  EXPECT_EQ(Client("rawfile" + hex(post("/v1/deny", std::string(100000, '[') +
                                                     std::string(100000, ']'))))["status"],
            400);
  EXPECT_EQ(Client("rawfile" + hex("GET /v1/nothing HTTP/1.1\r\nHost: d\r\n\r\n"))["status"], 404);
  EXPECT_EQ(Client("rawfile" + hex("BREW /v1/health HTTP/1.1\r\nHost: d\r\n\r\n"))["status"], 404);
  // The route table against a reader (nobody is one here) and an admin: a reader learns that
  // an unknown GET is unknown, but may write nothing, known or not; a placeholder takes the rest
  // of the path and its handler refuses what is not a digest (no traversal into other routes).
  auto raw = [&](const std::string& req, const std::string& as = "") {
    return Client("rawfile" + hex(req), as)["status"];
  };
  EXPECT_EQ(raw("GET /v1/nothing HTTP/1.1\r\nHost: d\r\n\r\n", kNobody), 404);
  EXPECT_EQ(raw(post("/v1/nothing", "{}"), kNobody), 403);
  EXPECT_EQ(raw(post("/v1/gc", "{}"), kNobody), 403);
  EXPECT_EQ(raw("DELETE /v1/images/sha256:" + std::string(64, 'a') + " HTTP/1.1\r\nHost: d\r\n\r\n",
                kNobody),
            403);
  EXPECT_EQ(raw(post("/v1/policy/eval", "{}"), kNobody), 400);  // readers may ask; body refused
  EXPECT_EQ(raw("GET /v1/images/../deny HTTP/1.1\r\nHost: d\r\n\r\n"), 400);
  EXPECT_EQ(raw("DELETE /v1/deny/..%2f..%2fleases HTTP/1.1\r\nHost: d\r\n\r\n"), 400);
  EXPECT_EQ(raw("GET /v1/health/ HTTP/1.1\r\nHost: d\r\n\r\n"), 404);
  EXPECT_EQ(Client("rawfile" + hex("garbage\r\n\r\n"))["status"], 400);
  // 1000 idle connections, then a real request is answered.
  auto idle = Client("idle 1000", kNobody);
  EXPECT_EQ(idle["status"], 200) << idle.dump();
  std::printf("health with 1000 idle connections open: %.1f ms\n", idle["ms"].get<double>());
  // Not a performance figure: a request queued behind idle connections would wait for their
  // 30 s timeouts; anything under a second means it was served alongside them.
  EXPECT_LT(idle["ms"].get<double>(), 1000.0) << idle.dump();
  // A client sending its headers slowly holds nobody else up.
  EXPECT_EQ(Client("slow", kNobody)["other_status"], 200);
  EXPECT_EQ(Ctl("health").status, 0);
}

}  // namespace
}  // namespace digestd::daemon
