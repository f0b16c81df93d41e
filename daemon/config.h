#pragma once

// digestd's one configuration file (TOML), parsed strictly: an unknown key or a bad value is
// refused with the file and the key named. The format is documented in docs/operations.md.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "store/tree.h"
#include "verify/oci.h"

namespace digestd::daemon {

struct MirrorConfig {
  std::string host;           // host[:port]
  bool insecure = false;      // plain HTTP
  std::string ca_file;        // extra CA bundle for TLS
  bool resolve_tags = false;  // may this mirror resolve tags? (digests always may come from it)
};

struct RegistryConfig {
  std::string host;  // host[:port] as in references ("docker.io" is served by registry-1.docker.io)
  bool insecure = false;
  std::string ca_file;
  std::string auth_file;    // containers/docker auth.json; empty: the global [auth] file
  int max_concurrency = 4;  // concurrent requests to this registry
  std::vector<MirrorConfig> mirrors;  // tried in order before the origin for content by digest
};

// [daemon]: the service's control socket, mount and who may use them.
struct DaemonConfig {
  std::filesystem::path socket = "/run/digestd/digestd.sock";
  std::string socket_group;  // group owning the socket (mode 0660); empty: the daemon's group
  std::filesystem::path mountpoint = "/run/digestd/mnt";
  // Under a service manager (systemd with FileDescriptorStoreMax=, or digestd-supervise): on
  // SIGTERM hand the mount's session over to the next process instead of unmounting
  // (docs/operations.md, "Restarts and upgrades"). Without a manager the mount is unmounted.
  bool handover = true;
  // Peers (SO_PEERCRED) allowed to change things: pull, remove, gc, deny, leases, reload.
  std::vector<std::uint32_t> admin_uids = {0};
  std::vector<std::uint32_t> admin_gids;
  // Peers allowed to read: list, inspect, audit, metrics, health.
  std::vector<std::uint32_t> reader_uids;
  std::vector<std::uint32_t> reader_gids;
};

// [snapshotter]: containerd's remote snapshotter (proxy plugin) served over a Unix socket.
struct SnapshotterConfig {
  bool enabled = false;
  std::filesystem::path socket = "/run/digestd/snapshotter.sock";
  // Upper and work directories of container snapshots (on a filesystem overlayfs accepts as
  // upper: not the FUSE mount, not tmpfs if containers must survive a reboot).
  std::filesystem::path root = "/var/lib/digestd-snapshots";
  bool wipe = true;  // overwrite a container's files before removing its snapshot
  // Pull (and verify, under the policy) an image CRI asks for that digestd does not hold.
  bool pull_on_demand = false;
  // After each pull, copy the image's verified blobs into containerd's content store in these
  // namespaces, so that clients that download before they unpack (`ctr image pull`) fetch
  // nothing from the registry. Needs containerd_socket. Held by a containerd lease for seed_hold.
  std::filesystem::path containerd_socket;
  std::vector<std::string> seed_namespaces;
  std::chrono::seconds seed_hold{3600};
};

// [audit]: the audit log's retention and the bound on what one client can make it record.
struct AuditConfig {
  std::uint64_t max_bytes = std::uint64_t{256} << 20;  // oldest events go past this; 0: no bound
  std::int64_t max_age_days = 90;                      // older events go; 0: kept by size only
  // Refusals (forbidden or malformed requests) recorded per peer uid and minute; the rest are
  // counted (digestd_audit_suppressed_total) and reported on the next recorded refusal.
  int refusals_per_minute = 60;
};

struct Config {
  std::filesystem::path store_root = "/var/lib/digestd";
  std::uint64_t quota_bytes = 0;
  std::filesystem::path policy_path = "/etc/digestd/policy.json";
  std::filesystem::path trust_path;  // optional
  std::string auth_file;             // global auth.json; optional

  verify::Platform platform = verify::HostPlatform();
  int layer_concurrency = 4;
  std::size_t manifest_max_bytes = verify::kDefaultManifestCap;
  std::uint64_t blob_max_bytes = std::uint64_t{64} << 30;
  int retries = 4;
  // [unpack]: bounds on what one layer may unpack to (entries, bytes of files); past them the
  // layer is refused as a tar bomb.
  store::UnpackLimits unpack_limits;

  SnapshotterConfig snapshotter;

  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds first_byte_timeout{30'000};
  std::chrono::milliseconds stall_timeout{30'000};
  // A whole blob (or manifest) download must finish within blob_deadline_min plus its size at
  // min_rate_bytes_per_s, whatever trickles in: a registry sending one byte per stall_timeout
  // cannot hold a pull forever.
  std::chrono::milliseconds blob_deadline_min{60'000};
  std::uint64_t min_rate_bytes_per_s = 256 << 10;

  AuditConfig audit;

  std::vector<RegistryConfig> registries;
  DaemonConfig daemon;

  // The registry's section, or nullptr when it has none (defaults apply: TLS, no mirrors).
  const RegistryConfig* FindRegistry(std::string_view host) const;
};

// How digestd was started: `digestd [--config FILE] [--check] [--version]`.
struct CommandLine {
  std::string config_path = "/etc/digestd/digestd.toml";
  bool check_only = false;  // validate config, policy and trust; open nothing
  bool version = false;
};
// An unknown argument is an error whose message is the usage line.
Result<CommandLine> ParseCommandLine(const std::vector<std::string>& args);

Result<Config> ParseConfig(std::string_view toml_text, std::string_view source);
Result<Config> LoadConfig(const std::filesystem::path& path);

// The group that owns the daemon's sockets: [daemon] socket_group, or the process's own.
Result<gid_t> SocketGroup(const DaemonConfig& daemon);

}  // namespace digestd::daemon
