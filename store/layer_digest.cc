#include "store/layer_digest.h"

#include <unistd.h>

#include <vector>

#include "store/layer_decoder.h"

namespace digestd::store {

// The same decoder that verifies layers during ingest, run over a committed blob, so both paths
// accept and refuse exactly the same streams.
Result<Digest> UncompressedDigest(const Store& store, const Digest& blob,
                                  std::string_view media_type, std::uint64_t max_uncompressed) {
  DIGESTD_ASSIGN_OR_RETURN(LayerDecoder::Kind kind, LayerDecoder::KindFor(media_type));
  DIGESTD_ASSIGN_OR_RETURN(auto decoder, LayerDecoder::Create(kind, max_uncompressed));
  DIGESTD_ASSIGN_OR_RETURN(UniqueFd fd, store.OpenBlob(blob));
  std::vector<std::byte> buf(1u << 20);
  for (off_t offset = 0;;) {
    const ssize_t n = ::pread(fd.Get(), buf.data(), buf.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(Module::kStore, "read layer " + blob.ToString());
    }
    if (n == 0) break;
    offset += n;
    if (!decoder->Feed(std::span(buf.data(), static_cast<std::size_t>(n)))) break;
  }
  auto diff = decoder->Finish();
  if (!diff) {
    return MakeError(Module::kStore, diff.error().code(),
                     "layer " + blob.ToString() + " (" + std::string(media_type) +
                         "): " + diff.error().context());
  }
  return diff;
}

}  // namespace digestd::store
