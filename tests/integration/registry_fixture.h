#pragma once

// A real OCI registry (Debian's docker-registry) on a free loopback port with its own storage,
// and images built with umoci from busybox-static and pushed with skopeo. Everything lives in a
// temporary directory and is stopped and removed when the fixture goes away.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "testing/process_util.h"
#include "testing/test_util.h"

namespace digestd::testing {

class Registry {
 public:
  // `proxy_remote`: run as a pull-through cache of that URL. `htpasswd`: require Basic auth.
  explicit Registry(const std::filesystem::path& dir, std::string proxy_remote = "",
                    std::string htpasswd = "", std::string tls_cert = "", std::string tls_key = "")
      : dir_(dir), port_(FreePort()) {
    std::filesystem::create_directories(dir_ / "data");
    std::ofstream cfg(dir_ / "config.yml");
    cfg << "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\n"
        << "storage:\n  filesystem:\n    rootdirectory: " << (dir_ / "data").string()
        << "\n  delete:\n    enabled: true\n"
        << "http:\n  addr: 127.0.0.1:" << port_ << "\n";
    if (!tls_cert.empty()) {
      cfg << "  tls:\n    certificate: " << tls_cert << "\n    key: " << tls_key << "\n";
    }
    if (!proxy_remote.empty()) cfg << "proxy:\n  remoteurl: " << proxy_remote << "\n";
    if (!htpasswd.empty()) {
      cfg << "auth:\n  htpasswd:\n    realm: digestd-test\n    path: " << htpasswd << "\n";
    }
    cfg.close();
    process_.Start({"docker-registry", "serve", (dir_ / "config.yml").string()},
                   (dir_ / "registry.log").string());
    for (int i = 0; i < 250 && !CanConnect(port_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  bool Up() const { return CanConnect(port_); }
  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::filesystem::path log() const { return dir_ / "registry.log"; }
  std::string Log() const {
    std::ifstream in(log());
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

 private:
  std::filesystem::path dir_;
  int port_;
  ChildProcess process_;
};

// Builds OCI images in a layout directory with umoci. Each call returns "" on success or the
// failing command's output.
class ImageBuilder {
 public:
  explicit ImageBuilder(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
  }
  std::string layout() const { return (dir_ / "layout").string(); }

  // A single-layer busybox image at `tag`.
  std::string Busybox(const std::string& tag) {
    return Seq({"test -d " + layout() + " || umoci init --layout " + layout(),
                "umoci new --image " + layout() + ":" + tag,
                "rm -rf " + Bundle(tag) + " && umoci unpack --rootless --image " + layout() + ":" +
                    tag + " " + Bundle(tag),
                "mkdir -p " + Bundle(tag) + "/rootfs/bin && cp /bin/busybox " + Bundle(tag) +
                    "/rootfs/bin/busybox && echo hello > " + Bundle(tag) + "/rootfs/hello.txt",
                "umoci repack --image " + layout() + ":" + tag + " " + Bundle(tag)});
  }

  // Adds a layer to `tag` that runs `script` inside the unpacked rootfs (e.g. deletes files).
  std::string AddLayer(const std::string& tag, const std::string& script) {
    return Seq({"rm -rf " + Bundle(tag) + " && umoci unpack --rootless --image " + layout() + ":" +
                    tag + " " + Bundle(tag),
                "cd " + Bundle(tag) + "/rootfs && " + script,
                "umoci repack --image " + layout() + ":" + tag + " " + Bundle(tag)});
  }

  // Makes `tag` an OCI index of two busybox images, linux/amd64 and linux/arm64 (the arm64 one is
  // the same bytes with another config: enough to test platform selection).
  std::string MultiArch(const std::string& tag) {
    const std::string L = layout();
    return Seq({Busybox(tag + "-amd64").empty() ? "true" : "false",
                Busybox(tag + "-arm64").empty() ? "true" : "false",
                "umoci config --image " + L + ":" + tag + "-arm64 --architecture=arm64",
                "cd " + L + " && desc() { jq -c --arg t \"$1\" "
                "'.manifests[] | select(.annotations[\"org.opencontainers.image.ref.name\"]==$t) | "
                "{mediaType, digest, size}' index.json; } && "
                "A=$(desc " + tag + "-amd64 | jq -c '. + {platform:{os:\"linux\",architecture:\"amd64\"}}') && "
                "R=$(desc " + tag + "-arm64 | jq -c '. + {platform:{os:\"linux\",architecture:\"arm64\",variant:\"v8\"}}') && "
                "printf '{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[%s,%s]}' \"$A\" \"$R\" > idx.json && "
                "D=$(sha256sum idx.json | cut -d' ' -f1) && S=$(stat -c %s idx.json) && "
                "mv idx.json blobs/sha256/$D && "
                "jq --arg d sha256:$D --argjson s $S --arg t " + tag + " "
                "'.manifests += [{mediaType:\"application/vnd.oci.image.index.v1+json\",digest:$d,size:$s,"
                "annotations:{\"org.opencontainers.image.ref.name\":$t}}]' index.json > i2 && mv i2 index.json"});
  }

  // Pushes `tag` to `dest` (docker://...) with skopeo; `extra` adds flags (e.g. --format v2s2).
  std::string Push(const std::string& tag, const std::string& dest, const std::string& extra = "") {
    return Sh("skopeo copy --quiet --dest-tls-verify=false " + extra + " oci:" + layout() + ":" +
              tag + " docker://" + dest);
  }

 private:
  std::string Bundle(const std::string& tag) const { return (dir_ / ("bundle-" + tag)).string(); }
  // Runs commands in order, stopping at the first failure.
  static std::string Seq(const std::vector<std::string>& cmds) {
    for (const auto& c : cmds) {
      if (auto e = Sh(c); !e.empty()) return e;
    }
    return "";
  }
  static std::string Sh(const std::string& cmd) {
    auto r = Shell(cmd);
    return r.status == 0 ? "" : "command failed: " + cmd + "\n" + r.output;
  }
  std::filesystem::path dir_;
};

}  // namespace digestd::testing
