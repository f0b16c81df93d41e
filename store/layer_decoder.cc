#include "store/layer_decoder.h"

#include <zlib.h>
#include <zstd.h>

#include <optional>
#include <vector>

namespace digestd::store {

struct LayerDecoder::Impl {
  Kind kind = Kind::kPlain;
  std::uint64_t max_out = 0;
  std::uint64_t out_total = 0;
  verify::Hasher hasher;
  std::vector<std::byte> out;
  std::optional<std::string> error;
  // gzip
  z_stream zs{};
  bool z_init = false;
  bool z_member_done = false;  // the last member ended exactly at a boundary
  // zstd
  ZSTD_DStream* zstd = nullptr;
  std::size_t zstd_last = 1;  // 0 when the last frame is complete

  explicit Impl(verify::Hasher h) : hasher(std::move(h)), out(256u << 10) {}
  ~Impl() {
    if (z_init) inflateEnd(&zs);
    if (zstd) ZSTD_freeDStream(zstd);
  }

  bool Emit(const std::byte* p, std::size_t n) {
    out_total += n;
    if (out_total > max_out) {
      error = "expands past " + std::to_string(max_out) + " bytes (decompression bomb?)";
      return false;
    }
    hasher.Update(std::span(p, n));
    return true;
  }

  bool FeedGzip(std::span<const std::byte> in) {
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    zs.avail_in = static_cast<uInt>(in.size());
    while (zs.avail_in > 0) {
      if (z_member_done) {
        // Another gzip member follows (concatenated gzip is valid).
        inflateReset(&zs);
        z_member_done = false;
      }
      zs.next_out = reinterpret_cast<Bytef*>(out.data());
      zs.avail_out = static_cast<uInt>(out.size());
      const int rc = inflate(&zs, Z_NO_FLUSH);
      if (!Emit(out.data(), out.size() - zs.avail_out)) return false;
      if (rc == Z_STREAM_END) {
        z_member_done = true;
        continue;
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        error = std::string("corrupt gzip stream: ") + (zs.msg ? zs.msg : "inflate failed");
        return false;
      }
      if (rc == Z_BUF_ERROR && zs.avail_in > 0 && zs.avail_out > 0) {
        error = "corrupt gzip stream: no progress";
        return false;
      }
    }
    return true;
  }

  bool FeedZstd(std::span<const std::byte> in) {
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    while (ib.pos < ib.size) {
      ZSTD_outBuffer ob{out.data(), out.size(), 0};
      const std::size_t rc = ZSTD_decompressStream(zstd, &ob, &ib);
      if (ZSTD_isError(rc)) {
        error = std::string("corrupt zstd stream: ") + ZSTD_getErrorName(rc);
        return false;
      }
      if (!Emit(out.data(), ob.pos)) return false;
      zstd_last = rc;
    }
    return true;
  }
};

Result<LayerDecoder::Kind> LayerDecoder::KindFor(std::string_view media_type) {
  if (media_type.ends_with("+zstd") || media_type.ends_with(".zstd")) return Kind::kZstd;
  if (media_type.ends_with("+gzip") || media_type.ends_with(".gzip") ||
      media_type.ends_with("tar.gzip")) {
    return Kind::kGzip;
  }
  if (media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar")) return Kind::kPlain;
  return MakeError(Module::kStore, Errc::kUnsupported,
                   "unsupported layer media type " + Quote(media_type));
}

LayerDecoder::LayerDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LayerDecoder::~LayerDecoder() = default;

Result<std::unique_ptr<LayerDecoder>> LayerDecoder::Create(Kind kind, std::uint64_t max_out) {
  DIGESTD_ASSIGN_OR_RETURN(auto hasher, verify::Hasher::Create(verify::DigestAlgorithm::kSha256));
  auto impl = std::make_unique<Impl>(std::move(hasher));
  impl->kind = kind;
  impl->max_out = max_out;
  if (kind == Kind::kGzip) {
    if (inflateInit2(&impl->zs, 16 + MAX_WBITS) != Z_OK) {
      return MakeError(Module::kStore, Errc::kInternal, "inflateInit2 failed");
    }
    impl->z_init = true;
  } else if (kind == Kind::kZstd) {
    impl->zstd = ZSTD_createDStream();
    if (impl->zstd == nullptr || ZSTD_isError(ZSTD_initDStream(impl->zstd))) {
      return MakeError(Module::kStore, Errc::kInternal, "ZSTD_initDStream failed");
    }
  }
  return std::unique_ptr<LayerDecoder>(new LayerDecoder(std::move(impl)));
}

bool LayerDecoder::Feed(std::span<const std::byte> in) {
  auto& s = *impl_;
  if (s.error) return false;
  switch (s.kind) {
    case Kind::kPlain: return s.Emit(in.data(), in.size());
    case Kind::kGzip: return s.FeedGzip(in);
    case Kind::kZstd: return s.FeedZstd(in);
  }
  return false;
}

Result<verify::Digest> LayerDecoder::Finish() {
  auto& s = *impl_;
  if (!s.error) {
    if (s.kind == Kind::kGzip && !s.z_member_done) s.error = "truncated gzip stream";
    if (s.kind == Kind::kZstd && s.zstd_last != 0) s.error = "truncated zstd stream";
  }
  if (s.error) return MakeError(Module::kStore, Errc::kCorrupt, *s.error);
  return s.hasher.Finish();
}

}  // namespace digestd::store
