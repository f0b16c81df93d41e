#pragma once

// The digest of a layer's uncompressed tar (its diff_id), computed from a committed blob. The
// compression is taken from the media type (gzip, zstd or none) and confirmed by sniffing; reading
// uses libarchive's raw read API only (no extraction). Bounded by `max_uncompressed` so a
// decompression bomb is an error, not a full disk or a hung daemon.

#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "store/store.h"

namespace digestd::store {

Result<Digest> UncompressedDigest(const Store& store, const Digest& blob,
                                  std::string_view media_type,
                                  std::uint64_t max_uncompressed = std::uint64_t{256} << 30);

}  // namespace digestd::store
