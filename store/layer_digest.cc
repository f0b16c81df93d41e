#include "store/layer_digest.h"

#include <archive.h>

#include <memory>
#include <vector>

#include "verify/hasher.h"

namespace digestd::store {
namespace {
std::string ErrStr(archive* a) {
  const char* e = archive_error_string(a);
  return e ? e : "unknown error";
}
}  // namespace

Result<Digest> UncompressedDigest(const Store& store, const Digest& blob,
                                  std::string_view media_type, std::uint64_t max_uncompressed) {
  auto bad = [&](std::string why) {
    return MakeError(Module::kStore, Errc::kCorrupt,
                     "layer " + blob.ToString() + " (" + std::string(media_type) + "): " + why);
  };
  const bool zstd = media_type.ends_with("+zstd") || media_type.ends_with(".zstd");
  const bool gzip = media_type.ends_with("+gzip") || media_type.ends_with(".gzip") ||
                    media_type.ends_with(".tar.gzip");
  const bool plain = media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar");
  if (!zstd && !gzip && !plain) {
    return MakeError(Module::kStore, Errc::kUnsupported,
                     "unsupported layer media type " + Quote(media_type));
  }
  DIGESTD_ASSIGN_OR_RETURN(UniqueFd fd, store.OpenBlob(blob));
  std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(), archive_read_free);
  if (!a) return MakeError(Module::kStore, Errc::kInternal, "archive_read_new");
  // Only the filter the media type names (plus none): a gzip layer labelled zstd is refused.
  if (zstd) archive_read_support_filter_zstd(a.get());
  if (gzip) archive_read_support_filter_gzip(a.get());
  archive_read_support_format_raw(a.get());
  if (archive_read_open_fd(a.get(), fd.Get(), 1 << 20) != ARCHIVE_OK) {
    return bad("cannot open: " + ErrStr(a.get()));
  }
  archive_entry* entry = nullptr;
  if (archive_read_next_header(a.get(), &entry) != ARCHIVE_OK) {
    return bad(std::string("cannot read: ") + ErrStr(a.get()));
  }
  const int filter = archive_filter_code(a.get(), 0);
  if ((zstd && filter != ARCHIVE_FILTER_ZSTD) || (gzip && filter != ARCHIVE_FILTER_GZIP) ||
      (plain && filter != ARCHIVE_FILTER_NONE)) {
    return bad("content does not match the compression its media type names");
  }
  DIGESTD_ASSIGN_OR_RETURN(auto hasher, verify::Hasher::Create(verify::DigestAlgorithm::kSha256));
  std::vector<char> buf(1 << 20);
  std::uint64_t total = 0;
  for (;;) {
    const la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
    if (n < 0) return bad("truncated or corrupt: " + ErrStr(a.get()));
    if (n == 0) break;
    total += static_cast<std::uint64_t>(n);
    if (total > max_uncompressed) {
      return MakeError(Module::kStore, Errc::kTooLarge,
                       "layer " + blob.ToString() + " expands past " +
                           std::to_string(max_uncompressed) + " bytes (decompression bomb?)");
    }
    hasher.Update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
  }
  return hasher.Finish();
}

}  // namespace digestd::store
