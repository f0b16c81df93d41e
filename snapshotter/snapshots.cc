#include "snapshotter/snapshots.h"
#include "snapshotter/errors.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "verify/digest.h"

namespace digestd::snapshotter {
namespace {

using nlohmann::json;
constexpr Module kMod = Module::kSnapshotter;

Error NotFound(const std::string& what) { return SnapshotterError(Errc::kNotFound, what); }
Error Exists(const std::string& what) { return SnapshotterError(Errc::kAlreadyExists, what); }
Error Refused(const std::string& what) { return SnapshotterError(Errc::kPermission, what); }
Error Invalid(const std::string& what) { return SnapshotterError(Errc::kInvalidArgument, what); }

// Snapshot times are only reported to containerd (Info.created_at/updated_at), never judged.
std::int64_t NowNs() { return SystemNanoseconds(); }

// What the store keeps per snapshot.
struct Record {
  Info info;
  std::string dir;         // upper/work directory id (active, view with a scratch dir)
  std::string chain;       // committed: the verified chain it serves
  std::string substitute;  // active extraction: the chain that replaces it at commit
  std::string lease;       // store lease pinning the images of the chain below
};

std::string Encode(const Record& r) {
  json j = {{"v", 1},
            {"kind", static_cast<int>(r.info.kind)},
            {"parent", r.info.parent},
            {"created", r.info.created_ns},
            {"updated", r.info.updated_ns},
            {"labels", r.info.labels}};
  if (!r.dir.empty()) j["dir"] = r.dir;
  if (!r.chain.empty()) j["chain"] = r.chain;
  if (!r.substitute.empty()) j["substitute"] = r.substitute;
  if (!r.lease.empty()) j["lease"] = r.lease;
  return j.dump();
}

bool ValidDirId(const std::string& s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Result<Record> Decode(const std::string& name, const std::string& value) {
  auto bad = [&](const std::string& why) {
    return SnapshotterError(Errc::kCorrupt, "snapshot record " + Quote(name) + ": " + why);
  };
  json j = json::parse(value, nullptr, false);
  if (!j.is_object() || j.value("v", 0) != 1) return bad("not a v1 record");
  static const std::set<std::string> kKeys = {"v", "kind", "parent", "created", "updated",
                                              "labels", "dir", "chain", "substitute", "lease"};
  for (const auto& [k, v] : j.items()) {
    if (!kKeys.count(k)) return bad("unknown field " + Quote(k));
  }
  Record r;
  r.info.name = name;
  if (!j["kind"].is_number_integer()) return bad("kind");
  const int kind = j["kind"].get<int>();
  if (kind < 1 || kind > 3) return bad("kind out of range");
  r.info.kind = static_cast<Kind>(kind);
  auto str = [&](const char* k, std::string& out) -> bool {
    if (!j.contains(k)) return true;
    if (!j[k].is_string()) return false;
    out = j[k].get<std::string>();
    return true;
  };
  if (!str("parent", r.info.parent) || !str("dir", r.dir) || !str("chain", r.chain) ||
      !str("substitute", r.substitute) || !str("lease", r.lease)) {
    return bad("a field is not a string");
  }
  if (!j["created"].is_number_integer() || !j["updated"].is_number_integer()) return bad("times");
  r.info.created_ns = j["created"].get<std::int64_t>();
  r.info.updated_ns = j["updated"].get<std::int64_t>();
  if (!j["labels"].is_object()) return bad("labels");
  for (const auto& [k, v] : j["labels"].items()) {
    if (!v.is_string()) return bad("label values must be strings");
    r.info.labels[k] = v.get<std::string>();
  }
  if (!r.dir.empty() && !ValidDirId(r.dir)) return bad("dir id");
  if (r.info.kind == Kind::kCommitted && r.chain.empty()) return bad("committed without chain");
  if (r.info.kind != Kind::kCommitted && r.dir.empty()) return bad("active without dir");
  return r;
}

Result<std::string> NewDirId() {
  char raw[16];
  if (getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) {
    return SysError(kMod, "getrandom");
  }
  return verify::HexEncode(std::string_view(raw, sizeof raw));
}

// Removes `name` under `dirfd` recursively without following symlinks; with `wipe`, regular
// files are overwritten with zeros and synced before they are unlinked. Every entry is tried; the
// first failure is returned. A file whose wipe failed (a write or the sync) is left in place, not
// unlinked: unlinking it would leave its bytes in free blocks with nobody able to wipe them, while
// a retry of the removal can.
Result<void> RemoveTree(int dirfd, const char* name, bool wipe, std::int64_t* wiped) {
  std::optional<Error> first;
  auto fail = [&](Error e) {
    if (!first) first = std::move(e);
  };
  struct stat st{};
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return SysError(kMod, "stat " + Quote(name));
  }
  if (S_ISDIR(st.st_mode)) {
    const int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return SysError(kMod, "open directory " + Quote(name));
    DIR* d = fdopendir(fd);
    if (d == nullptr) {
      Error e = SysError(kMod, "read directory " + Quote(name));
      close(fd);
      return e;
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    for (const auto& n : names) {
      if (auto r = RemoveTree(::dirfd(d), n.c_str(), wipe, wiped); !r) fail(r.error());
    }
    closedir(d);
    if (first) return *first;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return SysError(kMod, "remove directory " + Quote(name));
    }
    return {};
  }
  if (wipe && S_ISREG(st.st_mode) && st.st_size > 0) {
    const int fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return SysError(kMod, "open " + Quote(name) + " to wipe it");
    static const std::vector<char> zeros(1 << 16, 0);
    off_t off = 0;
    while (off < st.st_size) {
      const std::size_t n = static_cast<std::size_t>(
          std::min<off_t>(st.st_size - off, static_cast<off_t>(zeros.size())));
      const ssize_t w = pwrite(fd, zeros.data(), n, off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        Error e = w < 0 ? SysError(kMod, "wipe " + Quote(name))
                        : SnapshotterError(Errc::kIo, "wipe " + Quote(name) + ": short write");
        close(fd);
        return e;
      }
      off += w;
    }
    if (fdatasync(fd) != 0) {
      Error e = SysError(kMod, "sync the wiped " + Quote(name));
      close(fd);
      return e;
    }
    close(fd);
    if (wiped != nullptr) *wiped += st.st_size;
  }
  if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
    return SysError(kMod, "remove " + Quote(name));
  }
  return {};
}

// Bytes (allocated) and inodes under a directory, not following symlinks.
void DiskUse(int dirfd, const char* name, Usage& u) {
  struct stat st{};
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  u.inodes += 1;
  u.size += static_cast<std::int64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) return;
  const int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    close(fd);
    return;
  }
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") DiskUse(::dirfd(d), n.c_str(), u);
  }
  closedir(d);
}

// "<namespace>/<n>/extract-<nonce> <chain ID>": the chain an unpack wants to build.
std::string ExtractChain(const std::string& key) {
  const std::size_t slash = key.rfind('/', key.find(' '));
  const std::string tail = slash == std::string::npos ? key : key.substr(slash + 1);
  if (!tail.starts_with("extract-")) return {};
  const std::size_t sp = tail.find(' ');
  if (sp == std::string::npos) return {};
  const std::string chain = tail.substr(sp + 1);
  return verify::Digest::Parse(chain) ? chain : std::string();
}

}  // namespace

struct Snapshots::Impl {
  store::Store& store;
  SnapshotsOptions opts;
  UniqueFd root_fd;
  std::mutex mu;
  std::map<std::string, Record> records;
  std::shared_ptr<const ChainIndex> chains;

  Impl(store::Store& s, SnapshotsOptions o) : store(s), opts(std::move(o)) {}

  // The chain index, rebuilt when the store has changed since.
  Result<std::shared_ptr<const ChainIndex>> Chains() {
    if (!chains || chains->generation() != store.generation()) {
      DIGESTD_ASSIGN_OR_RETURN(ChainIndex idx, ChainIndex::Build(store));
      chains = std::make_shared<ChainIndex>(std::move(idx));
    }
    return chains;
  }

  // Whether digestd holds an image pulled under `ref` (compared in canonical form).
  Result<bool> Recorded(const std::string& ref) {
    DIGESTD_ASSIGN_OR_RETURN(auto idx, Chains());
    for (const auto& manifest : idx->ImagesNamed(ref)) {
      if (!Blocked(manifest)) return true;
    }
    return false;
  }

  bool Blocked(const verify::Digest& d) const {
    return store.IsDenied(d) || (opts.hidden && opts.hidden(d));
  }

  // A chain digestd may serve: held, no layer blocked, and at least one image carrying it
  // neither denied nor withdrawn.
  Result<const ChainLink*> Servable(const ChainIndex& idx, const std::string& chain,
                                    const std::map<std::string, std::string>& labels) {
    const ChainLink* link = idx.Find(chain);
    if (link == nullptr) {
      for (const auto& [n, r] : records) {
        if (r.chain == chain) {
          // Served before: its images have been denied (the store no longer reads them),
          // withdrawn or removed since.
          return Refused("layer chain " + chain + " is no longer available from digestd: its "
                         "images were denied, withdrawn or removed");
        }
      }
      std::string hint = "run `digestctl pull` for the image first";
      if (auto it = labels.find(std::string(kLabelCriImageRef)); it != labels.end()) {
        hint = "run `digestctl pull " + it->second + "` first";
      }
      return Refused("layer chain " + chain + " is not verified by digestd: " + hint);
    }
    for (const auto& layer : idx.Layers(chain)) {
      if (Blocked(layer)) {
        return Refused("layer " + layer.ToString() + " of chain " + chain +
                       " is denied or withdrawn");
      }
    }
    bool admitted = false;
    for (const auto& image : link->images) admitted = admitted || !Blocked(image);
    if (!admitted) {
      return Refused("every image with layer chain " + chain + " is denied or withdrawn");
    }
    return link;
  }

  Result<void> Persist(const Record& r) { return store.PutSnapshotRecord(r.info.name, Encode(r)); }

  // A committed record serving `chain`, named by the chain ID (created with its parents).
  Result<void> EnsureChainRecords(const ChainIndex& idx, const std::string& chain,
                                  const std::map<std::string, std::string>& extra_labels) {
    const ChainLink* link = idx.Find(chain);
    if (link == nullptr) return NotFound("chain " + chain);
    if (!link->parent.empty()) {
      DIGESTD_RETURN_IF_ERROR(EnsureChainRecords(idx, link->parent, {}));
    }
    auto it = records.find(chain);
    if (it != records.end()) return {};
    Record r;
    r.info.name = chain;
    r.info.parent = link->parent;
    r.info.kind = Kind::kCommitted;
    r.info.created_ns = r.info.updated_ns = NowNs();
    r.info.labels = extra_labels;
    r.info.labels[std::string(kLabelSnapshotRef)] = chain;
    r.chain = chain;
    DIGESTD_RETURN_IF_ERROR(Persist(r));
    records.emplace(chain, std::move(r));
    return {};
  }

  // Lowerdirs of a committed snapshot, top first.
  Result<std::vector<std::string>> Lowers(const std::string& name) {
    auto it = records.find(name);
    if (it == records.end()) return NotFound("parent snapshot " + Quote(name));
    if (it->second.info.kind != Kind::kCommitted) {
      return Invalid("parent " + Quote(name) + " is not committed");
    }
    DIGESTD_ASSIGN_OR_RETURN(auto idx, Chains());
    DIGESTD_ASSIGN_OR_RETURN(const ChainLink* link, Servable(*idx, it->second.chain, {}));
    (void)link;
    std::vector<std::string> out;
    for (const auto& layer : idx->Layers(it->second.chain)) {
      out.push_back((opts.mountpoint / "layers/sha256" / std::string(layer.hex())).string());
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  std::string Upper(const Record& r) const { return (opts.root / r.dir / "fs").string(); }
  std::string Work(const Record& r) const { return (opts.root / r.dir / "work").string(); }

  Result<std::vector<Mount>> MountsOf(const Record& r) {
    std::vector<std::string> lowers;
    if (!r.info.parent.empty()) {
      DIGESTD_ASSIGN_OR_RETURN(lowers, Lowers(r.info.parent));
    }
    const bool ro = r.info.kind == Kind::kView;
    if (lowers.empty()) {
      return std::vector<Mount>{{"bind", Upper(r), {ro ? "ro" : "rw", "rbind"}}};
    }
    if (ro && lowers.size() == 1) return std::vector<Mount>{{"bind", lowers[0], {"ro", "rbind"}}};
    std::string lower = "lowerdir=";
    for (std::size_t i = 0; i < lowers.size(); ++i) lower += (i ? ":" : "") + lowers[i];
    if (ro) return std::vector<Mount>{{"overlay", "overlay", {lower}}};
    return std::vector<Mount>{
        {"overlay", "overlay", {"workdir=" + Work(r), "upperdir=" + Upper(r), lower}}};
  }

  Result<std::vector<Mount>> Create(const std::string& key, const std::string& parent,
                                    const std::map<std::string, std::string>& labels, Kind kind) {
    if (key.empty()) return Invalid("empty snapshot key");
    if (records.count(key)) return Exists("snapshot " + Quote(key) + " already exists");
    DIGESTD_ASSIGN_OR_RETURN(auto idx, Chains());
    // Remote layer: the label names the chain containerd wants; we have it, so it exists.
    if (auto t = labels.find(std::string(kLabelSnapshotRef)); t != labels.end()) {
      const std::string& target = t->second;
      DIGESTD_ASSIGN_OR_RETURN(const ChainLink* link, Servable(*idx, target, labels));
      const std::string parent_chain =
          parent.empty() ? std::string() : [&] {
            auto p = records.find(parent);
            return p == records.end() ? std::string("?") : p->second.chain;
          }();
      if (parent_chain != link->parent) {
        return Refused("layer chain " + target + " does not sit on parent " + Quote(parent));
      }
      std::map<std::string, std::string> keep;
      for (const auto& [k, v] : labels) {
        if (k.starts_with("containerd.io/snapshot/")) keep[k] = v;
      }
      DIGESTD_RETURN_IF_ERROR(EnsureChainRecords(*idx, target, keep));
      return Exists("layer chain " + target + " is served by digestd (remote snapshot)");
    }
    std::string substitute;
    if (kind == Kind::kActive) {
      if (const std::string chain = ExtractChain(key); !chain.empty()) {
        DIGESTD_ASSIGN_OR_RETURN(const ChainLink* link, Servable(*idx, chain, labels));
        (void)link;
        substitute = chain;
      }
    }
    Record r;
    r.info.name = key;
    r.info.parent = parent;
    r.info.kind = kind;
    r.info.created_ns = r.info.updated_ns = NowNs();
    r.info.labels = labels;
    r.substitute = substitute;
    std::vector<verify::Digest> pin;
    if (!parent.empty()) {
      auto p = records.find(parent);
      if (p == records.end()) return NotFound("parent snapshot " + Quote(parent) + " does not exist");
      if (p->second.info.kind != Kind::kCommitted) {
        return Invalid("parent " + Quote(parent) + " is not committed");
      }
      DIGESTD_ASSIGN_OR_RETURN(const ChainLink* link, Servable(*idx, p->second.chain, labels));
      for (const auto& image : link->images) {
        if (!Blocked(image)) pin.push_back(image);
      }
    }
    DIGESTD_ASSIGN_OR_RETURN(r.dir, NewDirId());
    if (mkdirat(root_fd.Get(), r.dir.c_str(), 0700) != 0 ||
        mkdirat(root_fd.Get(), (r.dir + "/fs").c_str(), 0755) != 0 ||
        mkdirat(root_fd.Get(), (r.dir + "/work").c_str(), 0700) != 0) {
      Error e = SysError(kMod, "create snapshot directory " + r.dir);
      (void)RemoveTree(root_fd.Get(), r.dir.c_str(), false, nullptr);  // empty dirs; best effort
      return e;
    }
    if (!pin.empty()) {
      r.lease = "snap-" + r.dir;
      auto lease = store.PutLease({.id = r.lease, .tenant = "containerd", .digests = pin,
                                   .created = NowNs() / 1'000'000'000});
      if (!lease) {
        (void)RemoveTree(root_fd.Get(), r.dir.c_str(), false, nullptr);  // empty dirs; best effort
        return lease.error();
      }
    }
    auto mounts = MountsOf(r);
    if (mounts) {
      if (auto ok = Persist(r); !ok) mounts = ok.error();
    }
    if (!mounts) {
      if (!r.lease.empty()) (void)store.RemoveLease(r.lease);
      (void)RemoveTree(root_fd.Get(), r.dir.c_str(), false, nullptr);  // empty dirs; best effort
      return mounts.error();
    }
    records.emplace(key, std::move(r));
    return mounts;
  }

  Result<void> Drop(Record& r) {
    if (!r.lease.empty()) {
      auto released = store.ReleaseLease(r.lease, false);
      if (!released && released.error().code() != Errc::kNotFound) return released.error();
    }
    // A removal that could not wipe (or remove) everything keeps its record: the snapshot stays
    // listed and a retry finishes the job, instead of a record-less directory with data in it.
    if (!r.dir.empty()) {
      if (auto removed = RemoveTree(root_fd.Get(), r.dir.c_str(), opts.wipe, nullptr); !removed) {
        return std::move(removed).error().Wrap("remove snapshot " + Quote(r.info.name));
      }
    }
    return store.DeleteSnapshotRecord(r.info.name);
  }
};

Snapshots::Snapshots(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Snapshots::~Snapshots() = default;

Result<std::unique_ptr<Snapshots>> Snapshots::Open(store::Store& store, SnapshotsOptions options) {
  auto impl = std::make_unique<Impl>(store, std::move(options));
  std::error_code ec;
  std::filesystem::create_directories(impl->opts.root, ec);
  if (ec) return SnapshotterError(Errc::kIo, "create " + impl->opts.root.string() + ": " + ec.message());
  UniqueFd fd(::open(impl->opts.root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return SysError(kMod, "open snapshot root " + impl->opts.root.string());
  if (fchmod(fd.Get(), 0700) != 0) return SysError(kMod, "chmod snapshot root");
  impl->root_fd = std::move(fd);
  DIGESTD_ASSIGN_OR_RETURN(auto raw, store.ListSnapshotRecords());
  for (const auto& [name, value] : raw) {
    DIGESTD_ASSIGN_OR_RETURN(Record r, Decode(name, value));
    impl->records.emplace(name, std::move(r));
  }
  return std::unique_ptr<Snapshots>(new Snapshots(std::move(impl)));
}

Result<std::vector<Mount>> Snapshots::Prepare(const std::string& key, const std::string& parent,
                                              const std::map<std::string, std::string>& labels) {
  std::unique_lock lock(impl_->mu);
  auto target = labels.find(std::string(kLabelSnapshotRef));
  auto image = labels.find(std::string(kLabelCriImageRef));
  // CRI names the image it unpacks. Verified layers alone are not enough: the image itself must
  // have been admitted by digestd's policy (pulled through digestd under that reference), or an
  // unsigned image reusing verified layers would run with a configuration nobody checked.
  bool recorded = true;
  if (target != labels.end() && image != labels.end()) {
    DIGESTD_ASSIGN_OR_RETURN(recorded, impl_->Recorded(image->second));
  }
  if (!recorded) {
    if (!impl_->opts.pull) {
      return Refused("image " + image->second + " was not pulled through digestd: run "
                     "`digestctl pull " + image->second + "` first");
    }
    // Pull without holding the lock: other snapshots stay usable meanwhile. The pull verifies and
    // decides under the policy like any other; a refusal is the answer.
    lock.unlock();
    auto pulled = impl_->opts.pull(image->second);
    lock.lock();
    if (!pulled) {
      return Refused("digestd did not pull " + image->second + " for layer chain " +
                     target->second + ": " + pulled.error().context());
    }
  }
  return impl_->Create(key, parent, labels, Kind::kActive);
}

Result<std::vector<Mount>> Snapshots::View(const std::string& key, const std::string& parent,
                                           const std::map<std::string, std::string>& labels) {
  std::lock_guard lock(impl_->mu);
  return impl_->Create(key, parent, labels, Kind::kView);
}

Result<std::vector<Mount>> Snapshots::Mounts(const std::string& key) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->records.find(key);
  if (it == impl_->records.end()) return NotFound("snapshot " + Quote(key));
  if (it->second.info.kind == Kind::kCommitted) {
    return Invalid("snapshot " + Quote(key) + " is committed; it has no mounts");
  }
  return impl_->MountsOf(it->second);
}

Result<void> Snapshots::Commit(const std::string& name, const std::string& key,
                               const std::map<std::string, std::string>& labels) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->records.find(key);
  if (it == impl_->records.end()) return NotFound("snapshot " + Quote(key));
  if (impl_->records.count(name)) return Exists("snapshot " + Quote(name) + " already exists");
  Record& active = it->second;
  if (active.info.kind != Kind::kActive) return Invalid("snapshot " + Quote(key) + " is not active");
  if (active.substitute.empty()) {
    return Refused("digestd serves only layers it verified: committing " + Quote(key) +
                   " (local changes) is not supported");
  }
  DIGESTD_ASSIGN_OR_RETURN(auto idx, impl_->Chains());
  DIGESTD_ASSIGN_OR_RETURN(const ChainLink* link, impl_->Servable(*idx, active.substitute, labels));
  (void)link;
  // The extraction containerd made is discarded: the committed snapshot serves digestd's tree.
  Record c;
  c.info.name = name;
  c.info.parent = active.info.parent;
  c.info.kind = Kind::kCommitted;
  c.info.created_ns = c.info.updated_ns = NowNs();
  c.info.labels = labels;
  c.chain = active.substitute;
  DIGESTD_RETURN_IF_ERROR(impl_->Persist(c));
  DIGESTD_RETURN_IF_ERROR(impl_->Drop(active));
  impl_->records.erase(it);
  impl_->records.emplace(name, std::move(c));
  return {};
}

Result<void> Snapshots::Remove(const std::string& key) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->records.find(key);
  if (it == impl_->records.end()) return NotFound("snapshot " + Quote(key));
  for (const auto& [n, r] : impl_->records) {
    if (r.info.parent == key) {
      return SnapshotterError(Errc::kBusy,
                       "snapshot " + Quote(key) + " has a child " + Quote(n) + "; remove it first");
    }
  }
  DIGESTD_RETURN_IF_ERROR(impl_->Drop(it->second));
  impl_->records.erase(it);
  return {};
}

Result<Info> Snapshots::Stat(const std::string& key) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->records.find(key);
  if (it == impl_->records.end()) return NotFound("snapshot " + Quote(key));
  return it->second.info;
}

Result<Info> Snapshots::Update(const Info& info, const std::vector<std::string>& paths) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->records.find(info.name);
  if (it == impl_->records.end()) return NotFound("snapshot " + Quote(info.name));
  Record r = it->second;
  if (paths.empty()) {
    r.info.labels = info.labels;
  } else {
    for (const auto& p : paths) {
      if (p == "labels") {
        r.info.labels = info.labels;
      } else if (p.starts_with("labels.")) {
        const std::string k = p.substr(7);
        if (auto v = info.labels.find(k); v != info.labels.end()) {
          r.info.labels[k] = v->second;
        } else {
          r.info.labels.erase(k);
        }
      } else {
        return Invalid("cannot update field " + Quote(p) + " (only labels)");
      }
    }
  }
  r.info.updated_ns = NowNs();
  DIGESTD_RETURN_IF_ERROR(impl_->Persist(r));
  it->second = r;
  return r.info;
}

Result<std::vector<Info>> Snapshots::List() {
  std::lock_guard lock(impl_->mu);
  std::vector<Info> out;
  for (const auto& [n, r] : impl_->records) out.push_back(r.info);
  return out;
}

Result<Usage> Snapshots::DiskUsage(const std::string& key) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->records.find(key);
  if (it == impl_->records.end()) return NotFound("snapshot " + Quote(key));
  Usage u;
  if (it->second.info.kind == Kind::kCommitted) {
    DIGESTD_ASSIGN_OR_RETURN(auto idx, impl_->Chains());
    if (const ChainLink* link = idx->Find(it->second.chain)) {
      auto tree = impl_->store.GetTreeInfo(link->layer);
      if (tree && *tree) {
        u.size = static_cast<std::int64_t>((*tree)->file_bytes);
        u.inodes = static_cast<std::int64_t>((*tree)->entries);
      }
    }
    return u;
  }
  DiskUse(impl_->root_fd.Get(), (it->second.dir + "/fs").c_str(), u);
  return u;
}

Result<void> Snapshots::Cleanup() {
  std::lock_guard lock(impl_->mu);
  std::set<std::string> owned;
  for (const auto& [n, r] : impl_->records) {
    if (!r.dir.empty()) owned.insert(r.dir);
  }
  const int dup = ::dup(impl_->root_fd.Get());
  if (dup < 0) return SysError(kMod, "dup");
  DIR* d = fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return SysError(kMod, "opendir snapshot root");
  }
  rewinddir(d);
  // Only directories this snapshotter makes (32 hex digits) that no record owns are orphans;
  // anything else in the root is not ours to delete: it is left, and said once.
  std::vector<std::string> orphans;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (owned.count(n)) continue;
    if (ValidDirId(n)) {
      orphans.push_back(n);
    } else {
      Logger(Module::kSnapshotter)->warn("snapshot root: leaving {} alone (not a snapshot directory)",
                                  Quote(n));
    }
  }
  closedir(d);
  std::optional<Error> first;
  for (const auto& n : orphans) {
    if (auto r = RemoveTree(impl_->root_fd.Get(), n.c_str(), impl_->opts.wipe, nullptr); !r) {
      if (!first) first = r.error();
    }
  }
  if (first) return std::move(*first).Wrap("cleanup of the snapshot root");
  return {};
}

}  // namespace digestd::snapshotter
