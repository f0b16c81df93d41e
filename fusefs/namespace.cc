#include "fusefs/namespace.h"
#include "fusefs/errors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>

#include "common/log.h"
#include "store/audit_event.h"
#include "verify/oci.h"

namespace digestd::fusefs {
namespace {

using store::EntryType;
using store::TreeEntry;
using verify::Digest;

// What a deny or withdrawal hides: ENOENT to the caller, but not an absence the kernel may cache
// (the name comes back when the deny is lifted).
Error Withheld(std::string context) {
  return FuseError(Errc::kPermission, std::move(context), ENOENT);
}

Error Fail(int err, std::string context) {
  Errc code = Errc::kIo;
  if (err == ENOENT) code = Errc::kNotFound;
  if (err == EINVAL || err == ENOTDIR || err == EISDIR || err == ENODATA) {
    code = Errc::kInvalidArgument;
  }
  return FuseError(code, std::move(context), err);
}

// Fixed inodes of the top of the namespace.
enum : Ino {
  kBlobsIno = 2,
  kBlobsAlgIno = Namespace::kBlobsDirIno,
  kLayersIno = 4,
  kLayersAlgIno = Namespace::kLayersDirIno,
  kImagesIno = 6,
  kImagesAlgIno = Namespace::kImagesDirIno,
};

struct FixedDir {
  Ino ino;
  Ino parent;
  const char* name;
};
constexpr FixedDir kFixed[] = {
    {kRootIno, kRootIno, ""},           {kBlobsIno, kRootIno, "blobs"},
    {kBlobsAlgIno, kBlobsIno, "sha256"}, {kLayersIno, kRootIno, "layers"},
    {kLayersAlgIno, kLayersIno, "sha256"}, {kImagesIno, kRootIno, "images"},
    {kImagesAlgIno, kImagesIno, "sha256"},
};

const FixedDir* FindFixed(Ino ino) {
  for (const auto& f : kFixed) {
    if (f.ino == ino) return &f;
  }
  return nullptr;
}

enum SyntheticKind : int { kBlobFile = 1, kImageDir = 2, kLowerdirFile = 3 };

Attr DirAttr(Ino ino, std::uint32_t nlink) {
  return Attr{.ino = ino, .mode = S_IFDIR | 0555, .nlink = nlink, .size = 4096};
}

bool IsImageManifestType(std::string_view media_type) {
  auto kind = verify::ManifestKindOf(media_type);
  return kind && !verify::IsIndexKind(*kind);
}

}  // namespace

// One node of a served tree. Directories list children sorted by name; hard links of one inode
// are one node that several names point at.
struct Node {
  const TreeEntry* entry = nullptr;
  std::uint32_t parent = 0;
  std::uint32_t nlink = 1;
  std::vector<std::pair<std::string, std::uint32_t>> children;
};

struct Namespace::TreeView {
  Ino base = 0;         // inode of nodes[0], the tree's root
  Ino parent_ino = 0;   // the directory holding the root (for "..")
  bool merged = false;  // an image rootfs: whiteouts applied and hidden, no overlay xattrs
  std::vector<std::shared_ptr<const store::LayerTree>> sources;
  std::vector<Node> nodes;
  std::vector<Digest> guards;  // denying any of these hides the whole view
};

struct Namespace::Synthetic {
  int kind = 0;
  Digest digest;
  Ino parent = 0;
};

struct Namespace::Found {
  const FixedDir* fixed = nullptr;
  const Synthetic* synthetic = nullptr;
  std::shared_ptr<TreeView> view;
  std::uint32_t node = 0;
};

namespace {

using TreeView = Namespace::TreeView;

Attr NodeAttr(const TreeView& v, std::uint32_t index) {
  const Node& n = v.nodes[index];
  const TreeEntry& e = *n.entry;
  Attr a{.ino = v.base + index,
         .nlink = n.nlink,
         .uid = e.uid,
         .gid = e.gid,
         .size = e.size,
         .mtime = e.mtime,
         .rdev_major = e.rdev_major,
         .rdev_minor = e.rdev_minor};
  switch (e.type) {
    case EntryType::kRegular: a.mode = S_IFREG | e.mode; break;
    case EntryType::kDirectory: a.mode = S_IFDIR | e.mode; a.size = 4096; break;
    case EntryType::kSymlink: a.mode = S_IFLNK | 0777; break;
    case EntryType::kCharDevice: a.mode = S_IFCHR | e.mode; break;
    case EntryType::kBlockDevice: a.mode = S_IFBLK | e.mode; break;
    case EntryType::kFifo: a.mode = S_IFIFO | e.mode; break;
    case EntryType::kWhiteout:  // overlayfs: a character device with device number 0:0
      a.mode = S_IFCHR;
      a.rdev_major = a.rdev_minor = 0;
      break;
  }
  return a;
}

// Builds nodes from entries sorted by path (parents first). Link groups are keyed by
// (source, group) so merged views keep each layer's hard links apart.
struct TreeBuilder {
  struct Item {
    const TreeEntry* entry;
    std::uint64_t link_key;  // 0: not linked
  };

  static void Build(TreeView& v, const std::vector<std::pair<std::string_view, Item>>& items) {
    std::unordered_map<std::string_view, std::uint32_t> dir_index;
    std::unordered_map<std::uint64_t, std::uint32_t> link_nodes;
    v.nodes.reserve(items.size());
    for (const auto& [path, item] : items) {
      if (path.empty()) {
        v.nodes.push_back(Node{.entry = item.entry, .parent = 0, .nlink = 2});
        dir_index.emplace(path, 0);
        continue;
      }
      const auto slash = path.rfind('/');
      const std::string_view parent_path =
          slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
      const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
      auto p = dir_index.find(parent_path);
      if (p == dir_index.end()) continue;  // unreachable for validated trees
      std::uint32_t index;
      if (item.link_key != 0) {
        auto [it, fresh] =
            link_nodes.emplace(item.link_key, static_cast<std::uint32_t>(v.nodes.size()));
        if (fresh) {
          v.nodes.push_back(Node{.entry = item.entry, .parent = p->second, .nlink = 0});
        }
        index = it->second;
        ++v.nodes[index].nlink;
      } else {
        index = static_cast<std::uint32_t>(v.nodes.size());
        v.nodes.push_back(Node{.entry = item.entry, .parent = p->second, .nlink = 1});
        if (item.entry->type == EntryType::kDirectory) {
          v.nodes[index].nlink = 2;
          dir_index.emplace(path, index);
        }
      }
      v.nodes[p->second].children.emplace_back(std::string(name), index);
      if (item.entry->type == EntryType::kDirectory) ++v.nodes[p->second].nlink;
    }
    for (auto& n : v.nodes) std::sort(n.children.begin(), n.children.end());
  }
};

}  // namespace

Namespace::Namespace(store::Store& store, NamespaceOptions options)
    : store_(store), options_(std::move(options)), started_(store.Now()) {}
Namespace::~Namespace() = default;

bool Namespace::Gone(const Digest& d) const {
  return store_.IsDenied(d) || (options_.hidden && options_.hidden(d));
}

bool Namespace::Denied(const TreeView& view) const {
  for (const auto& d : view.guards) {
    if (Gone(d)) return true;
  }
  return false;
}

Result<store::InodeRange> Namespace::Range(store::InodeKind kind, const Digest& digest,
                                           std::uint64_t count) {
  auto r = store_.InodesFor(kind, digest, count);
  if (r) return r;
  // The index refuses writes (a failing disk): serve with numbers of this process only, from a
  // space no recorded range reaches. They do not survive a restart (the kernel then gets ENOENT).
  std::lock_guard lock(mu_);
  if (!volatile_warned_) {
    volatile_warned_ = true;
    Logger(Module::kFuse)->warn("inode numbers not recorded ({}); new views get numbers that a "
                           "restarted daemon will not know",
                           r.error().ToString());
  }
  const store::InodeRange out{.kind = kind, .digest = digest, .first = next_volatile_, .count = count};
  next_volatile_ += std::max<std::uint64_t>(count, 1);
  return out;
}

Result<store::InodeRange> Namespace::ImageRange(const Digest& manifest) {
  // Room for the image's directory, its lowerdir file and every entry of all its layers (a merged
  // tree never has more nodes): the same count the image's commit recorded.
  DIGESTD_ASSIGN_OR_RETURN(auto layers, ImageLayers(manifest));
  std::uint64_t total = 2;
  std::unordered_set<Digest> seen;
  for (const auto& l : layers) {
    if (!seen.insert(l).second) continue;
    auto info = store_.GetTreeInfo(l);
    if (info && *info) total += (*info)->entries;
  }
  return Range(store::InodeKind::kImage, manifest, total);
}

Result<Ino> Namespace::SyntheticIno(int kind, const Digest& digest) {
  const std::string key = std::to_string(kind) + digest.ToString();
  {
    std::lock_guard lock(mu_);
    auto it = synthetic_by_key_.find(key);
    if (it != synthetic_by_key_.end()) return it->second;
  }
  Ino ino = 0;
  Ino parent = kBlobsAlgIno;
  if (kind == kBlobFile) {
    DIGESTD_ASSIGN_OR_RETURN(auto r, Range(store::InodeKind::kBlob, digest, 1));
    ino = r.first;
  } else {
    DIGESTD_ASSIGN_OR_RETURN(auto r, ImageRange(digest));
    ino = kind == kImageDir ? r.first : r.first + 1;
    parent = kind == kImageDir ? kImagesAlgIno : r.first;
  }
  std::lock_guard lock(mu_);
  auto [it, fresh] = synthetic_by_key_.emplace(key, ino);
  if (fresh) synthetic_.emplace(ino, std::make_unique<Synthetic>(Synthetic{kind, digest, parent}));
  return it->second;
}

bool Namespace::FindLocked(Ino ino, Found& f) const {
  if (auto s = synthetic_.find(ino); s != synthetic_.end()) {
    f.synthetic = s->second.get();
    return true;
  }
  auto it = views_.upper_bound(ino);
  if (it != views_.begin()) {
    --it;
    if (ino - it->first < it->second->nodes.size()) {
      f.view = it->second;
      f.node = static_cast<std::uint32_t>(ino - it->first);
      return true;
    }
  }
  return false;
}

Result<Namespace::Found> Namespace::Resolve(Ino ino) {
  Found f;
  if ((f.fixed = FindFixed(ino))) return f;
  {
    std::lock_guard lock(mu_);
    if (FindLocked(ino, f)) return f;
  }
  // A number this process has not handed out (the kernel learnt it from a predecessor, or the
  // view was dropped): the index says what it numbers, and the view is built again.
  auto owner = store_.InodeOwner(ino);
  if (!owner) return Fail(EIO, owner.error().ToString());
  if (!*owner) return Fail(ENOENT, "unknown inode " + std::to_string(ino));
  const store::InodeRange& r = **owner;
  switch (r.kind) {
    case store::InodeKind::kBlob:
      if (!store_.Contains(r.digest)) return Fail(ENOENT, r.digest.ToString() + " not in the store");
      DIGESTD_RETURN_IF_ERROR(SyntheticIno(kBlobFile, r.digest));
      break;
    case store::InodeKind::kImage:
      DIGESTD_RETURN_IF_ERROR(SyntheticIno(kImageDir, r.digest));
      if (ino == r.first + 1) DIGESTD_RETURN_IF_ERROR(SyntheticIno(kLowerdirFile, r.digest));
      if (ino >= r.first + 2) DIGESTD_RETURN_IF_ERROR(ImageView(r.digest));
      break;
    case store::InodeKind::kLayer: {
      auto info = store_.GetTreeInfo(r.digest);
      if (!info || !*info) return Fail(ENOENT, "layer " + r.digest.ToString() + " is not unpacked");
      DIGESTD_RETURN_IF_ERROR(LayerView(r.digest));
      break;
    }
  }
  std::lock_guard lock(mu_);
  if (FindLocked(ino, f)) return f;
  return Fail(ENOENT, "inode " + std::to_string(ino) + " is not served any more");
}

std::vector<Digest> Namespace::Built() const {
  std::vector<Digest> out;
  std::lock_guard lock(mu_);
  out.reserve(image_views_.size() + layer_views_.size());
  for (const auto* by : {&image_views_, &layer_views_}) {
    for (const auto& [key, view] : *by) {
      if (auto d = Digest::Parse(key)) out.push_back(std::move(*d));
    }
  }
  return out;
}

void Namespace::Warm(const Digest& digest) {
  // ImageView reads the image's layer list once and fails at once for anything else.
  if (!ImageView(digest)) (void)LayerView(digest);
}

Result<std::shared_ptr<TreeView>> Namespace::LayerView(const Digest& layer) {
  {
    std::lock_guard lock(mu_);
    if (auto it = layer_views_.find(layer.ToString()); it != layer_views_.end()) return it->second;
  }
  auto tree = store_.LoadTree(layer);
  if (!tree) {
    if (tree.error().code() == Errc::kNotFound) return Fail(ENOENT, tree.error().ToString());
    return Fail(EIO, tree.error().ToString());
  }
  auto view = std::make_shared<TreeView>();
  view->parent_ino = kLayersAlgIno;
  view->guards = {layer};
  auto source = std::make_shared<const store::LayerTree>(std::move(*tree));
  view->sources.push_back(source);
  std::vector<std::pair<std::string_view, TreeBuilder::Item>> items;
  items.reserve(source->entries.size());
  for (const auto& e : source->entries) items.push_back({e.path, {&e, e.link_group}});
  TreeBuilder::Build(*view, items);
  DIGESTD_ASSIGN_OR_RETURN(auto range, Range(store::InodeKind::kLayer, layer, source->entries.size()));
  view->base = range.first;
  return Publish(layer_views_, layer, std::move(view));
}

std::shared_ptr<Namespace::TreeView> Namespace::Publish(
    std::unordered_map<std::string, std::shared_ptr<TreeView>>& by_digest, const Digest& digest,
    std::shared_ptr<TreeView> view) {
  std::lock_guard lock(mu_);
  // Built outside the lock: another thread may have published the same view meanwhile.
  if (auto it = by_digest.find(digest.ToString()); it != by_digest.end()) return it->second;
  views_[view->base] = view;
  by_digest.emplace(digest.ToString(), view);
  return view;
}

Result<std::vector<Digest>> Namespace::ImageLayers(const Digest& manifest) {
  auto layers = store_.ImageLayers(manifest);
  if (!layers) {
    return layers.error().code() == Errc::kNotFound ? Fail(ENOENT, layers.error().context())
                                                     : Fail(EIO, layers.error().ToString());
  }
  return layers;
}

Result<std::shared_ptr<TreeView>> Namespace::ImageView(const Digest& manifest) {
  {
    std::lock_guard lock(mu_);
    if (auto it = image_views_.find(manifest.ToString()); it != image_views_.end()) return it->second;
  }
  DIGESTD_ASSIGN_OR_RETURN(auto layers, ImageLayers(manifest));
  auto view = std::make_shared<TreeView>();
  view->merged = true;
  DIGESTD_ASSIGN_OR_RETURN(view->parent_ino, SyntheticIno(kImageDir, manifest));
  view->guards.push_back(manifest);
  for (const auto& l : layers) {
    DIGESTD_ASSIGN_OR_RETURN(auto lv, LayerView(l));
    view->sources.push_back(lv->sources.front());
    view->guards.push_back(l);
  }
  // Apply the layers bottom to top (OCI image spec, "Applying Changesets").
  struct Merged {
    const TreeEntry* entry;
    std::uint64_t link_key;
  };
  std::map<std::string, Merged> merged;
  auto erase_below = [&](const std::string& path) {
    if (path.empty()) {
      auto root = merged.find("");
      for (auto it = merged.begin(); it != merged.end();) {
        it = it == root ? std::next(it) : merged.erase(it);
      }
      return;
    }
    merged.erase(merged.lower_bound(path + "/"), merged.lower_bound(path + "0"));
  };
  for (std::size_t li = 0; li < view->sources.size(); ++li) {
    for (const auto& e : view->sources[li]->entries) {
      const std::uint64_t link_key =
          e.link_group ? ((static_cast<std::uint64_t>(li) + 1) << 32 | e.link_group) : 0;
      auto it = merged.find(e.path);
      if (e.type == EntryType::kWhiteout) {
        if (it != merged.end()) {
          merged.erase(it);
          erase_below(e.path);
        }
        continue;
      }
      if (e.type == EntryType::kDirectory && it != merged.end() &&
          it->second.entry->type == EntryType::kDirectory) {
        if (e.opaque) erase_below(e.path);  // this layer's own children come after
        if (!e.implicit) it->second = {&e, 0};
        continue;
      }
      if (it != merged.end()) {
        merged.erase(it);
        erase_below(e.path);
      }
      merged.emplace(e.path, Merged{&e, link_key});
    }
  }
  std::vector<std::pair<std::string_view, TreeBuilder::Item>> items;
  items.reserve(merged.size());
  for (const auto& [path, m] : merged) items.push_back({path, {m.entry, m.link_key}});
  TreeBuilder::Build(*view, items);
  // Names point into `merged`'s keys only while building; children own their names.
  DIGESTD_ASSIGN_OR_RETURN(auto range, ImageRange(manifest));
  if (range.count < view->nodes.size() + 2) return Fail(EIO, "image view larger than its range");
  view->base = range.first + 2;
  return Publish(image_views_, manifest, std::move(view));
}

Result<std::string> Namespace::LowerdirText(const Digest& manifest) {
  DIGESTD_ASSIGN_OR_RETURN(auto layers, ImageLayers(manifest));
  std::string text;
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    if (!text.empty()) text.push_back(':');
    text += options_.mountpoint + "/layers/sha256/" + std::string(it->hex());
  }
  return text;
}

Result<Attr> Namespace::SyntheticAttr(Ino ino, const Synthetic& s) {
  if (Gone(s.digest)) return Withheld(s.digest.ToString() + " is denied");
  switch (s.kind) {
    case kBlobFile: {
      auto info = store_.Stat(s.digest);
      if (!info) return Fail(ENOENT, info.error().ToString());
      return Attr{.ino = ino, .mode = S_IFREG | 0440, .gid = options_.blobs_gid, .size = info->size,
                  .mtime = info->created};
    }
    case kImageDir: {
      auto info = store_.Stat(s.digest);
      if (!info) return Fail(ENOENT, info.error().ToString());
      Attr a = DirAttr(ino, 3);
      a.mtime = info->created;
      return a;
    }
    case kLowerdirFile: {
      DIGESTD_ASSIGN_OR_RETURN(auto text, LowerdirText(s.digest));
      return Attr{.ino = ino, .mode = S_IFREG | 0444, .size = text.size()};
    }
  }
  return Fail(EIO, "bad synthetic inode");
}

Result<Attr> Namespace::GetAttr(Ino ino) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(ino));
  if (f.fixed) {
    std::uint32_t subdirs = 0;
    for (const auto& d : kFixed) subdirs += (d.parent == ino && d.ino != ino) ? 1 : 0;
    Attr a = DirAttr(ino, 2 + subdirs);
    if (ino == kBlobsIno || ino == kBlobsAlgIno) {
      // Raw blobs (layer tars, configs) would bypass the modes of the files inside layers:
      // root and the admin group only (checked by the kernel: default_permissions).
      a.mode = S_IFDIR | 0750;
      a.gid = options_.blobs_gid;
    }
    // The listings below change with the store: their mtime follows its generation, so the
    // kernel drops a cached listing once the attributes are refreshed (dynamic timeout).
    a.mtime = started_;
    a.mtime_nsec = static_cast<std::uint32_t>(store_.generation() % 1'000'000'000u);
    return a;
  }
  if (f.synthetic) return SyntheticAttr(ino, *f.synthetic);
  if (Denied(*f.view)) return Withheld("denied");
  return NodeAttr(*f.view, f.node);
}

Result<Attr> Namespace::Lookup(Ino parent, std::string_view name) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(parent));
  if (name == "." || name == "..") return Fail(EINVAL, "lookup of . or ..");
  if (f.fixed) {
    for (const auto& d : kFixed) {
      if (d.parent == parent && d.ino != parent && name == d.name) return GetAttr(d.ino);
    }
    if (parent == kRootIno || parent == kBlobsIno || parent == kLayersIno || parent == kImagesIno) {
      return Fail(ENOENT, "no " + Quote(name));
    }
    auto digest = Digest::FromParts(verify::DigestAlgorithm::kSha256, name);
    if (!digest) return Fail(ENOENT, "not a digest: " + Quote(name));
    if (Gone(*digest)) return Withheld(digest->ToString() + " is denied");
    if (parent == kBlobsAlgIno) {
      if (!store_.Contains(*digest)) return Fail(ENOENT, digest->ToString() + " not in the store");
      DIGESTD_ASSIGN_OR_RETURN(auto ino, SyntheticIno(kBlobFile, *digest));
      return GetAttr(ino);
    }
    if (parent == kLayersAlgIno) {
      // The store must still hold the tree: a view built before a wipe or GC is never served.
      auto info = store_.GetTreeInfo(*digest);
      if (!info || !*info) return Fail(ENOENT, "layer " + digest->ToString() + " is not unpacked");
      DIGESTD_ASSIGN_OR_RETURN(auto view, LayerView(*digest));
      return NodeAttr(*view, 0);
    }
    // images/sha256/<hex>: an image manifest whose layers all have trees.
    DIGESTD_ASSIGN_OR_RETURN(auto layers, ImageLayers(*digest));
    for (const auto& l : layers) {
      if (Gone(l)) return Withheld("image uses denied layer " + l.ToString());
      auto info = store_.GetTreeInfo(l);
      if (!info || !*info) return Fail(ENOENT, "layer " + l.ToString() + " is not unpacked");
    }
    DIGESTD_ASSIGN_OR_RETURN(auto ino, SyntheticIno(kImageDir, *digest));
    return GetAttr(ino);
  }
  if (f.synthetic) {
    if (f.synthetic->kind != kImageDir) return Fail(ENOTDIR, "not a directory");
    if (Gone(f.synthetic->digest)) return Withheld("denied");
    if (name == "rootfs") {
      DIGESTD_ASSIGN_OR_RETURN(auto view, ImageView(f.synthetic->digest));
      if (Denied(*view)) return Withheld("denied");
      return NodeAttr(*view, 0);
    }
    if (name == "lowerdir") {
      DIGESTD_ASSIGN_OR_RETURN(auto ino, SyntheticIno(kLowerdirFile, f.synthetic->digest));
      return GetAttr(ino);
    }
    return Fail(ENOENT, "no " + Quote(name));
  }
  const TreeView& v = *f.view;
  if (Denied(v)) return Withheld("denied");
  const Node& n = v.nodes[f.node];
  if (n.entry->type != EntryType::kDirectory) return Fail(ENOTDIR, "not a directory");
  auto it = std::lower_bound(n.children.begin(), n.children.end(), name,
                             [](const auto& c, std::string_view k) { return c.first < k; });
  if (it == n.children.end() || it->first != name) return Fail(ENOENT, "no " + Quote(name));
  return NodeAttr(v, it->second);
}

Result<std::vector<DirEntry>> Namespace::ReadDir(Ino ino) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(ino));
  std::vector<DirEntry> out;
  auto add = [&](std::string name, Result<Attr> a) {
    if (a) out.push_back({std::move(name), *a});
  };
  if (f.fixed) {
    add(".", GetAttr(ino));
    add("..", GetAttr(f.fixed->parent));
    for (const auto& d : kFixed) {
      if (d.parent == ino && d.ino != ino) add(d.name, GetAttr(d.ino));
    }
    if (ino == kBlobsAlgIno) {
      std::optional<Digest> after;
      for (;;) {
        auto page = store_.ListBlobs(after, 1000);
        if (!page) return Fail(EIO, page.error().ToString());
        for (const auto& b : page->items) {
          if (b.digest.algorithm() != verify::DigestAlgorithm::kSha256 ||
              Gone(b.digest)) {
            continue;
          }
          auto blob_ino = SyntheticIno(kBlobFile, b.digest);
          if (blob_ino) add(std::string(b.digest.hex()), GetAttr(*blob_ino));
        }
        if (!page->next) break;
        after = page->next;
      }
    } else if (ino == kLayersAlgIno) {
      auto trees = store_.ListTrees();
      if (!trees) return Fail(EIO, trees.error().ToString());
      for (const auto& t : *trees) {
        if (Gone(t.layer)) continue;
        add(std::string(t.layer.hex()), Lookup(kLayersAlgIno, t.layer.hex()));
      }
    } else if (ino == kImagesAlgIno) {
      std::optional<Digest> after;
      for (;;) {
        auto page = store_.ListBlobs(after, 1000);
        if (!page) return Fail(EIO, page.error().ToString());
        for (const auto& b : page->items) {
          if (!IsImageManifestType(b.media_type) || Gone(b.digest)) continue;
          auto a = Lookup(kImagesAlgIno, b.digest.hex());
          if (a) out.push_back({std::string(b.digest.hex()), *a});
        }
        if (!page->next) break;
        after = page->next;
      }
    }
    return out;
  }
  if (f.synthetic) {
    if (f.synthetic->kind != kImageDir) return Fail(ENOTDIR, "not a directory");
    add(".", GetAttr(ino));
    add("..", GetAttr(kImagesAlgIno));
    add("lowerdir", Lookup(ino, "lowerdir"));
    add("rootfs", Lookup(ino, "rootfs"));
    return out;
  }
  const TreeView& v = *f.view;
  if (Denied(v)) return Withheld("denied");
  const Node& n = v.nodes[f.node];
  if (n.entry->type != EntryType::kDirectory) return Fail(ENOTDIR, "not a directory");
  out.reserve(n.children.size() + 2);
  out.push_back({".", NodeAttr(v, f.node)});
  if (f.node == 0) {
    add("..", GetAttr(v.parent_ino));
  } else {
    out.push_back({"..", NodeAttr(v, n.parent)});
  }
  for (const auto& [name, index] : n.children) out.push_back({name, NodeAttr(v, index)});
  return out;
}

Result<void> Namespace::ReadDirFrom(
    Ino ino, std::uint64_t offset, const std::function<bool(const DirEntry&, std::uint64_t)>& fn) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(ino));
  if (!f.view) {
    DIGESTD_ASSIGN_OR_RETURN(auto all, ReadDir(ino));
    for (std::uint64_t i = offset; i < all.size(); ++i) {
      if (!fn(all[i], i + 1)) break;
    }
    return {};
  }
  const TreeView& v = *f.view;
  if (Denied(v)) return Withheld("denied");
  const Node& n = v.nodes[f.node];
  if (n.entry->type != EntryType::kDirectory) return Fail(ENOTDIR, "not a directory");
  for (std::uint64_t i = offset; i < n.children.size() + 2; ++i) {
    DirEntry d;
    if (i == 0) {
      d = {".", NodeAttr(v, f.node)};
    } else if (i == 1) {
      if (f.node == 0) {
        auto a = GetAttr(v.parent_ino);
        if (!a) return a.error();
        d = {"..", *a};
      } else {
        d = {"..", NodeAttr(v, n.parent)};
      }
    } else {
      const auto& [name, index] = n.children[i - 2];
      d = {name, NodeAttr(v, index)};
    }
    if (!fn(d, i + 1)) break;
  }
  return {};
}

bool Namespace::IsDynamic(Ino ino) const {
  if (FindFixed(ino) != nullptr) return true;
  std::lock_guard lock(mu_);
  return synthetic_.count(ino) != 0;
}

Result<std::string> Namespace::ReadLink(Ino ino) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(ino));
  if (!f.view) return Fail(EINVAL, "not a symlink");
  if (Denied(*f.view)) return Withheld("denied");
  const TreeEntry& e = *f.view->nodes[f.node].entry;
  if (e.type != EntryType::kSymlink) return Fail(EINVAL, "not a symlink");
  return e.symlink_target;
}

Result<Content> Namespace::Open(Ino ino) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(ino));
  if (f.fixed) return Fail(EISDIR, "is a directory");
  if (f.synthetic) {
    if (Gone(f.synthetic->digest)) return Withheld("denied");
    switch (f.synthetic->kind) {
      case kBlobFile: {
        auto fd = store_.OpenBlob(f.synthetic->digest);
        if (!fd) return Fail(ENOENT, fd.error().ToString());
        return Content{.fd = std::move(*fd)};
      }
      case kLowerdirFile: {
        DIGESTD_ASSIGN_OR_RETURN(auto text, LowerdirText(f.synthetic->digest));
        return Content{.bytes = std::move(text)};
      }
      default: return Fail(EISDIR, "is a directory");
    }
  }
  if (Denied(*f.view)) return Withheld("denied");
  const TreeEntry& e = *f.view->nodes[f.node].entry;
  if (e.type == EntryType::kDirectory) return Fail(EISDIR, "is a directory");
  if (e.type != EntryType::kRegular) return Fail(EINVAL, "not a regular file");
  auto fd = store_.OpenFile(*e.content);
  if (!fd) {
    // Out of fds is the caller's to handle (it closes cached ones and retries); anything else
    // is a tree whose object is gone: damage.
    const int err = fd.error().sys_errno();
    return Fail(err == EMFILE || err == ENFILE ? err : EIO, fd.error().ToString());
  }
  // A file object cut short (or grown) under the running mount is never served: a reader would
  // get the wrong bytes, or a short file, with no error. Full re-hashing is scrub's job.
  struct stat st {};
  if (::fstat(fd->Get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != e.size) {
    const std::string why = "file object " + e.content->ToString() + " of " + Quote(e.path) +
                            " has " + std::to_string(st.st_size) + " bytes, its tree says " +
                            std::to_string(e.size);
    bool first = false;
    {
      std::lock_guard lock(damaged_mu_);
      first = damaged_.insert(*e.content).second;
    }
    if (first) {
      // A failure is logged and counted by the store; the read fails with EIO either way.
      (void)store_.AppendAudit(store::AuditEvent{
          .type = "mount.damaged",
          .component = "mount",
          .digest = e.content->ToString(),
          .reason = why + "; run digestctl scrub --repair, then pull the image again"});
    }
    return Fail(EIO, why);
  }
  return Content{.fd = std::move(*fd)};
}

Result<std::vector<std::pair<std::string, std::string>>> Namespace::Xattrs(Ino ino) {
  DIGESTD_ASSIGN_OR_RETURN(auto f, Resolve(ino));
  std::vector<std::pair<std::string, std::string>> out;
  if (!f.view) return out;
  if (Denied(*f.view)) return Withheld("denied");
  const TreeEntry& e = *f.view->nodes[f.node].entry;
  out = e.xattrs;
  if (!f.view->merged && e.type == EntryType::kDirectory && e.opaque) {
    out.emplace_back("trusted.overlay.opaque", "y");
    std::sort(out.begin(), out.end());
  }
  return out;
}

std::vector<Digest> Namespace::ImagesUsing(const Digest& digest) const {
  std::vector<Digest> out;
  std::lock_guard lock(mu_);
  for (const auto& [manifest, view] : image_views_) {
    if (std::find(view->guards.begin(), view->guards.end(), digest) != view->guards.end()) {
      out.push_back(view->guards.front());  // guards[0] is the manifest
    }
  }
  return out;
}

std::vector<DroppedRange> Namespace::Ranges(const Digest& digest) const {
  std::lock_guard lock(mu_);
  return RangesLocked(digest);
}

std::vector<DroppedRange> Namespace::RangesLocked(const Digest& digest) const {
  std::vector<DroppedRange> out;
  const std::string key = digest.ToString();
  if (auto it = layer_views_.find(key); it != layer_views_.end()) {
    out.push_back({it->second->base, it->second->nodes.size()});
  }
  for (const auto& [manifest, view] : image_views_) {
    if (std::find(view->guards.begin(), view->guards.end(), digest) != view->guards.end()) {
      out.push_back({view->base, view->nodes.size()});
    }
  }
  for (int kind : {kBlobFile, kLowerdirFile, kImageDir}) {
    auto it = synthetic_by_key_.find(std::to_string(kind) + key);
    if (it != synthetic_by_key_.end()) out.push_back({it->second, 1});
  }
  return out;
}

std::vector<DroppedRange> Namespace::Drop(const Digest& digest) {
  std::lock_guard lock(mu_);
  auto out = RangesLocked(digest);
  const std::string key = digest.ToString();
  for (const auto& r : out) views_.erase(r.first);
  layer_views_.erase(key);
  for (auto it = image_views_.begin(); it != image_views_.end();) {
    const auto& g = it->second->guards;
    it = std::find(g.begin(), g.end(), digest) != g.end() ? image_views_.erase(it) : std::next(it);
  }
  for (int kind : {kBlobFile, kLowerdirFile, kImageDir}) {
    auto it = synthetic_by_key_.find(std::to_string(kind) + key);
    if (it == synthetic_by_key_.end()) continue;
    synthetic_.erase(it->second);
    synthetic_by_key_.erase(it);
  }
  return out;
}

void Namespace::Ref(Ino ino) {
  std::lock_guard lock(lookup_mu_);
  ++lookups_[ino];
}

void Namespace::Forget(Ino ino, std::uint64_t n) {
  std::lock_guard lock(lookup_mu_);
  auto it = lookups_.find(ino);
  if (it == lookups_.end() || it->second < n) {
    // Lookups a predecessor answered (an adopted session): the kernel's count is not ours to
    // check. Counted, so a mount that never adopted and still sees these shows a bug.
    ++unmatched_forgets_;
    if (it != lookups_.end()) lookups_.erase(it);
    return;
  }
  it->second -= n;
  if (it->second == 0) lookups_.erase(it);
}

std::uint64_t Namespace::unmatched_forgets() const {
  std::lock_guard lock(lookup_mu_);
  return unmatched_forgets_;
}

std::uint64_t Namespace::LookupCount(Ino ino) const {
  std::lock_guard lock(lookup_mu_);
  auto it = lookups_.find(ino);
  return it == lookups_.end() ? 0 : it->second;
}

}  // namespace digestd::fusefs
