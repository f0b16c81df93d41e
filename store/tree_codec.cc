#include "store/tree_codec.h"
#include "store/errors.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "store/tar_reader.h"

namespace digestd::store {
namespace {

using nlohmann::json;

Error Corrupt(std::string_view key, std::string_view why) {
  return StoreError(Errc::kCorrupt,
                   "corrupt tree record " + Quote(key) + ": " + std::string(why));
}

template <class T>
void PutInt(std::string& out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
  }
}

void PutBytes(std::string& out, std::string_view s) {
  PutInt<std::uint32_t>(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <class T>
  bool Int(T* v) {
    if (in_.size() < sizeof(T)) return false;
    std::uint64_t x = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      x |= static_cast<std::uint64_t>(static_cast<unsigned char>(in_[i])) << (8 * i);
    }
    *v = static_cast<T>(x);
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool Bytes(std::size_t max, std::string* s) {
    std::uint32_t n = 0;
    if (!Int(&n) || n > max || in_.size() < n) return false;
    s->assign(in_.substr(0, n));
    in_.remove_prefix(n);
    return true;
  }
  bool Fixed(std::size_t n, std::string* s) {
    if (in_.size() < n) return false;
    s->assign(in_.substr(0, n));
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

}  // namespace

std::string EntryKeyPrefix(const verify::Digest& layer) { return layer.ToString() + "/"; }

std::string EncodeEntry(const TreeEntry& e) {
  std::string out;
  out.reserve(64 + e.symlink_target.size());
  PutInt<std::uint8_t>(out, kEntryRecordVersion);
  PutInt<std::uint8_t>(out, static_cast<std::uint8_t>(e.type));
  PutInt<std::uint32_t>(out, e.mode);
  PutInt<std::uint32_t>(out, e.uid);
  PutInt<std::uint32_t>(out, e.gid);
  PutInt<std::int64_t>(out, e.mtime);
  PutInt<std::uint64_t>(out, e.size);
  PutInt<std::uint32_t>(out, e.link_group);
  PutInt<std::uint32_t>(out, e.rdev_major);
  PutInt<std::uint32_t>(out, e.rdev_minor);
  PutInt<std::uint8_t>(out, static_cast<std::uint8_t>((e.opaque ? 1 : 0) | (e.implicit ? 2 : 0)));
  if (e.type == EntryType::kRegular) out.append(e.content->hex());
  if (e.type == EntryType::kSymlink) PutBytes(out, e.symlink_target);
  PutInt<std::uint32_t>(out, static_cast<std::uint32_t>(e.xattrs.size()));
  for (const auto& [name, value] : e.xattrs) {
    PutBytes(out, name);
    PutBytes(out, value);
  }
  return out;
}

Result<TreeEntry> DecodeEntry(std::string_view path, std::string_view value) {
  const UnpackLimits limits;
  if (auto ok = ValidateTreePath(path, limits); !ok) return Corrupt(path, ok.error().context());
  Reader r(value);
  TreeEntry e{.path = std::string(path)};
  std::uint8_t version = 0, type = 0, flags = 0;
  if (!r.Int(&version) || version != kEntryRecordVersion) {
    return Corrupt(path, "missing or unknown entry version");
  }
  if (!r.Int(&type) || type < 1 || type > 7 || !r.Int(&e.mode) || !r.Int(&e.uid) ||
      !r.Int(&e.gid) || !r.Int(&e.mtime) || !r.Int(&e.size) || !r.Int(&e.link_group) ||
      !r.Int(&e.rdev_major) || !r.Int(&e.rdev_minor) || !r.Int(&flags)) {
    return Corrupt(path, "truncated entry");
  }
  e.type = static_cast<EntryType>(type);
  if ((e.mode & ~07777u) != 0) return Corrupt(path, "mode has bits outside 07777");
  if (e.uid == 0xffffffffu || e.gid == 0xffffffffu) return Corrupt(path, "uid/gid out of range");
  if ((flags & ~3u) != 0) return Corrupt(path, "unknown flags");
  e.opaque = (flags & 1) != 0;
  e.implicit = (flags & 2) != 0;
  if ((e.opaque || e.implicit) && e.type != EntryType::kDirectory) {
    return Corrupt(path, "directory flags on a non-directory");
  }
  if (e.link_group != 0 && e.type != EntryType::kRegular) {
    return Corrupt(path, "hard link group on a non-regular file");
  }
  if (path.empty() && e.type != EntryType::kDirectory) return Corrupt(path, "root not a directory");
  if (e.type == EntryType::kRegular) {
    std::string hex;
    if (!r.Fixed(64, &hex)) return Corrupt(path, "truncated content digest");
    auto d = verify::Digest::FromParts(verify::DigestAlgorithm::kSha256, hex);
    if (!d) return Corrupt(path, "bad content digest");
    e.content = std::move(*d);
  } else if (e.type == EntryType::kSymlink) {
    if (!r.Bytes(4095, &e.symlink_target) || e.symlink_target.empty() ||
        e.symlink_target.find('\0') != std::string::npos) {
      return Corrupt(path, "bad symlink target");
    }
    if (e.size != e.symlink_target.size()) return Corrupt(path, "symlink size mismatch");
  } else if (e.size != 0) {
    return Corrupt(path, "size on an entry without content");
  }
  std::uint32_t nx = 0;
  if (!r.Int(&nx) || nx > limits.max_xattrs) return Corrupt(path, "bad xattr count");
  for (std::uint32_t i = 0; i < nx; ++i) {
    std::string name, v;
    if (!r.Bytes(255, &name) || !r.Bytes(limits.max_xattr_value, &v)) {
      return Corrupt(path, "truncated xattr");
    }
    if (!(name.starts_with("user.") || name.starts_with("security.")) ||
        name.find('\0') != std::string::npos) {
      return Corrupt(path, "xattr outside user.* and security.*");
    }
    if (!e.xattrs.empty() && e.xattrs.back().first >= name) {
      return Corrupt(path, "xattrs not sorted or duplicated");
    }
    e.xattrs.emplace_back(std::move(name), std::move(v));
  }
  if (!r.done()) return Corrupt(path, "trailing bytes");
  return e;
}

std::string EncodeTreeInfo(const TreeInfo& info) {
  json j = {{"v", 1},
            {"diff_id", info.diff_id.ToString()},
            {"entries", info.entries},
            {"file_bytes", info.file_bytes},
            {"created", info.created}};
  return j.dump();
}

Result<TreeInfo> DecodeTreeInfo(std::string_view key, std::string_view value) {
  auto layer = verify::Digest::Parse(key);
  if (!layer) return Corrupt(key, "key is not a digest");
  TreeInfo info{.layer = *layer, .diff_id = *layer};
  if (value.size() > 4096) return Corrupt(key, "value too large");
  json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt(key, "not a JSON object");
  auto get_u64 = [&](const char* f, std::uint64_t* out) {
    auto it = j.find(f);
    if (it == j.end() || !it->is_number_unsigned()) return false;
    *out = it->get<std::uint64_t>();
    return true;
  };
  std::uint64_t v = 0;
  if (!get_u64("v", &v) || v != 1) return Corrupt(key, "missing or unknown record version");
  if (!get_u64("entries", &info.entries) || !get_u64("file_bytes", &info.file_bytes)) {
    return Corrupt(key, "entries/file_bytes missing");
  }
  auto created = j.find("created");
  if (created == j.end() || !created->is_number_integer()) return Corrupt(key, "created missing");
  info.created = created->get<std::int64_t>();
  auto diff = j.find("diff_id");
  if (diff == j.end() || !diff->is_string()) return Corrupt(key, "diff_id missing");
  auto d = verify::Digest::Parse(diff->get_ref<const std::string&>());
  if (!d) return Corrupt(key, "bad diff_id");
  info.diff_id = std::move(*d);
  return info;
}

}  // namespace digestd::store
