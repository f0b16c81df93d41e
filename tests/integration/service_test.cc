// digestd as a process (root, as in CI): a real registry, the daemon started from a config file,
// driven through its Unix socket by digestctl and by raw requests, with real peer credentials.

#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "integration/daemon_fixture.h"
#include "testing/process_util.h"

namespace digestd::daemon {
namespace {

using digestd::testing::ChildProcess;
using digestd::testing::Slurp;

// Sends raw bytes on a new connection to `socket` and returns what comes back until EOF (or
// nothing after 5 s).
std::string Raw(const std::string& socket, const std::string& bytes) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket.data(), socket.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST_F(DaemonTest, PullThroughTheSocketThenReadTheImageFromTheMount) {
  PushSigned("svc/busybox");
  auto pull = Ctl("pull " + registry_->host() + "/svc/busybox:v1");
  ASSERT_EQ(pull.status, 0) << pull.output << Slurp(log_);
  EXPECT_NE(pull.output.find("policy"), std::string::npos) << pull.output;
  EXPECT_NE(pull.output.find("committed"), std::string::npos) << pull.output;
  const auto at = pull.output.find("rootfs   ");
  ASSERT_NE(at, std::string::npos) << pull.output;
  const std::string rootfs = pull.output.substr(at + 9, pull.output.find('\n', at) - at - 9);
  EXPECT_EQ(Slurp(rootfs + "/hello.txt"), "hello\n");
  auto images = Ctl("images");
  EXPECT_NE(images.output.find("svc/busybox:v1"), std::string::npos) << images.output;
  auto json = Ctl("--json images");
  EXPECT_NE(json.output.find("\"digest\":\"sha256:"), std::string::npos) << json.output;
  // A denied digest: gone from the mount at once, and pulling it again is refused.
  const std::string manifest = Field(pull.output, "manifest");
  ASSERT_EQ(Ctl("deny add " + manifest + " --reason test").status, 0);
  EXPECT_FALSE(fs::exists(rootfs + "/hello.txt"));
  auto denied = Ctl("pull " + registry_->host() + "/svc/busybox:v1");
  EXPECT_EQ(denied.status, 1) << denied.output;
  EXPECT_NE(denied.output.find("deny list"), std::string::npos) << denied.output;
  ASSERT_EQ(Ctl("deny rm " + manifest).status, 0);
  EXPECT_EQ(Slurp(rootfs + "/hello.txt"), "hello\n");

  // An unsigned image is refused with the policy's reason; nothing of it is in the mount.
  PushBusybox("svc/unsigned:v1");
  auto refused = Ctl("pull " + registry_->host() + "/svc/unsigned:v1");
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find("refused"), std::string::npos) << refused.output;
  // For people: one line naming the rule and the scope once, then the next step; no JSON.
  const std::string unsigned_ref = registry_->host() + "/svc/unsigned:v1";
  EXPECT_NE(refused.output.find("denied by rule sigstoreSigned (scope "), std::string::npos)
      << refused.output;
  EXPECT_NE(refused.output.find("next: digestctl explain " + unsigned_ref), std::string::npos)
      << refused.output;
  EXPECT_EQ(refused.output.find("{\""), std::string::npos) << refused.output;
  EXPECT_EQ(refused.output.find("policy denies"), std::string::npos) << refused.output;
  auto json_refused = Ctl("--json pull " + unsigned_ref);
  EXPECT_EQ(json_refused.status, 1);
  EXPECT_NE(json_refused.output.find("\"type\":\"policy\""), std::string::npos) << json_refused.output;
  // The audit log: a table for people, the API's NDJSON with --json.
  auto audit = Ctl("audit");
  EXPECT_NE(audit.output.find("policy.denied"), std::string::npos) << audit.output;
  EXPECT_NE(audit.output.find("TIME (UTC)"), std::string::npos) << audit.output;
  EXPECT_EQ(audit.output.find("{\""), std::string::npos) << audit.output;
  auto audit_json = Ctl("audit --json");  // flags after the subcommand too
  EXPECT_NE(audit_json.output.find("\"seq\""), std::string::npos) << audit_json.output;
  EXPECT_NE(audit_json.output.find("\"type\":\"policy.denied\""), std::string::npos);
  auto metrics = Ctl("metrics");
  EXPECT_NE(metrics.output.find("digestd_pulls_total{result=\"ok\"} 1"), std::string::npos)
      << metrics.output;
  // Failed: the denied digest, the unsigned image, and the unsigned image again with --json.
  EXPECT_NE(metrics.output.find("digestd_pulls_total{result=\"failed\"} 3"), std::string::npos)
      << metrics.output;
  EXPECT_NE(metrics.output.find("digestd_pull_failures_total{reason=\"permission\"} 3"),
            std::string::npos)
      << metrics.output;
  EXPECT_NE(metrics.output.find("digestd_fuse_request_seconds_bucket{le=\"+Inf\"}"),
            std::string::npos)
      << metrics.output;
  EXPECT_EQ(metrics.output.find("digestd_fuse_request_seconds_count 0\n"), std::string::npos)
      << metrics.output;
}

TEST_F(DaemonTest, PoststopHookOfARuncContainerWipesTheTenantsLease) {
  PushSigned("team-a/app");
  ASSERT_EQ(builder_.AddLayer("t1", "echo b-only > b.txt"), "");
  ASSERT_EQ(builder_.Push("t1", registry_->host() + "/team-b/app:v1"), "");
  Sign("team-b/app", DigestOf("team-b/app:v1"));
  const std::string ref_a = registry_->host() + "/team-a/app:v1";
  const std::string ref_b = registry_->host() + "/team-b/app:v1";
  auto pull_a = Ctl("pull --tenant team-a " + ref_a);
  ASSERT_EQ(pull_a.status, 0) << pull_a.output;
  auto pull_b = Ctl("pull --tenant team-b " + ref_b);
  ASSERT_EQ(pull_b.status, 0) << pull_b.output;
  ASSERT_EQ(Ctl("lease create --id la --tenant team-a --container digestd-hook-test " + ref_a).status, 0);
  ASSERT_EQ(Ctl("lease create --id lb --tenant team-b " + ref_b).status, 0);
  auto dup = Ctl("lease create --id la --tenant team-a " + ref_a);
  EXPECT_NE(dup.status, 0);
  EXPECT_NE(dup.output.find("exists"), std::string::npos) << dup.output;
  const std::string manifest_a = Field(pull_a.output, "manifest");
  ASSERT_EQ(manifest_a.size(), 71u) << pull_a.output;
  const std::string rootfs_b = Field(pull_b.output, "rootfs");
  const fs::path blob_a =
      dir_.path() / "store/blobs/sha256" / manifest_a.substr(7, 2) / manifest_a.substr(7);
  ASSERT_TRUE(fs::exists(blob_a));

  // Another tenant's container whose annotations name team-a's lease (with or without team-a's
  // tenant) is refused and audited, and wipes nothing; so is a hook release of a lease bound to
  // no container (found by review: a state document naming job-a wiped team-a's blobs).
  auto hook_as = [&](const std::string& id, const std::string& annotations) {
    const std::string state = "{\"ociVersion\":\"1.0.2\",\"id\":\"" + id +
                              "\",\"status\":\"stopped\",\"bundle\":\"/\",\"annotations\":" +
                              annotations + "}";
    std::ofstream(dir_.path() / "state.json") << state;
    return Shell(ctl_ + " --socket " + socket_ + " hook poststop < " +
                 (dir_.path() / "state.json").string() + " 2>&1");
  };
  for (const auto& ann : {std::string("{\"org.digestd.lease\":\"la\"}"),
                          std::string("{\"org.digestd.lease\":\"la\",\"org.digestd.tenant\":\"team-a\"}")}) {
    auto forged = hook_as("job-b", ann);
    EXPECT_NE(forged.status, 0) << forged.output;
    EXPECT_NE(forged.output.find("not released"), std::string::npos) << forged.output;
  }
  auto wrong_tenant = hook_as("digestd-hook-test",
                              "{\"org.digestd.lease\":\"la\",\"org.digestd.tenant\":\"team-b\"}");
  EXPECT_NE(wrong_tenant.status, 0) << wrong_tenant.output;
  auto unbound = hook_as("job-b", "{\"org.digestd.lease\":\"lb\"}");
  EXPECT_NE(unbound.status, 0) << unbound.output;
  EXPECT_NE(unbound.output.find("bound to no container"), std::string::npos) << unbound.output;
  EXPECT_TRUE(fs::exists(blob_a));
  EXPECT_NE(Ctl("lease ls").output.find("la "), std::string::npos);
  EXPECT_NE(Ctl("audit").output.find("lease.release.refused"), std::string::npos);

  // A real runc container from team-a's image whose config names the lease and lists
  // `digestctl hook poststop` as its poststop hook.
  const std::string lowerdir = Slurp(Field(pull_a.output, "lowerdir"));
  const std::string t = (dir_.path() / "ctr").string();
  const std::string script =
      "set -e; T=" + t + "; mkdir -p $T; mount -t tmpfs tmpfs $T; mkdir -p $T/u $T/w $T/b/rootfs; "
      "mount -t overlay overlay -o lowerdir=" + lowerdir + ",upperdir=$T/u,workdir=$T/w $T/b/rootfs; "
      "cd $T/b; runc spec; "
      "jq --arg ctl " + ctl_ + " --arg sock " + socket_ + " "
      "'.process.args=[\"/bin/busybox\",\"sh\",\"-c\",\"echo in-container\"] | .process.terminal=false "
      "| .annotations={\"org.digestd.lease\":\"la\"} "
      "| .hooks={\"poststop\":[{\"path\":$ctl,\"args\":[\"digestctl\",\"--socket\",$sock,\"hook\",\"poststop\"]}]}' "
      "config.json > c.json; mv c.json config.json; "
      "runc --root $T/runc run --bundle $T/b digestd-hook-test </dev/null";
  const std::string script_path = (dir_.path() / "hook.sh").string();
  std::ofstream(script_path) << script << "\n";
  auto run = Shell("unshare -m --propagation private sh " + script_path + " 2>&1");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("in-container"), std::string::npos) << run.output;

  // The hook released team-a's lease with wipe; team-b's image is untouched.
  auto leases = Ctl("lease ls");
  EXPECT_EQ(leases.output.find("la "), std::string::npos) << leases.output;
  EXPECT_NE(leases.output.find("lb "), std::string::npos) << leases.output;
  EXPECT_FALSE(fs::exists(blob_a));
  EXPECT_EQ(Ctl("images").output.find("team-a/app"), std::string::npos);
  EXPECT_EQ(Slurp(rootfs_b + "/b.txt"), "b-only\n");
  auto audit = Ctl("audit");
  EXPECT_NE(audit.output.find("lease.wiped"), std::string::npos) << audit.output;
  // A hook without the annotation does nothing, and says so.
  auto none = Shell("echo '{\"ociVersion\":\"1.0.2\",\"id\":\"x\",\"status\":\"stopped\",\"bundle\":\"/\"}' | " +
                    ctl_ + " --socket " + socket_ + " hook poststop 2>&1");
  EXPECT_EQ(none.status, 0) << none.output;
  EXPECT_NE(none.output.find("nothing to release"), std::string::npos) << none.output;
  auto garbage = Shell("echo 'not json' | " + ctl_ + " --socket " + socket_ + " hook poststop 2>&1");
  EXPECT_EQ(garbage.status, 2) << garbage.output;
}

TEST_F(DaemonTest, InspectListExplainAndRemove) {
  PushSigned("svc/inspect");
  const std::string ref = registry_->host() + "/svc/inspect:v1";
  auto pull = Ctl("pull " + ref);
  ASSERT_EQ(pull.status, 0) << pull.output;
  const std::string manifest = Field(pull.output, "manifest");
  ASSERT_EQ(Ctl("lease create --id keep --tenant t " + ref).status, 0);

  auto inspect = Ctl("--json inspect " + ref);
  ASSERT_EQ(inspect.status, 0) << inspect.output;
  auto j = nlohmann::json::parse(inspect.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << inspect.output;
  EXPECT_EQ(j["manifest"], manifest);
  EXPECT_EQ(j["reference"], ref);
  EXPECT_EQ(j["platform"], "linux/amd64");
  EXPECT_EQ(j["policy"]["requirement"], "sigstoreSigned");
  EXPECT_FALSE(j["policy"]["signer"].get<std::string>().empty());
  EXPECT_EQ(j["leases"], nlohmann::json::array({"keep"}));
  ASSERT_EQ(j["layers"].size(), 1u);
  EXPECT_GT(j["layers"][0]["entries"].get<std::uint64_t>(), 1u);
  EXPECT_GT(j["size"].get<std::uint64_t>(), 0u);
  auto human = Ctl("inspect " + manifest);
  EXPECT_NE(human.output.find("sigstoreSigned"), std::string::npos) << human.output;
  // Times for people are ISO 8601, said to be UTC; no epoch seconds.
  EXPECT_TRUE(std::regex_search(human.output, std::regex(R"(pulled +20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-9:]{8}Z \(UTC\))")))
      << human.output;
  EXPECT_EQ(human.output.find(std::to_string(j["pulled_at"].get<std::int64_t>())), std::string::npos)
      << human.output;

  EXPECT_NE(Ctl("blobs").output.find(manifest), std::string::npos);
  EXPECT_NE(Ctl("layers").output.find(j["layers"][0]["digest"].get<std::string>()), std::string::npos);
  auto allowed = Ctl("explain " + ref);
  EXPECT_EQ(allowed.status, 0) << allowed.output;
  EXPECT_NE(allowed.output.find("allowed if signed"), std::string::npos) << allowed.output;
  auto other = Ctl("explain docker.io/library/alpine:3");
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("denied"), std::string::npos) << other.output;
  EXPECT_EQ(Ctl("explain 'NOT A REF'").status, 2);
  EXPECT_EQ(Ctl("inspect sha256:" + std::string(64, 'a')).status, 1);

  // Removing drops the references; the lease still pins the content.
  auto rm = Ctl("rm " + manifest);
  ASSERT_EQ(rm.status, 0) << rm.output;
  EXPECT_EQ(Ctl("images").output.find("svc/inspect"), std::string::npos);
  EXPECT_EQ(Ctl("inspect " + manifest).status, 0);
  ASSERT_EQ(Ctl("lease release keep").status, 0);
  ASSERT_EQ(Ctl("gc").status, 0);
  EXPECT_EQ(Ctl("inspect " + manifest).status, 1);
  EXPECT_FALSE(fs::exists(Field(pull.output, "rootfs")));
}

TEST_F(DaemonTest, ScrubFindsRotWhileServingAndRepairStopsServingIt) {
  PushSigned("svc/scrub");
  const std::string ref = registry_->host() + "/svc/scrub:v1";
  auto pull = Ctl("pull " + ref);
  ASSERT_EQ(pull.status, 0) << pull.output;
  const fs::path busybox = fs::path(Field(pull.output, "rootfs")) / "bin" / "busybox";
  auto before = Shell("sha256sum " + busybox.string() + " | cut -d' ' -f1");
  ASSERT_EQ(before.status, 0) << before.output;
  const std::string hex = before.output.substr(0, 64);
  auto clean = Ctl("scrub --rate 0");
  EXPECT_EQ(clean.status, 0) << clean.output;
  EXPECT_NE(clean.output.find("pass complete"), std::string::npos) << clean.output;
  // Rot: the file object's bytes change on disk (same size) under the running daemon.
  const fs::path object = dir_.path() / "store" / "files" / "sha256" / hex.substr(0, 2) / hex;
  ASSERT_TRUE(fs::exists(object)) << object;
  ASSERT_EQ(Shell("chmod u+w " + object.string() + " && printf ROT | dd of=" + object.string() +
                  " bs=1 seek=100 conv=notrunc status=none")
                .status,
            0);
  auto found = Ctl("scrub --rate 0 --restart");
  EXPECT_EQ(found.status, 1) << found.output;
  EXPECT_NE(found.output.find("file-object-mismatch"), std::string::npos) << found.output;
  EXPECT_NE(Ctl("metrics").output.find("digestd_scrub_problems_total 1"), std::string::npos);
  auto repaired = Ctl("scrub --rate 0 --restart --repair");
  EXPECT_EQ(repaired.status, 1) << repaired.output;
  EXPECT_NE(repaired.output.find("[repaired]"), std::string::npos) << repaired.output;
  // The mount no longer serves the damaged bytes; a pull restores the image whole.
  auto gone = Shell("timeout -s KILL 20 sha256sum " + busybox.string());
  EXPECT_EQ(gone.output.find(hex), std::string::npos) << gone.output;
  EXPECT_NE(gone.output.find("ROT"), 0u);
  auto again = Ctl("pull " + ref);
  ASSERT_EQ(again.status, 0) << again.output;
  auto after = Shell("timeout -s KILL 20 sha256sum " + busybox.string() + " | cut -d' ' -f1");
  EXPECT_EQ(after.output.substr(0, 64), hex);
  EXPECT_EQ(Ctl("scrub --rate 0 --restart").status, 0);
  EXPECT_NE(Ctl("--json audit").output.find("store.scrub.corrupt"), std::string::npos);
}

TEST_F(DaemonTest, RevokingTheSignerWithdrawsCachedImagesFromTheMount) {
  PushSigned("svc/revoke");
  const std::string ref = registry_->host() + "/svc/revoke:v1";
  auto pull = Ctl("pull " + ref);
  ASSERT_EQ(pull.status, 0) << pull.output;
  const std::string rootfs = Field(pull.output, "rootfs");
  const std::string manifest = Field(pull.output, "manifest");
  ASSERT_EQ(Slurp(rootfs + "/hello.txt"), "hello\n");
  auto j = nlohmann::json::parse(Ctl("--json inspect " + manifest).output, nullptr, false);
  const std::string signer = j["policy"]["signer"];
  ASSERT_TRUE(signer.starts_with("sha256:")) << signer;

  std::ofstream(dir_.path() / "trust.json")
      << R"({"keys":[],"revocations":[{"id":")" << signer << R"(","reason":"key leaked"}]})";
  auto reload = Ctl("reload");
  ASSERT_EQ(reload.status, 0) << reload.output;
  EXPECT_FALSE(fs::exists(rootfs));  // at once: the kernel's cached entries were dropped
  auto inspect = nlohmann::json::parse(Ctl("--json inspect " + manifest).output, nullptr, false);
  EXPECT_EQ(inspect["withdrawn"], true);
  auto audit = Ctl("audit");
  EXPECT_NE(audit.output.find("image.withdrawn"), std::string::npos) << audit.output;
  EXPECT_NE(audit.output.find("key leaked"), std::string::npos) << audit.output;
  EXPECT_NE(Ctl("metrics").output.find("digestd_hidden_digests 2"), std::string::npos);
  auto again = Ctl("pull " + ref);
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_NE(again.output.find("revoked"), std::string::npos) << again.output;

  // Trust restored: the image comes back.
  std::ofstream(dir_.path() / "trust.json") << R"({"keys":[]})";
  ASSERT_EQ(Ctl("reload").status, 0);
  EXPECT_EQ(Slurp(rootfs + "/hello.txt"), "hello\n");
}

TEST_F(DaemonTest, MalformedRequestsGet4xxAndOthersAreStillServed) {
  // A client that connects and says nothing holds one connection, not the daemon.
  const int idle = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  ASSERT_EQ(::connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);

  auto post = [&](const std::string& target, const std::string& body) {
    return Raw(socket_, "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  };
  EXPECT_EQ(Raw(socket_, "garbage\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  auto bad_json = post("/v1/pull", "{\"reference\":");
  EXPECT_EQ(bad_json.substr(0, 12), "HTTP/1.1 400") << bad_json;
  EXPECT_NE(bad_json.find("not valid JSON"), std::string::npos) << bad_json;
  auto wrong_type = post("/v1/pull", "{\"reference\":5}");
  EXPECT_EQ(wrong_type.substr(0, 12), "HTTP/1.1 400") << wrong_type;
  EXPECT_NE(wrong_type.find("must be a string"), std::string::npos) << wrong_type;
  auto not_object = post("/v1/deny", "[1,2]");
  EXPECT_EQ(not_object.substr(0, 12), "HTTP/1.1 400") << not_object;
  auto bad_digest = post("/v1/deny", "{\"digest\":\"sha256:../../etc\"}");
  EXPECT_EQ(bad_digest.substr(0, 12), "HTTP/1.1 400") << bad_digest;
  auto huge = post("/v1/pull", "{\"reference\":\"" + std::string(2u << 20, 'a') + "\"}");
  EXPECT_EQ(huge.substr(0, 12), "HTTP/1.1 413") << huge.substr(0, 200);
  auto unknown = Raw(socket_, "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(unknown.substr(0, 12), "HTTP/1.1 404") << unknown;
  auto bad_ref = post("/v1/pull", "{\"reference\":\"UPPER/Case::bad\"}");
  EXPECT_EQ(bad_ref.substr(0, 12), "HTTP/1.1 400") << bad_ref;
  for (const char* body : {"{\"max_bytes\":-1}", "{\"rate_bytes_per_s\":\"fast\"}",
                           "{\"repair\":1}", "{\"everything\":true}", "[]"}) {
    auto bad_scrub = post("/v1/scrub", body);
    EXPECT_EQ(bad_scrub.substr(0, 12), "HTTP/1.1 400") << body << ": " << bad_scrub;
  }

  EXPECT_EQ(Ctl("health").status, 0);
  ::close(idle);
  EXPECT_TRUE(daemon_.Running());
}

TEST_F(DaemonTest, RolesComeFromPeerCredentials) {
  const std::string reader = "setpriv --reuid=65534 --regid=65534 --clear-groups";
  const std::string stranger = "setpriv --reuid=65533 --regid=65534 --clear-groups";
  EXPECT_EQ(Ctl("health", reader).status, 0) << Ctl("health", reader).output;
  for (const char* scrub : {"scrub", "scrub --repair --rate 0"}) {
    auto reader_scrub = Ctl(scrub, reader);
    EXPECT_NE(reader_scrub.status, 0);
    EXPECT_NE(reader_scrub.output.find("403"), std::string::npos) << reader_scrub.output;
  }
  auto reader_pull = Ctl("pull " + registry_->host() + "/x/y:v1", reader);
  EXPECT_NE(reader_pull.status, 0);
  EXPECT_NE(reader_pull.output.find("403"), std::string::npos) << reader_pull.output;
  EXPECT_NE(reader_pull.output.find("role reader"), std::string::npos) << reader_pull.output;
  auto stranger_health = Ctl("health", stranger);
  EXPECT_NE(stranger_health.status, 0);
  EXPECT_NE(stranger_health.output.find("403"), std::string::npos) << stranger_health.output;
  // Not even the socket for anyone outside the group.
  auto outsider = Ctl("health", "setpriv --reuid=65533 --regid=65533 --clear-groups");
  EXPECT_EQ(outsider.status, 3) << outsider.output;
  auto audit = Ctl("--json audit");
  EXPECT_NE(audit.output.find("api.forbidden"), std::string::npos) << audit.output;
  EXPECT_NE(audit.output.find("\"actor\":65533"), std::string::npos) << audit.output;
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, 65534u);
}

TEST_F(DaemonTest, ReloadKeepsTheOldPolicyWhenTheNewOneIsBad) {
  PushSigned("svc/reload");
  PushBusybox("svc/unsigned:v1");  // never signed: the policy in force refuses it
  std::ofstream(dir_.path() / "policy.json") << "{ this is not json";
  auto reload = Ctl("reload");
  EXPECT_NE(reload.status, 0) << reload.output;
  EXPECT_NE(reload.output.find("policy"), std::string::npos) << reload.output;
  // The same through the signal: wait for that reload's own audit event (one more refusal),
  // so the pulls below run after it, not racing it.
  auto refused_reloads = [&] {
    auto audit = Ctl("--json audit");
    std::size_t n = 0;
    std::istringstream in(audit.output);
    for (std::string line; std::getline(in, line);) {
      auto e = nlohmann::json::parse(line, nullptr, false);
      if (e.is_object() && e.value("type", "") == "policy.reload" && e.value("ok", true) == false) ++n;
    }
    return n;
  };
  const std::size_t before_signal = refused_reloads();
  ASSERT_GE(before_signal, 1u);
  ::kill(daemon_.pid(), SIGHUP);
  for (int i = 0; i < 500 && refused_reloads() == before_signal; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(refused_reloads(), before_signal + 1) << Ctl("audit").output;
  // The old policy still decides, both ways: it did not fail open.
  auto unsigned_pull = Ctl("pull " + registry_->host() + "/svc/unsigned:v1");
  EXPECT_NE(unsigned_pull.status, 0) << unsigned_pull.output;
  EXPECT_NE(unsigned_pull.output.find("no signatures found"), std::string::npos)
      << unsigned_pull.output;
  auto pull = Ctl("pull " + registry_->host() + "/svc/reload:v1");
  EXPECT_EQ(pull.status, 0) << pull.output;
}

TEST_F(DaemonTest, TellsSystemdWhenReady) {
  daemon_.Stop();
  (void)::umount2(mnt_.c_str(), MNT_DETACH);
  // A NOTIFY_SOCKET as systemd provides for Type=notify.
  const std::string notify = (dir_.path() / "notify.sock").string();
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, notify.data(), notify.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval tv{.tv_sec = 20, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
  ChildProcess d;
  Start(d, "notified.log");
  ::unsetenv("NOTIFY_SOCKET");
  char buf[256] = {};
  // First the mount's session goes into the fd store (live restart), then READY=1.
  std::vector<std::string> messages;
  while (messages.empty() || messages.back() != "READY=1") {
    const ssize_t n = ::recv(fd, buf, sizeof(buf) - 1, 0);  // fds it carries are closed
    ASSERT_GT(n, 0) << Slurp(log_);
    messages.emplace_back(buf, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(messages, (std::vector<std::string>{"FDSTORE=1\nFDPOLL=0\nFDNAME=fuse", "FDSTORE=1\nFDPOLL=0\nFDNAME=fuse-state",
                                                "READY=1"}));
  // By then the mount and the socket were up.
  EXPECT_EQ(Ctl("health").status, 0);
  ::kill(d.pid(), SIGTERM);
  EXPECT_EQ(d.Wait(), 0);
  const ssize_t m = ::recv(fd, buf, sizeof(buf) - 1, 0);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(m, 0))), "STOPPING=1");
  ::close(fd);
}

TEST_F(DaemonTest, OneDaemonPerStoreAndSigtermStopsCleanly) {
  ChildProcess second;
  const std::string log2 = (dir_.path() / "second.log").string();
  ASSERT_TRUE(second.Start({DIGESTD_BIN, "--config", (dir_.path() / "digestd.toml").string()}, log2));
  const int status = second.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  EXPECT_NE(Slurp(log2).find("in use by another process"), std::string::npos) << Slurp(log2);
  EXPECT_EQ(Ctl("health").status, 0);  // the first one is unaffected

  ::kill(daemon_.pid(), SIGTERM);
  const int first = daemon_.Wait();
  EXPECT_TRUE(WIFEXITED(first) && WEXITSTATUS(first) == 0) << Slurp(log_);
  auto mi = Shell("grep -c ' " + mnt_ + " ' /proc/self/mountinfo");
  EXPECT_EQ(mi.output, "0\n");
  EXPECT_FALSE(fs::exists(socket_));
}

// Handing pulled images to containerd's content store is best effort: when containerd cannot be
// reached the pull still succeeds, and the failure is logged and audited.
class HandoffTest : public DaemonTest {
 protected:
  void SetUp() override {
    extra_config_ =
        "[snapshotter]\ncontainerd_socket = \"/nonexistent/containerd.sock\"\n"
        "seed_namespaces = [\"default\"]\n";
    DaemonTest::SetUp();
  }
};

TEST_F(HandoffTest, AnUnreachableContainerdDoesNotFailThePull) {
  PushSigned("svc/handoff");
  auto pull = Ctl("pull " + registry_->host() + "/svc/handoff:v1");
  ASSERT_EQ(pull.status, 0) << pull.output << Slurp(log_);
  auto audit = Ctl("audit");
  EXPECT_NE(audit.output.find("pull.handoff.failed"), std::string::npos) << audit.output;
  EXPECT_NE(audit.output.find("namespace default"), std::string::npos) << audit.output;
  auto metrics = Ctl("metrics");
  EXPECT_NE(metrics.output.find("digestd_handoff_failures_total 1\n"), std::string::npos)
      << metrics.output;
}

}  // namespace
}  // namespace digestd::daemon
