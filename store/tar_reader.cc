#include "store/tar_reader.h"
#include "store/errors.h"

#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace digestd::store {
namespace {

Error Hostile(std::string_view path, std::string context) {
  return StoreError(Errc::kCorrupt,
                   "layer entry " + Quote(path) + ": " + std::move(context));
}

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr std::string_view kAufsMetaPrefix = ".wh..wh.";

bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

// Normalises a tar path: strips "./" prefixes, collapses empty and "." components and trailing
// slashes. Refuses absolute paths, "..", control characters and names over NAME_MAX.
Result<std::string> Normalize(std::string_view raw, const UnpackLimits& limits) {
  if (raw.empty()) return Hostile(raw, "empty name");
  if (raw.front() == '/') return Hostile(raw, "absolute path");
  if (raw.size() > limits.max_path + 2) return Hostile(raw.substr(0, 64), "path too long");
  std::string out;
  std::size_t depth = 0;
  std::size_t pos = 0;
  while (pos <= raw.size()) {
    std::size_t next = raw.find('/', pos);
    if (next == std::string_view::npos) next = raw.size();
    const std::string_view comp = raw.substr(pos, next - pos);
    pos = next + 1;
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") return Hostile(raw, "\"..\" component");
    if (comp.size() > 255) return Hostile(raw.substr(0, 64), "name longer than 255 bytes");
    for (unsigned char c : comp) {
      if (IsControl(c)) return Hostile(raw, "control character in name");
    }
    if (++depth > limits.max_depth) return Hostile(raw.substr(0, 64), "path too deep");
    if (!out.empty()) out.push_back('/');
    out.append(comp);
  }
  if (out.size() > limits.max_path) return Hostile(raw.substr(0, 64), "path too long");
  return out;
}

std::string_view Parent(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}
std::string_view BaseName(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}
std::string Join(std::string_view dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  std::string p(dir);
  p.push_back('/');
  p.append(name);
  return p;
}

// The uncompressed stream as libarchive reads it.
class ChunkReader {
 public:
  virtual ~ChunkReader() = default;
  // Next chunk of uncompressed bytes; empty at the end of the stream. Valid until the next call.
  virtual Result<std::span<const std::byte>> Next() = 0;

  // Reads (and hashes) whatever libarchive left unread: padding after the end-of-archive blocks
  // is part of the diff_id.
  Result<void> Drain() {
    for (;;) {
      DIGESTD_ASSIGN_OR_RETURN(auto chunk, Next());
      if (chunk.empty()) return {};
    }
  }

  std::optional<Error> failure;  // the error behind libarchive's last read failure
};

// Takes the compressed bytes from the source and decodes them into a bounded buffer (the decoder
// hashes what it produces: the diff_id). The first bytes must carry the magic of the media type's
// compression.
class StreamReader final : public ChunkReader {
 public:
  StreamReader(ByteSource& source, LayerDecoder& decoder, LayerDecoder::Kind kind)
      : source_(source), decoder_(decoder), kind_(kind) {}

  Result<std::span<const std::byte>> Next() override {
    for (;;) {
      std::size_t consumed = 0;
      DIGESTD_ASSIGN_OR_RETURN(std::size_t produced, decoder_.Decode(in_, &consumed, out_));
      in_ = in_.subspan(consumed);
      if (produced > 0) return std::span<const std::byte>(out_.data(), produced);
      if (consumed > 0) continue;
      if (!in_.empty()) {
        return StoreError(Errc::kCorrupt, "corrupt stream: decoder made no progress");
      }
      if (eof_) return std::span<const std::byte>();
      DIGESTD_ASSIGN_OR_RETURN(in_, source_.Next());
      if (!sniffed_) {
        DIGESTD_RETURN_IF_ERROR(SniffMatches(in_));
        sniffed_ = true;
      }
      if (in_.empty()) eof_ = true;
    }
  }


 private:
  Result<void> SniffMatches(std::span<const std::byte> head) const {
    const auto b = [&](std::size_t i) {
      return i < head.size() ? static_cast<unsigned char>(head[i]) : 0u;
    };
    const bool gzip = head.size() >= 2 && b(0) == 0x1f && b(1) == 0x8b;
    const bool zstd = head.size() >= 4 && b(0) == 0x28 && b(1) == 0xb5 && b(2) == 0x2f &&
                      b(3) == 0xfd;
    const bool ok = kind_ == LayerDecoder::Kind::kGzip   ? gzip
                    : kind_ == LayerDecoder::Kind::kZstd ? zstd
                                                         : !gzip && !zstd;
    if (!ok) {
      return StoreError(Errc::kCorrupt,
                       "layer content does not match its media type (sniffed " +
                           std::string(gzip ? "gzip" : zstd ? "zstd" : "neither gzip nor zstd") +
                           ")");
    }
    return {};
  }

  ByteSource& source_;
  LayerDecoder& decoder_;
  const LayerDecoder::Kind kind_;
  std::span<const std::byte> in_;  // compressed bytes not yet decoded (a view into the source)
  std::vector<std::byte> out_ = std::vector<std::byte>(1u << 20);
  bool sniffed_ = false;
  bool eof_ = false;
};

// Runs a StreamReader on a thread of its own, a few chunks ahead of libarchive: reading the
// source, hashing the compressed bytes (a following source does), decompressing and hashing the
// tar happen on one core while the tar is parsed and its files hashed and written on another.
class PipelinedReader final : public ChunkReader {
 public:
  static constexpr std::size_t kSlots = 4;
  static constexpr std::size_t kSlotSize = 1u << 20;

  explicit PipelinedReader(StreamReader& inner) : inner_(inner) {
    for (std::size_t i = 0; i < kSlots; ++i) {
      slots_[i].resize(kSlotSize);
      free_.push_back(i);
    }
    thread_ = std::thread([this] { Produce(); });
  }
  ~PipelinedReader() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Result<std::span<const std::byte>> Next() override {
    if (end_) return *end_;
    std::unique_lock lock(mu_);
    if (held_) {
      free_.push_back(*held_);
      held_.reset();
      cv_.notify_all();
    }
    cv_.wait(lock, [&] { return !ready_.empty(); });
    Item item = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    if (item.error) {
      end_ = *item.error;
      return *end_;
    }
    if (item.len == 0) {
      end_ = std::span<const std::byte>();
      return *end_;
    }
    held_ = item.slot;
    return std::span<const std::byte>(slots_[item.slot].data(), item.len);
  }

 private:
  struct Item {
    std::size_t slot = 0;
    std::size_t len = 0;
    std::optional<Error> error;
  };

  void Produce() {
    for (;;) {
      std::size_t slot = 0;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !free_.empty() || stop_; });
        if (stop_) return;
        slot = free_.back();
        free_.pop_back();
      }
      auto chunk = inner_.Next();  // at most the decoder's output buffer: fits a slot
      Item item{.slot = slot};
      if (!chunk) {
        item.error = chunk.error();
      } else {
        DIGESTD_CHECK(chunk->size() <= kSlotSize);
        if (!chunk->empty()) std::memcpy(slots_[slot].data(), chunk->data(), chunk->size());
        item.len = chunk->size();
      }
      const bool last = !chunk || chunk->empty();
      {
        std::lock_guard lock(mu_);
        ready_.push_back(std::move(item));
      }
      cv_.notify_all();
      if (last) return;
    }
  }

  StreamReader& inner_;
  std::array<std::vector<std::byte>, kSlots> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::size_t> free_;
  std::deque<Item> ready_;
  bool stop_ = false;
  std::optional<std::size_t> held_;  // the slot libarchive is reading (consumer side only)
  std::optional<Result<std::span<const std::byte>>> end_;  // EOF or error, sticky
  std::thread thread_;
};

la_ssize_t ReadCallback(struct archive* a, void* ctx, const void** buf) {
  auto* r = static_cast<ChunkReader*>(ctx);
  auto chunk = r->Next();
  if (!chunk) {
    r->failure = chunk.error();
    archive_set_error(a, EIO, "%s", chunk.error().ToString().c_str());
    return -1;
  }
  *buf = chunk->data();
  return static_cast<la_ssize_t>(chunk->size());
}

std::string ArchiveError(struct archive* a) {
  const char* e = archive_error_string(a);
  return e ? e : "unreadable header";
}

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// The tree as it is built: entries by path (bytewise order: parents first).
class TreeBuilder {
 public:
  explicit TreeBuilder(const UnpackLimits& limits) : limits_(limits) {
    TreeEntry root{.path = "", .type = EntryType::kDirectory, .mode = 0755, .implicit = true};
    entries_.emplace("", std::move(root));
  }

  // Makes sure every ancestor of `path` is a directory, creating implicit ones.
  Result<void> EnsureParents(std::string_view path) {
    std::string_view parent = Parent(path);
    if (parent.empty()) return {};
    // Walk down from the top so a symlink anywhere on the way is found.
    std::size_t pos = 0;
    for (;;) {
      const auto slash = parent.find('/', pos);
      const std::string prefix(parent.substr(0, slash));
      auto it = entries_.find(prefix);
      if (it == entries_.end()) {
        DIGESTD_RETURN_IF_ERROR(Count(path));
        entries_.emplace(prefix, TreeEntry{.path = prefix,
                                           .type = EntryType::kDirectory,
                                           .mode = 0755,
                                           .implicit = true});
      } else if (it->second.type != EntryType::kDirectory) {
        return Hostile(path, "path goes through " + Quote(prefix) + ", which is a " +
                                 std::string(EntryTypeName(it->second.type)) +
                                 ", not a directory");
      }
      if (slash == std::string_view::npos) return {};
      pos = slash + 1;
    }
  }

  // Adds or replaces `e` (last entry wins, as in tar).
  Result<void> Put(TreeEntry e) {
    DIGESTD_RETURN_IF_ERROR(EnsureParents(e.path));
    auto it = entries_.find(e.path);
    if (it != entries_.end()) {
      TreeEntry& old = it->second;
      if (old.type == EntryType::kDirectory && e.type == EntryType::kDirectory) {
        e.opaque = e.opaque || old.opaque;  // the marker may come before the directory's entry
        old = std::move(e);
        return {};
      }
      RemoveSubtree(it);
    } else {
      DIGESTD_RETURN_IF_ERROR(Count(e.path));
    }
    const std::string key = e.path;
    entries_.emplace(key, std::move(e));
    return {};
  }

  Result<void> MarkOpaque(std::string_view dir) {
    const std::string probe = Join(dir, "x");
    DIGESTD_RETURN_IF_ERROR(EnsureParents(probe));
    entries_.at(std::string(dir)).opaque = true;
    return {};
  }

  const TreeEntry* Find(const std::string& path) const {
    auto it = entries_.find(path);
    return it == entries_.end() ? nullptr : &it->second;
  }
  TreeEntry* FindMutable(const std::string& path) {
    auto it = entries_.find(path);
    return it == entries_.end() ? nullptr : &it->second;
  }

  std::uint32_t NewLinkGroup() { return ++link_groups_; }

  LayerTree Finish(verify::Digest diff_id) && {
    LayerTree tree{.layer = diff_id, .diff_id = diff_id};
    // Link groups that lost all but one member (the others were replaced) are plain files again;
    // content objects are counted once per distinct digest.
    std::map<std::uint32_t, std::size_t> group_sizes;
    for (const auto& [path, e] : entries_) {
      if (e.link_group != 0) ++group_sizes[e.link_group];
    }
    std::map<std::uint32_t, bool> counted;
    for (auto& [path, e] : entries_) {
      if (e.link_group != 0 && group_sizes[e.link_group] < 2) e.link_group = 0;
      if (e.type == EntryType::kRegular) {
        if (e.link_group == 0 || !counted[e.link_group]) tree.file_bytes += e.size;
        if (e.link_group != 0) counted[e.link_group] = true;
      }
    }
    std::vector<verify::Digest> contents;
    tree.entries.reserve(entries_.size());
    for (auto& [path, e] : entries_) {
      if (e.content) contents.push_back(*e.content);
      tree.entries.push_back(std::move(e));
    }
    std::sort(contents.begin(), contents.end());
    tree.files = static_cast<std::uint64_t>(
        std::unique(contents.begin(), contents.end()) - contents.begin());
    return tree;
  }

 private:
  Result<void> Count(std::string_view path) {
    if (++count_ > limits_.max_entries) {
      return Hostile(path, "more than " + std::to_string(limits_.max_entries) +
                               " entries in one layer");
    }
    return {};
  }

  void RemoveSubtree(std::map<std::string, TreeEntry>::iterator it) {
    const std::string path = it->first;
    entries_.erase(it);
    // Children sort between "<path>/" and "<path>0" ('0' follows '/').
    const std::string lo = path + "/";
    const std::string hi = path + "0";
    entries_.erase(entries_.lower_bound(lo), entries_.lower_bound(hi));
  }

  const UnpackLimits& limits_;
  std::map<std::string, TreeEntry> entries_;
  std::uint64_t count_ = 1;
  std::uint32_t link_groups_ = 0;
};

Result<std::uint32_t> Id(std::string_view path, const char* what, la_int64_t v) {
  if (v < 0 || v > 0xfffffffeLL) {
    return Hostile(path, std::string(what) + " " + std::to_string(v) + " out of range");
  }
  return static_cast<std::uint32_t>(v);
}

Result<void> ReadXattrs(struct archive_entry* ae, std::string_view path,
                        const UnpackLimits& limits, TreeEntry& e) {
  const char* name = nullptr;
  const void* value = nullptr;
  std::size_t size = 0;
  archive_entry_xattr_reset(ae);
  while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
    const std::string_view n = name ? name : "";
    if (n.empty() || n.size() > 255) return Hostile(path, "bad xattr name");
    for (unsigned char c : n) {
      if (IsControl(c)) return Hostile(path, "control character in xattr name");
    }
    if (n.starts_with("trusted.")) {
      return Hostile(path, "xattr " + Quote(n) +
                               " in the trusted namespace (could forge overlayfs metadata)");
    }
    // user.* and security.* (security.capability among them) are served; system.* (ACLs) and
    // unknown namespaces carry nothing the mount uses.
    if (!n.starts_with("user.") && !n.starts_with("security.")) continue;
    if (size > limits.max_xattr_value) return Hostile(path, "xattr " + Quote(n) + " too large");
    if (e.xattrs.size() >= limits.max_xattrs) return Hostile(path, "too many xattrs");
    e.xattrs.emplace_back(std::string(n),
                          std::string(static_cast<const char*>(value), value ? size : 0));
  }
  std::sort(e.xattrs.begin(), e.xattrs.end());
  // A name given twice keeps the last value (pax records are applied in order).
  e.xattrs.erase(std::unique(e.xattrs.begin(), e.xattrs.end(),
                             [](const auto& a, const auto& b) { return a.first == b.first; }),
                 e.xattrs.end());
  return {};
}

// Streams one regular file's data into the sink; sparse holes are zeros.
Result<verify::Digest> CopyData(struct archive* a, std::string_view path, std::uint64_t size,
                                ContentSink& sink) {
  DIGESTD_RETURN_IF_ERROR(sink.Begin(size));
  static const std::vector<std::byte> kZeros(64u << 10);
  std::uint64_t at = 0;
  for (;;) {
    const void* buf = nullptr;
    std::size_t len = 0;
    la_int64_t offset = 0;
    const int rc = archive_read_data_block(a, &buf, &len, &offset);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK) {
      return Hostile(path, std::string("reading data: ") + archive_error_string(a));
    }
    if (offset < 0 || static_cast<std::uint64_t>(offset) < at ||
        static_cast<std::uint64_t>(offset) > size || len > size - static_cast<std::uint64_t>(offset)) {
      return Hostile(path, "data block outside the file's size");
    }
    while (at < static_cast<std::uint64_t>(offset)) {
      const auto n = static_cast<std::size_t>(
          std::min<std::uint64_t>(kZeros.size(), static_cast<std::uint64_t>(offset) - at));
      DIGESTD_RETURN_IF_ERROR(sink.Append(std::span(kZeros.data(), n)));
      at += n;
    }
    DIGESTD_RETURN_IF_ERROR(sink.Append(std::span(static_cast<const std::byte*>(buf), len)));
    at += len;
  }
  while (at < size) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kZeros.size(), size - at));
    DIGESTD_RETURN_IF_ERROR(sink.Append(std::span(kZeros.data(), n)));
    at += n;
  }
  return sink.End();
}

}  // namespace

Result<void> ValidateTreePath(std::string_view path, const UnpackLimits& limits) {
  if (path.empty()) return {};
  auto norm = Normalize(path, limits);
  if (!norm) return norm.error();
  if (*norm != path) return Hostile(path, "path is not in normal form");
  return {};
}

Result<std::span<const std::byte>> FdSource::Next() {
  for (;;) {
    const ssize_t n = ::read(fd_, buf_.data(), buf_.size());
    if (n >= 0) return std::span<const std::byte>(buf_.data(), static_cast<std::size_t>(n));
    if (errno != EINTR) return SysError(Module::kStore, "read layer blob");
  }
}

Result<LayerTree> ReadLayerTree(int blob_fd, LayerDecoder::Kind kind, const UnpackLimits& limits,
                                ContentSink& sink) {
  if (::lseek(blob_fd, 0, SEEK_SET) != 0) return SysError(Module::kStore, "seek layer blob");
  FdSource source(blob_fd);
  return ReadLayerTree(source, kind, limits, sink, /*pipelined=*/false);
}

Result<LayerTree> ReadLayerTree(ByteSource& source, LayerDecoder::Kind kind,
                                const UnpackLimits& limits, ContentSink& sink, bool pipelined) {
  // The uncompressed stream is bounded by what the files may hold plus tar's own overhead
  // (headers, padding, pax records): a decompression bomb stops here.
  const std::uint64_t max_stream =
      limits.max_file_bytes + (limits.max_entries + 16) * 4096 + (std::uint64_t{64} << 20);
  DIGESTD_ASSIGN_OR_RETURN(auto decoder, LayerDecoder::Create(kind, max_stream));
  StreamReader stream(source, *decoder, kind);
  std::optional<PipelinedReader> pipe;
  if (pipelined) pipe.emplace(stream);
  ChunkReader& reader = pipe ? static_cast<ChunkReader&>(*pipe) : stream;

  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
  if (!a) return StoreError(Errc::kInternal, "archive_read_new failed");
  archive_read_support_format_tar(a.get());  // ustar, pax, GNU (libarchive's tar reader)
  if (archive_read_open(a.get(), &reader, nullptr, ReadCallback, nullptr) != ARCHIVE_OK) {
    if (reader.failure) return *reader.failure;
    return StoreError(Errc::kCorrupt,
                     std::string("not a tar archive: ") + archive_error_string(a.get()));
  }

  TreeBuilder tree(limits);
  std::uint64_t file_bytes = 0;
  std::uint64_t headers = 0;
  for (;;) {
    struct archive_entry* ae = nullptr;
    const int rc = archive_read_next_header(a.get(), &ae);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK) {
      if (reader.failure) return *reader.failure;
      // ARCHIVE_WARN too: libarchive warns for things like unknown pax keys it skipped, but
      // also for truncation; a gate refuses what it cannot read exactly.
      return StoreError(Errc::kCorrupt,
                       "bad tar archive after " + std::to_string(headers) +
                           " entries: " + ArchiveError(a.get()));
    }
    ++headers;
    const char* raw_path = archive_entry_pathname(ae);
    if (raw_path == nullptr) return Hostile("", "entry without a name");
    DIGESTD_ASSIGN_OR_RETURN(std::string path, Normalize(raw_path, limits));
    const std::string_view base = BaseName(path);
    const std::string_view dir = Parent(path);

    // Whiteouts (OCI image spec, "Representing Changes").
    if (base.starts_with(kWhiteoutPrefix)) {
      if (base == kOpaqueMarker) {
        DIGESTD_RETURN_IF_ERROR(tree.MarkOpaque(dir));
        continue;
      }
      if (base.starts_with(kAufsMetaPrefix)) continue;  // AUFS bookkeeping: not content
      const std::string_view hidden = base.substr(kWhiteoutPrefix.size());
      if (hidden.empty() || hidden == "." || hidden == "..") {
        return Hostile(path, "malformed whiteout");
      }
      DIGESTD_RETURN_IF_ERROR(tree.Put(TreeEntry{.path = Join(dir, hidden),
                                                 .type = EntryType::kWhiteout,
                                                 .mode = 0,
                                                 .mtime = archive_entry_mtime(ae)}));
      continue;
    }
    if (path.empty() && archive_entry_filetype(ae) != AE_IFDIR) {
      return Hostile(raw_path, "the layer root is not a directory");
    }

    TreeEntry e{.path = path};
    e.mode = static_cast<std::uint32_t>(archive_entry_perm(ae)) & 07777;
    DIGESTD_ASSIGN_OR_RETURN(e.uid, Id(path, "uid", archive_entry_uid(ae)));
    DIGESTD_ASSIGN_OR_RETURN(e.gid, Id(path, "gid", archive_entry_gid(ae)));
    e.mtime = archive_entry_mtime(ae);
    DIGESTD_RETURN_IF_ERROR(ReadXattrs(ae, path, limits, e));

    if (const char* link = archive_entry_hardlink(ae); link != nullptr) {
      DIGESTD_ASSIGN_OR_RETURN(std::string target, Normalize(link, limits));
      if (target == path) return Hostile(path, "hard link to itself");
      TreeEntry* t = tree.FindMutable(target);
      if (t == nullptr) return Hostile(path, "hard link to missing " + Quote(target));
      if (t->type != EntryType::kRegular) {
        return Hostile(path, "hard link to " + Quote(target) + ", which is a " +
                                 std::string(EntryTypeName(t->type)));
      }
      if (t->link_group == 0) t->link_group = tree.NewLinkGroup();
      TreeEntry linked = *t;  // one inode: same content, attributes and group
      linked.path = path;
      DIGESTD_RETURN_IF_ERROR(tree.Put(std::move(linked)));
      continue;
    }

    switch (archive_entry_filetype(ae)) {
      case AE_IFREG: {
        e.type = EntryType::kRegular;
        if (!archive_entry_size_is_set(ae) || archive_entry_size(ae) < 0) {
          return Hostile(path, "regular file without a size");
        }
        e.size = static_cast<std::uint64_t>(archive_entry_size(ae));
        if (e.size > limits.max_file_bytes - std::min(file_bytes, limits.max_file_bytes)) {
          return Hostile(path, "unpacks past the limit of " +
                                   std::to_string(limits.max_file_bytes) + " bytes of files");
        }
        file_bytes += e.size;
        auto content = CopyData(a.get(), path, e.size, sink);
        if (!content) {
          // A failing source (a corrupt stream, an abandoned download) says more than libarchive.
          if (reader.failure) return *reader.failure;
          return content.error();
        }
        e.content = std::move(*content);
        break;
      }
      case AE_IFDIR: e.type = EntryType::kDirectory; break;
      case AE_IFLNK: {
        e.type = EntryType::kSymlink;
        const char* target = archive_entry_symlink(ae);
        const std::string_view t = target ? target : "";
        if (t.empty() || t.size() > 4095) return Hostile(path, "symlink target empty or too long");
        e.symlink_target = std::string(t);
        e.size = t.size();
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK:
        e.type = archive_entry_filetype(ae) == AE_IFCHR ? EntryType::kCharDevice
                                                        : EntryType::kBlockDevice;
        e.rdev_major = static_cast<std::uint32_t>(archive_entry_rdevmajor(ae));
        e.rdev_minor = static_cast<std::uint32_t>(archive_entry_rdevminor(ae));
        break;
      case AE_IFIFO: e.type = EntryType::kFifo; break;
      case AE_IFSOCK: continue;  // sockets are not content; tar implementations skip them
      default: return Hostile(path, "unknown entry type");
    }
    DIGESTD_RETURN_IF_ERROR(tree.Put(std::move(e)));
  }
  DIGESTD_RETURN_IF_ERROR(reader.Drain());
  DIGESTD_ASSIGN_OR_RETURN(auto diff_id, decoder->Finish());
  return std::move(tree).Finish(std::move(diff_id));
}

std::string_view EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kRegular: return "regular file";
    case EntryType::kDirectory: return "directory";
    case EntryType::kSymlink: return "symlink";
    case EntryType::kCharDevice: return "character device";
    case EntryType::kBlockDevice: return "block device";
    case EntryType::kFifo: return "fifo";
    case EntryType::kWhiteout: return "whiteout";
  }
  return "unknown";
}

}  // namespace digestd::store
