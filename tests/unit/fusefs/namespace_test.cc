// The mount's namespace without a mount: layout, attributes, merged views, xattrs, denial,
// lookup counts.

#include "fusefs/namespace.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "testing/store_image.h"
#include "testkit/tar_builder.h"
#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::fusefs {
namespace {

using digestd::testing::PutImage;
using digestd::testing::StoredImage;
using digestd::testing::TarBuilder;
using digestd::testing::TempDir;

class NamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::Open({.root = dir_.path() / "store"});
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
    TarBuilder base;
    base.Dir("bin/")
        .File("bin/busybox", "BUSYBOX", {.mode = 04755})
        .Hardlink("bin/sh", "bin/busybox")
        .Hardlink("bin/ls", "bin/busybox")
        .Symlink("bin/link", "/etc/../../outside")
        .Dir("etc/")
        .File("etc/passwd", "root:x:0:0")
        .File("etc/hosts", "127.0.0.1 localhost")
        .Dir("opt/")
        .File("opt/lower-only", "hidden by the opaque dir above")
        .Dir("tmp/", {.mode = 01777});
    TarBuilder top;
    top.File("etc/.wh.hosts", "")
        .File("opt/.wh..wh..opq", "")
        .Xattr("user.tag", "v1")
        .Xattr("security.capability", "cap")
        .File("opt/upper", "upper")
        .File("etc/passwd", "root:x:0:0:replaced")
        .CharDev("dev/null", 1, 3, {.mode = 0666});
    auto img = PutImage(*store_, {base.Finish(), top.Finish()});
    ASSERT_TRUE(img.has_value()) << img.error().ToString();
    image_ = *img;
    ns_ = std::make_unique<Namespace>(
        *store_, NamespaceOptions{.mountpoint = "/run/digestd/mnt", .blobs_gid = kAdminGid});
  }

  Attr Walk(std::string_view path) {
    Ino ino = kRootIno;
    Attr a{};
    std::size_t pos = 0;
    while (pos < path.size()) {
      auto next = path.find('/', pos);
      if (next == std::string_view::npos) next = path.size();
      auto r = ns_->Lookup(ino, path.substr(pos, next - pos));
      EXPECT_TRUE(r.has_value()) << path << ": " << (r ? "" : r.error().ToString());
      if (!r) return {};
      a = *r;
      ino = a.ino;
      pos = next + 1;
    }
    return a;
  }
  int WalkErrno(std::string_view path) {
    Ino ino = kRootIno;
    std::size_t pos = 0;
    while (pos < path.size()) {
      auto next = path.find('/', pos);
      if (next == std::string_view::npos) next = path.size();
      auto r = ns_->Lookup(ino, path.substr(pos, next - pos));
      if (!r) return r.error().sys_errno();
      ino = r->ino;
      pos = next + 1;
    }
    return 0;
  }
  std::string Read(Ino ino) {
    auto c = ns_->Open(ino);
    EXPECT_TRUE(c.has_value());
    if (!c) return {};
    if (!c->fd) return c->bytes;
    std::string out(1 << 16, '\0');
    const ssize_t n = ::pread(c->fd.Get(), out.data(), out.size(), 0);
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return out;
  }
  std::vector<std::string> Names(Ino ino) {
    auto entries = ns_->ReadDir(ino);
    EXPECT_TRUE(entries.has_value());
    std::vector<std::string> names;
    if (entries) {
      for (const auto& e : *entries) names.push_back(e.name);
    }
    return names;
  }
  std::string Layer(std::size_t i) { return "layers/sha256/" + std::string(image_.layers[i].hex()); }
  std::string Image() { return "images/sha256/" + std::string(image_.manifest.hex()); }

  TempDir dir_;
  store::StorePtr store_;
  StoredImage image_{verify::Digest::Parse("sha256:" + std::string(64, '0')).value(), {}};
  std::unique_ptr<Namespace> ns_;
  static constexpr std::uint32_t kAdminGid = 4242;
};

TEST_F(NamespaceTest, TopLayoutAndBlobs) {
  EXPECT_EQ(Names(kRootIno), (std::vector<std::string>{".", "..", "blobs", "layers", "images"}));
  const Attr blobs = Walk("blobs/sha256");
  EXPECT_TRUE(S_ISDIR(blobs.mode));
  auto listing = Names(blobs.ino);
  EXPECT_EQ(listing.size(), 2u + 4u);  // 2 layers, config, manifest
  const Attr manifest = Walk("blobs/sha256/" + std::string(image_.manifest.hex()));
  // Raw blobs would bypass the modes inside layers: root and the admin group only.
  EXPECT_EQ(manifest.mode, static_cast<std::uint32_t>(S_IFREG | 0440));
  EXPECT_EQ(manifest.gid, kAdminGid);
  EXPECT_EQ(blobs.mode, static_cast<std::uint32_t>(S_IFDIR | 0750));
  EXPECT_EQ(blobs.gid, kAdminGid);
  EXPECT_EQ(Walk("blobs").mode, static_cast<std::uint32_t>(S_IFDIR | 0750));
  EXPECT_EQ(Walk("layers").mode, static_cast<std::uint32_t>(S_IFDIR | 0555));
  EXPECT_NE(Read(manifest.ino).find("schemaVersion"), std::string::npos);
  EXPECT_EQ(WalkErrno("blobs/sha256/" + std::string(64, 'a')), ENOENT);
  EXPECT_EQ(WalkErrno("blobs/sha256/not-a-digest"), ENOENT);
  EXPECT_EQ(WalkErrno("blobs/sha256/../../etc"), EINVAL);  // the kernel never asks for ".."
  EXPECT_EQ(WalkErrno("nothing"), ENOENT);
  EXPECT_EQ(Names(Walk("layers/sha256").ino).size(), 2u + 2u);
  EXPECT_EQ(Names(Walk("images/sha256").ino).size(), 2u + 1u);
}

TEST_F(NamespaceTest, LayerViewForOverlayfs) {
  const Attr busybox = Walk(Layer(0) + "/bin/busybox");
  const Attr sh = Walk(Layer(0) + "/bin/sh");
  EXPECT_EQ(busybox.ino, sh.ino);  // hard links: one inode
  EXPECT_EQ(busybox.nlink, 3u);
  EXPECT_EQ(busybox.mode, static_cast<std::uint32_t>(S_IFREG | 04755));
  EXPECT_EQ(Read(sh.ino), "BUSYBOX");
  const Attr link = Walk(Layer(0) + "/bin/link");
  EXPECT_TRUE(S_ISLNK(link.mode));
  EXPECT_EQ(ns_->ReadLink(link.ino).value(), "/etc/../../outside");
  EXPECT_EQ(Walk(Layer(0) + "/tmp").mode, static_cast<std::uint32_t>(S_IFDIR | 01777));
  const Attr bin = Walk(Layer(0) + "/bin");
  EXPECT_EQ(bin.nlink, 2u);
  EXPECT_EQ(Walk(Layer(0)).nlink, 2u + 4u);  // bin etc opt tmp

  // Whiteouts are 0:0 character devices; opaque directories carry the overlay xattr.
  const Attr wh = Walk(Layer(1) + "/etc/hosts");
  EXPECT_TRUE(S_ISCHR(wh.mode));
  EXPECT_EQ(wh.rdev_major, 0u);
  EXPECT_EQ(wh.rdev_minor, 0u);
  const Attr opt = Walk(Layer(1) + "/opt");
  auto xs = ns_->Xattrs(opt.ino);
  ASSERT_OK(xs);
  ASSERT_EQ(xs->size(), 1u);
  EXPECT_EQ((*xs)[0], (std::pair<std::string, std::string>{"trusted.overlay.opaque", "y"}));
  auto upper = ns_->Xattrs(Walk(Layer(1) + "/opt/upper").ino);
  ASSERT_OK(upper);
  EXPECT_EQ(upper->size(), 2u);
  const Attr null = Walk(Layer(1) + "/dev/null");
  EXPECT_TRUE(S_ISCHR(null.mode));
  EXPECT_EQ(null.rdev_major, 1u);

  // Errors.
  EXPECT_EQ(WalkErrno(Layer(0) + "/etc/passwd/x"), ENOTDIR);
  EXPECT_EQ(ns_->ReadLink(busybox.ino).error().sys_errno(), EINVAL);
  EXPECT_EQ(ns_->Open(bin.ino).error().sys_errno(), EISDIR);
  // Stable inode numbers.
  EXPECT_EQ(Walk(Layer(0) + "/bin/busybox").ino, busybox.ino);
}

TEST_F(NamespaceTest, MergedRootfsAndLowerdir) {
  const std::string root = Image() + "/rootfs";
  EXPECT_EQ(Names(Walk(root).ino),
            (std::vector<std::string>{".", "..", "bin", "dev", "etc", "opt", "tmp"}));
  EXPECT_EQ(Names(Walk(root + "/etc").ino), (std::vector<std::string>{".", "..", "passwd"}));
  EXPECT_EQ(Read(Walk(root + "/etc/passwd").ino), "root:x:0:0:replaced");
  EXPECT_EQ(WalkErrno(root + "/etc/hosts"), ENOENT);
  EXPECT_EQ(Names(Walk(root + "/opt").ino), (std::vector<std::string>{".", "..", "upper"}));
  EXPECT_TRUE(ns_->Xattrs(Walk(root + "/opt").ino)->empty());  // no overlay xattrs when merged
  EXPECT_EQ(Walk(root + "/bin/ls").nlink, 3u);
  EXPECT_EQ(Walk(root + "/bin/ls").ino, Walk(root + "/bin/sh").ino);

  const Attr lowerdir = Walk(Image() + "/lowerdir");
  const std::string want = "/run/digestd/mnt/" + Layer(1) + ":/run/digestd/mnt/" + Layer(0);
  EXPECT_EQ(Read(lowerdir.ino), want);
  EXPECT_EQ(lowerdir.size, want.size());
  EXPECT_EQ(Names(Walk(Image()).ino), (std::vector<std::string>{".", "..", "lowerdir", "rootfs"}));
  // A layer is not an image.
  EXPECT_EQ(WalkErrno("images/sha256/" + std::string(image_.layers[0].hex())), ENOENT);
}

TEST_F(NamespaceTest, ATruncatedFileObjectIsNeverServed) {
  const std::string path = Image() + "/rootfs/etc/passwd";
  ASSERT_EQ(Read(Walk(path).ino), "root:x:0:0:replaced");
  // The object is cut short on disk under the running mount (a failing disk, a careless hand).
  const auto hex = std::string(verify::Hasher::Of(verify::DigestAlgorithm::kSha256,
                                                  "root:x:0:0:replaced")
                                   .hex());
  const auto object = dir_.path() / "store" / "files" / "sha256" / hex.substr(0, 2) / hex;
  ASSERT_TRUE(std::filesystem::exists(object));
  std::filesystem::permissions(object, std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  std::filesystem::resize_file(object, 4);
  for (int i = 0; i < 3; ++i) {
    auto c = ns_->Open(Walk(path).ino);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().sys_errno(), EIO);
  }
  // Audited once, naming the object and what to do.
  auto audit = store_->ReadAudit(0, 1000);
  ASSERT_TRUE(audit.has_value());
  int damaged = 0;
  for (const auto& e : *audit) {
    if (e.json.find("mount.damaged") != std::string::npos) {
      ++damaged;
      EXPECT_NE(e.json.find(hex), std::string::npos) << e.json;
      EXPECT_NE(e.json.find("scrub --repair"), std::string::npos) << e.json;
    }
  }
  EXPECT_EQ(damaged, 1);
  // Other files still read.
  EXPECT_EQ(Read(Walk(Image() + "/rootfs/bin/busybox").ino), "BUSYBOX");
}

TEST_F(NamespaceTest, DeniedDigestsVanishAtOnce) {
  const Attr passwd = Walk(Image() + "/rootfs/etc/passwd");
  const Attr layer_file = Walk(Layer(0) + "/etc/passwd");
  ASSERT_OK(store_->Deny(image_.layers[0], "test"));
  EXPECT_EQ(WalkErrno(Layer(0)), ENOENT);
  EXPECT_EQ(WalkErrno(Image()), ENOENT);
  EXPECT_EQ(ns_->GetAttr(layer_file.ino).error().sys_errno(), ENOENT);
  EXPECT_EQ(ns_->Open(layer_file.ino).error().sys_errno(), ENOENT);
  EXPECT_EQ(ns_->Open(passwd.ino).error().sys_errno(), ENOENT);  // the image uses the layer
  EXPECT_EQ(Names(Walk("layers/sha256").ino).size(), 2u + 1u);
  EXPECT_EQ(WalkErrno("blobs/sha256/" + std::string(image_.layers[0].hex())), ENOENT);
  ASSERT_OK(store_->Undeny(image_.layers[0]));
  EXPECT_EQ(ns_->GetAttr(layer_file.ino).value().ino, layer_file.ino);
}

// A removed object is never served from a view built before the removal (found by review:
// after a wipe and a re-pull, a rootfs view read NULs through a cached fd, and the wiped layer's
// names stayed listable). Lookups check the store still holds the tree; Drop forgets the views
// (their inode numbers answer ENOENT and are not reused); a re-built view serves fresh content.
TEST_F(NamespaceTest, RemovedObjectsLeaveNoViews) {
  const Attr layer_root = Walk(Layer(1));
  const Attr layer_file = Walk(Layer(1) + "/opt/upper");
  const Attr rootfs_file = Walk(Image() + "/rootfs/opt/upper");
  EXPECT_EQ(Read(rootfs_file.ino), "upper");
  ASSERT_OK(store_->RemoveBlob(image_.layers[1]));
  // The store no longer holds the tree: the cached view is not served by name.
  EXPECT_EQ(WalkErrno(Layer(1)), ENOENT);
  EXPECT_EQ(WalkErrno(Image()), ENOENT);
  const auto dropped = ns_->Drop(image_.layers[1]);
  ASSERT_EQ(dropped.size(), 2u);  // the layer's view and the image's rootfs view
  for (Ino ino : {layer_root.ino, layer_file.ino, rootfs_file.ino}) {
    EXPECT_EQ(ns_->GetAttr(ino).error().sys_errno(), ENOENT) << ino;
    EXPECT_EQ(ns_->Open(ino).error().sys_errno(), ENOENT) << ino;
    bool covered = false;
    for (const auto& r : dropped) covered = covered || (ino >= r.first && ino - r.first < r.count);
    EXPECT_TRUE(covered) << ino;
  }
  // The untouched layer keeps its view and numbers.
  EXPECT_EQ(Walk(Layer(0) + "/etc").ino, Walk(Layer(0) + "/etc").ino);
  EXPECT_TRUE(ns_->Drop(image_.layers[1]).empty());  // idempotent
}

TEST_F(NamespaceTest, LookupCounts) {
  const Attr a = Walk(Layer(0) + "/etc");
  ns_->Ref(a.ino);
  ns_->Ref(a.ino);
  EXPECT_EQ(ns_->LookupCount(a.ino), 2u);
  ns_->Forget(a.ino, 2);
  EXPECT_EQ(ns_->LookupCount(a.ino), 0u);
  EXPECT_EQ(ns_->unmatched_forgets(), 0u);
  // A successor that adopted the kernel's connection gets forgets for lookups its predecessor
  // answered: accepted (never an abort), and counted.
  ns_->Forget(a.ino, 1);
  ns_->Forget(987654, 3);
  EXPECT_EQ(ns_->unmatched_forgets(), 2u);
  EXPECT_EQ(ns_->LookupCount(a.ino), 0u);
}

// The numbers the kernel holds must mean the same objects in a later process: they come from the
// index, not from the order of lookups.
TEST_F(NamespaceTest, InodeNumbersDoNotDependOnLookupOrder) {
  const std::vector<std::string> paths = {
      Layer(1) + "/opt/upper",      Image() + "/rootfs/etc/passwd", Image() + "/lowerdir",
      Layer(0) + "/bin/sh",         Image() + "/rootfs/opt",        Image(),
      "blobs/sha256/" + std::string(image_.layers[0].hex()),        Layer(0)};
  std::map<std::string, Ino> first;
  for (const auto& p : paths) first[p] = Walk(p).ino;
  // Every number distinct (hard links aside, none here), none of the fixed ones.
  std::set<Ino> distinct;
  for (const auto& [p, ino] : first) {
    EXPECT_GE(ino, store::kFirstRangeIno) << p;
    distinct.insert(ino);
  }
  EXPECT_EQ(distinct.size(), paths.size());

  // Another namespace, walking in the opposite order, after the store was closed and reopened.
  ns_.reset();
  store_.reset();
  auto s = store::Store::Open({.root = dir_.path() / "store"});
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  store_ = std::move(*s);
  ns_ = std::make_unique<Namespace>(*store_, NamespaceOptions{.mountpoint = "/run/digestd/mnt"});
  for (auto it = paths.rbegin(); it != paths.rend(); ++it) {
    EXPECT_EQ(Walk(*it).ino, first[*it]) << *it;
  }
}

TEST_F(NamespaceTest, ASuccessorAnswersForNumbersItNeverHandedOut) {
  const Attr file = Walk(Image() + "/rootfs/etc/passwd");
  const Attr dir = Walk(Layer(0) + "/bin");
  const Attr lowerdir = Walk(Image() + "/lowerdir");
  const Attr image_dir = Walk(Image());
  const Attr blob = Walk("blobs/sha256/" + std::string(image_.layers[1].hex()));
  const std::string lowerdir_text = Read(lowerdir.ino);

  // A fresh namespace over the same store (a restarted daemon): the kernel asks by number only.
  auto successor = std::make_unique<Namespace>(
      *store_, NamespaceOptions{.mountpoint = "/run/digestd/mnt", .blobs_gid = kAdminGid});
  ns_.swap(successor);
  auto a = ns_->GetAttr(file.ino);
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  EXPECT_EQ(a->size, file.size);
  EXPECT_EQ(Read(file.ino), "root:x:0:0:replaced");
  EXPECT_EQ(Names(dir.ino), (std::vector<std::string>{".", "..", "busybox", "link", "ls", "sh"}));
  EXPECT_EQ(Read(lowerdir.ino), lowerdir_text);
  EXPECT_EQ(Names(image_dir.ino), (std::vector<std::string>{".", "..", "lowerdir", "rootfs"}));
  EXPECT_EQ(ns_->GetAttr(blob.ino)->size, blob.size);
  EXPECT_TRUE(ns_->IsDynamic(image_dir.ino));
  // And a name looked up afresh gets the number the kernel already has.
  EXPECT_EQ(Walk(Image() + "/rootfs/etc/passwd").ino, file.ino);

  // A number no range holds, and one past a view's last node, are unknown.
  EXPECT_EQ(ns_->GetAttr(Ino{1} << 40).error().sys_errno(), ENOENT);
  // Denial still applies to numbers resolved this way.
  auto fresh = std::make_unique<Namespace>(*store_, NamespaceOptions{.mountpoint = "/m"});
  ASSERT_OK(store_->Deny(image_.layers[0], "test"));
  EXPECT_EQ(fresh->GetAttr(dir.ino).error().sys_errno(), ENOENT);
  EXPECT_EQ(fresh->GetAttr(file.ino).error().sys_errno(), ENOENT);
}

// A hand-over's successor builds, before it serves, the views its predecessor had built (what
// the predecessor lists in Built()): the same ones, with the same numbers; digests that are no
// view (one not in the store) are skipped.
TEST_F(NamespaceTest, ASuccessorWarmsTheViewsItsPredecessorServed) {
  EXPECT_TRUE(ns_->Built().empty());
  const Attr file = Walk(Image() + "/rootfs/etc/passwd");
  auto built = ns_->Built();
  std::sort(built.begin(), built.end());
  std::vector<verify::Digest> expected = {image_.manifest, image_.layers[0], image_.layers[1]};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(built, expected);

  auto successor = std::make_unique<Namespace>(
      *store_, NamespaceOptions{.mountpoint = "/run/digestd/mnt", .blobs_gid = kAdminGid});
  for (const auto& d : built) successor->Warm(d);
  successor->Warm(verify::Digest::Parse("sha256:" + std::string(64, '1')).value());
  auto warmed = successor->Built();
  std::sort(warmed.begin(), warmed.end());
  EXPECT_EQ(warmed, expected);
  ns_.swap(successor);
  auto a = ns_->GetAttr(file.ino);
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  EXPECT_EQ(Read(file.ino), "root:x:0:0:replaced");
}

TEST_F(NamespaceTest, ReadDirFromResumesAtOffsets) {
  const Attr bin = Walk(Layer(0) + "/bin");
  std::vector<std::string> names;
  std::uint64_t offset = 0;
  for (;;) {  // one entry per call, as a kernel with a tiny buffer would ask
    bool got = false;
    ASSERT_OK(ns_->ReadDirFrom(bin.ino, offset, [&](const DirEntry& d, std::uint64_t next) {
      names.push_back(d.name);
      offset = next;
      got = true;
      return false;
    }));
    if (!got) break;
  }
  EXPECT_EQ(names, (std::vector<std::string>{".", "..", "busybox", "link", "ls", "sh"}));
}

}  // namespace
}  // namespace digestd::fusefs
