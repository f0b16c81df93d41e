#pragma once

// The digest of a layer's uncompressed tar (its diff_id), computed from a committed blob with the
// same LayerDecoder that verifies layers during ingest: compression by media type (gzip, zstd or
// none), content that does not match it refused, output bounded by `max_uncompressed` so a
// decompression bomb is an error, not a hung daemon. Used for layers already in the store when an
// image that shares them is pulled.

#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "store/store.h"

namespace digestd::store {

Result<Digest> UncompressedDigest(const Store& store, const Digest& blob,
                                  std::string_view media_type,
                                  std::uint64_t max_uncompressed = std::uint64_t{256} << 30);

}  // namespace digestd::store
