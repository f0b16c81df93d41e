#pragma once

// Reading a layer's tar into a validated tree (internal to store/). libarchive's read API parses
// the tar; decompression is ours (LayerDecoder, bounded), so the bytes libarchive parses are
// exactly the bytes whose digest is checked against the diff_id. Nothing here touches the
// filesystem except through the ContentSink: every entry is data, never extracted.
//
// Refused (Errc::kCorrupt, naming the entry): absolute paths, ".." components, a path through a
// symlink or another non-directory, hard links to missing, non-regular or outside targets, names
// with control characters or over the limits, uids/gids out of range, xattrs in the trusted.*
// namespace (they would forge overlayfs metadata), malformed whiteouts, truncated or corrupt
// archives, and anything past UnpackLimits. Duplicate entries: the last wins, as in tar.

#include <cstdint>
#include <span>
#include <vector>

#include "common/error.h"
#include "store/layer_decoder.h"
#include "store/tree.h"

namespace digestd::store {

// Receives the content of each regular file, in order. Implemented by the store (writes file
// objects) and by tests.
class ContentSink {
 public:
  virtual ~ContentSink() = default;
  virtual Result<void> Begin(std::uint64_t size) = 0;
  virtual Result<void> Append(std::span<const std::byte> data) = 0;
  // Called after exactly `size` bytes; returns the content's digest.
  virtual Result<verify::Digest> End() = 0;
};

// The compressed bytes of a layer, in order: a blob file, or a staging file followed while it is
// being downloaded.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // The next bytes; empty at the end. The view stays valid until the next call.
  virtual Result<std::span<const std::byte>> Next() = 0;
};

// Reads a file from its current offset to EOF.
class FdSource final : public ByteSource {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  Result<std::span<const std::byte>> Next() override;

 private:
  int fd_;
  std::vector<std::byte> buf_ = std::vector<std::byte>(1u << 20);
};

// Reads the layer from `source` to its end. On success the tree is sorted by path and its
// diff_id is the digest of the whole uncompressed stream (`layer` is set to the same value; the
// caller knows the real one). The content must match `kind` (magic sniffed). `pipelined` reads
// and decompresses on a second thread, a few MiB ahead of the tar parser (for large layers).
Result<LayerTree> ReadLayerTree(ByteSource& source, LayerDecoder::Kind kind,
                                const UnpackLimits& limits, ContentSink& sink, bool pipelined);
// The same over a blob file, from offset 0.
Result<LayerTree> ReadLayerTree(int blob_fd, LayerDecoder::Kind kind, const UnpackLimits& limits,
                                ContentSink& sink);

// Path rules shared with the tree codec: a normalised relative path as described in tree.h.
Result<void> ValidateTreePath(std::string_view path, const UnpackLimits& limits);

}  // namespace digestd::store
