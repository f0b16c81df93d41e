#include "daemon/config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include "common/file.h"
#include "common/names.h"
#include "common/unix_socket.h"
#include "daemon/errors.h"
#include "verify/reference.h"

namespace digestd::daemon {
namespace {

struct Reader {
  std::string_view source;

  Error Bad(const std::string& key, const std::string& why) const {
    return DaemonError(Errc::kInvalidArgument, std::string(source) + ": " + key + ": " + why);
  }

  Result<void> OnlyKeys(const toml::table& t, const std::string& where,
                        std::initializer_list<std::string_view> allowed) const {
    for (const auto& [k, v] : t) {
      bool ok = false;
      for (auto a : allowed) ok = ok || k.str() == a;
      if (!ok) {
        return Bad(where.empty() ? std::string(k.str()) : where + "." + std::string(k.str()),
                   "unknown key");
      }
    }
    return {};
  }

  template <class T>
  Result<std::optional<T>> Get(const toml::table& t, std::string_view key,
                               const std::string& where) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::optional<T>();
    const std::string full = where.empty() ? std::string(key) : where + "." + std::string(key);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!n->is_string()) return Bad(full, "must be a string");
      return std::optional<T>(**n->as_string());
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!n->is_boolean()) return Bad(full, "must be true or false");
      return std::optional<T>(**n->as_boolean());
    } else {
      if (!n->is_integer()) return Bad(full, "must be an integer");
      const std::int64_t v = **n->as_integer();
      if (v < 0) return Bad(full, "must not be negative");
      return std::optional<T>(static_cast<T>(v));
    }
  }

  template <class T>
  Result<void> Set(const toml::table& t, std::string_view key, const std::string& where,
                   T& out) const {
    DIGESTD_ASSIGN_OR_RETURN(auto v, Get<T>(t, key, where));
    if (v) out = std::move(*v);
    return {};
  }

  // Validates and normalises (verify::NormalizeRegistryHost) a host in place, so lookups by a
  // reference's registry find it whatever case either was written in.
  Result<void> Host(const std::string& key, std::string& host) const {
    auto normal = verify::NormalizeRegistryHost(host);
    if (host.find('/') != std::string::npos || !normal) {
      return Bad(key, Quote(host) + " is not a registry host[:port]");
    }
    host = std::move(*normal);
    return {};
  }

  Result<void> Ms(const toml::table& t, std::string_view key, const std::string& where,
                  std::chrono::milliseconds& out) const {
    DIGESTD_ASSIGN_OR_RETURN(auto v, Get<std::int64_t>(t, key, where));
    if (v) {
      if (*v < 1 || *v > 3'600'000)
        return Bad(where + "." + std::string(key), "must be 1..3600000");
      out = std::chrono::milliseconds(*v);
    }
    return {};
  }
};

const toml::table* SubTable(const toml::table& t, std::string_view key) {
  const toml::node* n = t.get(key);
  return n ? n->as_table() : nullptr;
}

}  // namespace

const RegistryConfig* Config::FindRegistry(std::string_view host) const {
  auto normal = verify::NormalizeRegistryHost(host);
  if (!normal) return nullptr;
  for (const auto& r : registries) {
    if (r.host == *normal) return &r;
  }
  return nullptr;
}

namespace {

// [store]
Result<void> ParseStoreSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* s = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(*s, "store", {"root", "quota_bytes"}));
  std::string r = c.store_root.string();
  DIGESTD_RETURN_IF_ERROR(rd.Set(*s, "root", "store", r));
  if (r.empty() || r.front() != '/') return rd.Bad("store.root", "must be an absolute path");
  c.store_root = r;
  DIGESTD_RETURN_IF_ERROR(rd.Set(*s, "quota_bytes", "store", c.quota_bytes));
  return {};
}

// [policy]
Result<void> ParsePolicySection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* p = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(*p, "policy", {"file", "trust"}));
  std::string f = c.policy_path.string(), t;
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "file", "policy", f));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "trust", "policy", t));
  c.policy_path = f;
  c.trust_path = t;
  return {};
}

// [auth]
Result<void> ParseAuthSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* a = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(*a, "auth", {"file"}));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*a, "file", "auth", c.auth_file));
  return {};
}

// [pull]
Result<void> ParsePullSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* p = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(
      *p, "pull",
      {"platform", "layer_concurrency", "manifest_max_bytes", "blob_max_bytes", "retries"}));
  std::string platform;
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "platform", "pull", platform));
  if (!platform.empty()) {
    std::vector<std::string> parts;
    std::stringstream ss(platform);
    for (std::string part; std::getline(ss, part, '/');) parts.push_back(part);
    if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
      return rd.Bad("pull.platform", "want os/architecture[/variant], e.g. linux/arm64/v8");
    }
    c.platform = {
        .os = parts[0], .architecture = parts[1], .variant = parts.size() == 3 ? parts[2] : ""};
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "layer_concurrency", "pull", c.layer_concurrency));
  if (c.layer_concurrency < 1 || c.layer_concurrency > 64) {
    return rd.Bad("pull.layer_concurrency", "must be 1..64");
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "manifest_max_bytes", "pull", c.manifest_max_bytes));
  if (c.manifest_max_bytes < 1024 || c.manifest_max_bytes > (64u << 20)) {
    return rd.Bad("pull.manifest_max_bytes", "must be 1 KiB..64 MiB");
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "blob_max_bytes", "pull", c.blob_max_bytes));
  if (c.blob_max_bytes == 0) return rd.Bad("pull.blob_max_bytes", "must be positive");
  DIGESTD_RETURN_IF_ERROR(rd.Set(*p, "retries", "pull", c.retries));
  if (c.retries > 20) return rd.Bad("pull.retries", "must be 0..20");
  return {};
}

// [unpack]
Result<void> ParseUnpackSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* u = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(*u, "unpack", {"max_entries", "max_file_bytes"}));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*u, "max_entries", "unpack", c.unpack_limits.max_entries));
  if (c.unpack_limits.max_entries < 1 || c.unpack_limits.max_entries > 100'000'000) {
    return rd.Bad("unpack.max_entries", "must be 1..100000000");
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*u, "max_file_bytes", "unpack", c.unpack_limits.max_file_bytes));
  if (c.unpack_limits.max_file_bytes == 0) {
    return rd.Bad("unpack.max_file_bytes", "must be positive");
  }
  return {};
}

// [daemon]
Result<void> ParseDaemonSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* d = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(*d, "daemon",
                                      {"socket", "socket_group", "mountpoint", "admin_uids",
                                       "admin_gids", "reader_uids", "reader_gids", "handover"}));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*d, "handover", "daemon", c.daemon.handover));
  for (const char* key : {"socket", "mountpoint"}) {
    std::string p;
    DIGESTD_RETURN_IF_ERROR(rd.Set(*d, key, "daemon", p));
    if (p.empty()) continue;
    if (p.front() != '/') return rd.Bad(std::string("daemon.") + key, "must be an absolute path");
    (std::string_view(key) == "socket" ? c.daemon.socket : c.daemon.mountpoint) = p;
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*d, "socket_group", "daemon", c.daemon.socket_group));
  struct IdList {
    const char* key;
    std::vector<std::uint32_t>* out;
  };
  for (const IdList& l :
       {IdList{"admin_uids", &c.daemon.admin_uids}, IdList{"admin_gids", &c.daemon.admin_gids},
        IdList{"reader_uids", &c.daemon.reader_uids},
        IdList{"reader_gids", &c.daemon.reader_gids}}) {
    const toml::node* n = d->get(l.key);
    if (n == nullptr) continue;
    const std::string where = std::string("daemon.") + l.key;
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return rd.Bad(where, "must be an array of numeric ids");
    l.out->clear();
    for (const auto& item : *arr) {
      const auto* v = item.as_integer();
      if (v == nullptr || **v < 0 || **v > 0xfffffffeLL) {
        return rd.Bad(where, "must hold ids 0..4294967294");
      }
      l.out->push_back(static_cast<std::uint32_t>(**v));
    }
  }
  return {};
}

// [snapshotter]
Result<void> ParseSnapshotterSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* sn = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(*sn, "snapshotter",
                                      {"enabled", "socket", "root", "wipe", "pull_on_demand",
                                       "containerd_socket", "seed_namespaces", "seed_hold_s"}));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*sn, "enabled", "snapshotter", c.snapshotter.enabled));
  DIGESTD_RETURN_IF_ERROR(
      rd.Set(*sn, "pull_on_demand", "snapshotter", c.snapshotter.pull_on_demand));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*sn, "wipe", "snapshotter", c.snapshotter.wipe));
  for (const char* key : {"socket", "root", "containerd_socket"}) {
    std::string p;
    DIGESTD_RETURN_IF_ERROR(rd.Set(*sn, key, "snapshotter", p));
    if (p.empty()) continue;
    if (p.front() != '/') {
      return rd.Bad(std::string("snapshotter.") + key, "must be an absolute path");
    }
    const std::string_view k(key);
    (k == "socket" ? c.snapshotter.socket
     : k == "root" ? c.snapshotter.root
                   : c.snapshotter.containerd_socket) = p;
  }
  if (const toml::node* n = sn->get("seed_namespaces")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return rd.Bad("snapshotter.seed_namespaces", "must be an array of strings");
    for (const auto& item : *arr) {
      const auto* v = item.as_string();
      if (v == nullptr || (*v)->empty()) {
        return rd.Bad("snapshotter.seed_namespaces", "must hold non-empty strings");
      }
      if (!ValidContainerdNamespace(**v)) {
        return rd.Bad("snapshotter.seed_namespaces",
                      "\"" + **v + "\" is not a containerd namespace name");
      }
      c.snapshotter.seed_namespaces.push_back(**v);
    }
    if (!c.snapshotter.seed_namespaces.empty() && c.snapshotter.containerd_socket.empty()) {
      return rd.Bad("snapshotter.seed_namespaces", "needs snapshotter.containerd_socket");
    }
  }
  std::int64_t hold = c.snapshotter.seed_hold.count();
  DIGESTD_RETURN_IF_ERROR(rd.Set(*sn, "seed_hold_s", "snapshotter", hold));
  if (hold < 60 || hold > 7 * 24 * 3600) {
    return rd.Bad("snapshotter.seed_hold_s", "must be 60..604800");
  }
  c.snapshotter.seed_hold = std::chrono::seconds(hold);
  return {};
}

// [timeouts]
Result<void> ParseTimeoutsSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* t = &section;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(
      *t, "timeouts",
      {"connect_ms", "first_byte_ms", "stall_ms", "blob_deadline_min_ms", "min_rate_bytes_per_s"}));
  DIGESTD_RETURN_IF_ERROR(rd.Ms(*t, "connect_ms", "timeouts", c.connect_timeout));
  DIGESTD_RETURN_IF_ERROR(rd.Ms(*t, "first_byte_ms", "timeouts", c.first_byte_timeout));
  DIGESTD_RETURN_IF_ERROR(rd.Ms(*t, "stall_ms", "timeouts", c.stall_timeout));
  DIGESTD_RETURN_IF_ERROR(rd.Ms(*t, "blob_deadline_min_ms", "timeouts", c.blob_deadline_min));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*t, "min_rate_bytes_per_s", "timeouts", c.min_rate_bytes_per_s));
  if (c.min_rate_bytes_per_s < 1024) {
    return rd.Bad("timeouts.min_rate_bytes_per_s", "must be at least 1024");
  }
  return {};
}

// [audit]
Result<void> ParseAuditSection(const Reader& rd, const toml::table& section, Config& c) {
  const auto* a = &section;
  DIGESTD_RETURN_IF_ERROR(
      rd.OnlyKeys(*a, "audit", {"max_bytes", "max_age_days", "refusals_per_minute"}));
  DIGESTD_RETURN_IF_ERROR(rd.Set(*a, "max_bytes", "audit", c.audit.max_bytes));
  if (c.audit.max_bytes != 0 && c.audit.max_bytes < (1u << 20)) {
    return rd.Bad("audit.max_bytes", "must be 0 (no bound) or at least 1 MiB");
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*a, "max_age_days", "audit", c.audit.max_age_days));
  if (c.audit.max_age_days < 0 || c.audit.max_age_days > 36500) {
    return rd.Bad("audit.max_age_days", "must be 0..36500");
  }
  DIGESTD_RETURN_IF_ERROR(rd.Set(*a, "refusals_per_minute", "audit", c.audit.refusals_per_minute));
  if (c.audit.refusals_per_minute < 1 || c.audit.refusals_per_minute > 100000) {
    return rd.Bad("audit.refusals_per_minute", "must be 1..100000");
  }
  return {};
}

// [[registry]]
Result<void> ParseRegistryTables(const Reader& rd, const toml::node& section, Config& c) {
  const auto* regs = &section;
  const toml::array* arr = regs->as_array();
  if (arr == nullptr) return rd.Bad("registry", "must be an array of tables ([[registry]])");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string where = "registry[" + std::to_string(i) + "]";
    const toml::table* t = arr->get(i)->as_table();
    if (t == nullptr) return rd.Bad(where, "must be a table");
    DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(
        *t, where, {"host", "insecure", "ca_file", "auth_file", "max_concurrency", "mirror"}));
    RegistryConfig r;
    DIGESTD_ASSIGN_OR_RETURN(auto host, rd.Get<std::string>(*t, "host", where));
    if (!host) return rd.Bad(where + ".host", "required");
    r.host = *host;
    DIGESTD_RETURN_IF_ERROR(rd.Host(where + ".host", r.host));
    if (!seen.insert(r.host).second) return rd.Bad(where + ".host", "duplicate registry " + r.host);
    DIGESTD_RETURN_IF_ERROR(rd.Set(*t, "insecure", where, r.insecure));
    DIGESTD_RETURN_IF_ERROR(rd.Set(*t, "ca_file", where, r.ca_file));
    DIGESTD_RETURN_IF_ERROR(rd.Set(*t, "auth_file", where, r.auth_file));
    DIGESTD_RETURN_IF_ERROR(rd.Set(*t, "max_concurrency", where, r.max_concurrency));
    if (r.max_concurrency < 1 || r.max_concurrency > 64) {
      return rd.Bad(where + ".max_concurrency", "must be 1..64");
    }
    if (const toml::node* ms = t->get("mirror")) {
      const toml::array* marr = ms->as_array();
      if (marr == nullptr) return rd.Bad(where + ".mirror", "must be [[registry.mirror]] tables");
      for (std::size_t j = 0; j < marr->size(); ++j) {
        const std::string mw = where + ".mirror[" + std::to_string(j) + "]";
        const toml::table* mt = marr->get(j)->as_table();
        if (mt == nullptr) return rd.Bad(mw, "must be a table");
        DIGESTD_RETURN_IF_ERROR(
            rd.OnlyKeys(*mt, mw, {"host", "insecure", "ca_file", "resolve_tags"}));
        MirrorConfig m;
        DIGESTD_ASSIGN_OR_RETURN(auto mh, rd.Get<std::string>(*mt, "host", mw));
        if (!mh) return rd.Bad(mw + ".host", "required");
        m.host = *mh;
        DIGESTD_RETURN_IF_ERROR(rd.Host(mw + ".host", m.host));
        DIGESTD_RETURN_IF_ERROR(rd.Set(*mt, "insecure", mw, m.insecure));
        DIGESTD_RETURN_IF_ERROR(rd.Set(*mt, "ca_file", mw, m.ca_file));
        DIGESTD_RETURN_IF_ERROR(rd.Set(*mt, "resolve_tags", mw, m.resolve_tags));
        r.mirrors.push_back(std::move(m));
      }
    }
    c.registries.push_back(std::move(r));
  }
  return {};
}

}  // namespace

Result<Config> ParseConfig(std::string_view text, std::string_view source) {
  Reader rd{source};
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << e.description() << " at line " << e.source().begin.line << ", column "
        << e.source().begin.column;
    return DaemonError(Errc::kInvalidArgument, std::string(source) + ": " + msg.str());
  }
  Config c;
  DIGESTD_RETURN_IF_ERROR(rd.OnlyKeys(root, "",
                                      {"store", "policy", "auth", "pull", "timeouts", "unpack",
                                       "daemon", "registry", "snapshotter", "audit"}));
  for (const char* section : {"store", "policy", "auth", "pull", "timeouts", "unpack", "daemon",
                              "snapshotter", "audit"}) {
    if (root.get(section) && !root.get(section)->is_table()) {
      return rd.Bad(section, "must be a table ([" + std::string(section) + "])");
    }
  }
  if (const auto* s = SubTable(root, "store"))
    DIGESTD_RETURN_IF_ERROR(ParseStoreSection(rd, *s, c));
  if (const auto* p = SubTable(root, "policy"))
    DIGESTD_RETURN_IF_ERROR(ParsePolicySection(rd, *p, c));
  if (const auto* a = SubTable(root, "auth")) DIGESTD_RETURN_IF_ERROR(ParseAuthSection(rd, *a, c));
  if (const auto* p = SubTable(root, "pull")) DIGESTD_RETURN_IF_ERROR(ParsePullSection(rd, *p, c));
  if (const auto* u = SubTable(root, "unpack"))
    DIGESTD_RETURN_IF_ERROR(ParseUnpackSection(rd, *u, c));
  if (const auto* d = SubTable(root, "daemon"))
    DIGESTD_RETURN_IF_ERROR(ParseDaemonSection(rd, *d, c));
  if (const auto* sn = SubTable(root, "snapshotter"))
    DIGESTD_RETURN_IF_ERROR(ParseSnapshotterSection(rd, *sn, c));
  if (const auto* t = SubTable(root, "timeouts"))
    DIGESTD_RETURN_IF_ERROR(ParseTimeoutsSection(rd, *t, c));
  if (const auto* a = SubTable(root, "audit"))
    DIGESTD_RETURN_IF_ERROR(ParseAuditSection(rd, *a, c));
  if (const toml::node* regs = root.get("registry"))
    DIGESTD_RETURN_IF_ERROR(ParseRegistryTables(rd, *regs, c));
  return c;
}

Result<Config> LoadConfig(const std::filesystem::path& path) {
  auto text = ReadFileCapped(path, 1u << 20);
  if (!text) return std::move(text).error().Wrap("config file");
  return ParseConfig(*text, path.string());
}

Result<CommandLine> ParseCommandLine(const std::vector<std::string>& args) {
  CommandLine c;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--check") {
      c.check_only = true;
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      c.config_path = args[++i];
    } else if (args[i] == "--version") {
      c.version = true;
    } else {
      return DaemonError(Errc::kInvalidArgument,
                         "usage: digestd [--config FILE] [--check] [--version]");
    }
  }
  return c;
}

Result<gid_t> SocketGroup(const DaemonConfig& daemon) {
  if (daemon.socket_group.empty()) return ::getegid();
  auto g = GroupId(daemon.socket_group, Module::kDaemon);
  if (!g) return std::move(g).error().Wrap("daemon.socket_group");
  return *g;
}

}  // namespace digestd::daemon
