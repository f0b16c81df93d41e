#pragma once

// A layer's file tree as recorded at unpack time: what the FUSE mount serves. Plain value types.
//
// Paths are relative, '/'-separated, without "." or ".." components, empty for the layer's root
// directory; each component is 1..255 bytes of anything but '/', NUL and control characters.
// Entries are sorted by path bytes, so every directory precedes its contents.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "verify/digest.h"

namespace digestd::store {

enum class EntryType : std::uint8_t {
  kRegular = 1,
  kDirectory = 2,
  kSymlink = 3,
  kCharDevice = 4,
  kBlockDevice = 5,
  kFifo = 6,
  // An OCI whiteout (".wh.<name>" in the tar): hides <name> of lower layers. Served to overlayfs
  // as a 0:0 character device.
  kWhiteout = 7,
};

std::string_view EntryTypeName(EntryType type);

struct TreeEntry {
  std::string path;
  EntryType type = EntryType::kRegular;
  std::uint32_t mode = 0;  // permission bits including setuid/setgid/sticky (07777)
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t mtime = 0;  // unix seconds
  std::uint64_t size = 0;  // regular files: content size; symlinks: target length
  // Regular files: the content object (files/sha256/..). Hard links share it and `link_group`.
  std::optional<verify::Digest> content;
  std::string symlink_target;  // symlinks only; kept as data, never followed by digestd
  // Hard links: every path of one inode carries the same non-zero group number; 0 = not linked.
  std::uint32_t link_group = 0;
  std::uint32_t rdev_major = 0;  // devices
  std::uint32_t rdev_minor = 0;
  bool opaque = false;    // directories: ".wh..wh..opq" was present (hides lower layers' contents)
  bool implicit = false;  // directories created for a path whose parent had no entry of its own
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name
};

struct LayerTree {
  verify::Digest layer;    // the compressed blob
  verify::Digest diff_id;  // digest of the uncompressed tar
  std::vector<TreeEntry> entries;
  std::uint64_t file_bytes = 0;  // sum of regular file sizes (hard links counted once)
  std::uint64_t files = 0;       // distinct content objects referenced
};

struct TreeInfo {
  verify::Digest layer;
  verify::Digest diff_id;
  std::uint64_t entries = 0;
  std::uint64_t file_bytes = 0;
  std::int64_t created = 0;
};

// Bounds on what one layer may unpack to; exceeding one refuses the layer.
struct UnpackLimits {
  std::uint64_t max_entries = 1'000'000;
  std::uint64_t max_file_bytes = std::uint64_t{64} << 30;  // sum of regular file sizes
  std::size_t max_path = 4096;                             // bytes, after normalisation
  std::size_t max_depth = 256;                             // path components
  std::size_t max_xattrs = 64;                             // per entry
  std::size_t max_xattr_value = 64u << 10;                 // bytes
};

}  // namespace digestd::store
