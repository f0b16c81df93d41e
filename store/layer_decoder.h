#pragma once

// Streaming decompression + SHA-256 of a layer as its compressed bytes arrive, so a layer's
// diff_id is verified during ingest, before anything is committed (internal to store/).
// gzip (zlib, concatenated members allowed), zstd, or plain tar, chosen by media type. Output is
// bounded: past `max_out` bytes the layer is refused as a decompression bomb.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/error.h"
#include "verify/digest.h"
#include "verify/hasher.h"

namespace digestd::store {

class LayerDecoder {
 public:
  enum class Kind { kPlain, kGzip, kZstd };
  // kUnsupported for media types that are not tar layers.
  static Result<Kind> KindFor(std::string_view media_type);
  static Result<std::unique_ptr<LayerDecoder>> Create(Kind kind, std::uint64_t max_out);
  ~LayerDecoder();

  // Feeds compressed bytes. False once the stream is corrupt or too large (see error()).
  bool Feed(std::span<const std::byte> in);
  // Pull mode, for readers of the uncompressed stream: decodes from `in` into `out` until either
  // is used up or a gzip member ends; sets *consumed and returns the bytes written to `out`
  // (counted and hashed as Feed does). Call again with empty `in` to drain buffered output; 0
  // with *consumed == 0 and empty `in` means the decoder holds nothing more.
  Result<std::size_t> Decode(std::span<const std::byte> in, std::size_t* consumed,
                             std::span<std::byte> out);
  // The digest of the uncompressed stream; an error if it was corrupt, truncated or too large.
  Result<verify::Digest> Finish();

 private:
  struct Impl;
  explicit LayerDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace digestd::store
