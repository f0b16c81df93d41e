#include "store/layer_decoder.h"
#include "store/errors.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
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

  bool Count(const std::byte* p, std::size_t n) {
    out_total += n;
    if (out_total > max_out) {
      error = "expands past " + std::to_string(max_out) + " bytes (decompression bomb?)";
      return false;
    }
    hasher.Update(std::span(p, n));
    return true;
  }

  // Decodes from `in` into `out` until either is exhausted or a gzip member ends. Sets *consumed
  // and returns the bytes produced (0 with *consumed == 0 means no progress); nullopt on error.
  std::optional<std::size_t> Step(std::span<const std::byte> in, std::span<std::byte> dst,
                                  std::size_t* consumed) {
    *consumed = 0;
    if (error) return std::nullopt;
    std::size_t produced = 0;
    switch (kind) {
      case Kind::kPlain: {
        produced = std::min(in.size(), dst.size());
        if (produced > 0) std::memcpy(dst.data(), in.data(), produced);  // data() may be null
        *consumed = produced;
        break;
      }
      case Kind::kGzip: {
        if (z_member_done) {
          if (in.empty()) return 0;
          // Another gzip member follows (concatenated gzip is valid).
          inflateReset(&zs);
          z_member_done = false;
        }
        zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
        zs.avail_in = static_cast<uInt>(std::min<std::size_t>(in.size(), 1u << 30));
        zs.next_out = reinterpret_cast<Bytef*>(dst.data());
        zs.avail_out = static_cast<uInt>(std::min<std::size_t>(dst.size(), 1u << 30));
        const uInt avail_in = zs.avail_in;
        const uInt avail_out = zs.avail_out;
        const int rc = inflate(&zs, Z_NO_FLUSH);
        *consumed = avail_in - zs.avail_in;
        produced = avail_out - zs.avail_out;
        if (rc == Z_STREAM_END) {
          z_member_done = true;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
          error = std::string("corrupt gzip stream: ") + (zs.msg ? zs.msg : "inflate failed");
          return std::nullopt;
        }
        break;
      }
      case Kind::kZstd: {
        ZSTD_inBuffer ib{in.data(), in.size(), 0};
        ZSTD_outBuffer ob{dst.data(), dst.size(), 0};
        const std::size_t rc = ZSTD_decompressStream(zstd, &ob, &ib);
        if (ZSTD_isError(rc)) {
          error = std::string("corrupt zstd stream: ") + ZSTD_getErrorName(rc);
          return std::nullopt;
        }
        *consumed = ib.pos;
        produced = ob.pos;
        // An empty call after a complete frame would report the next frame's header as
        // pending; only calls that did something say whether a frame is open.
        if (ib.pos > 0 || ob.pos > 0) zstd_last = rc;
        break;
      }
    }
    if (!Count(dst.data(), produced)) return std::nullopt;
    return produced;
  }
};

Result<LayerDecoder::Kind> LayerDecoder::KindFor(std::string_view media_type) {
  if (media_type.ends_with("+zstd") || media_type.ends_with(".zstd")) return Kind::kZstd;
  if (media_type.ends_with("+gzip") || media_type.ends_with(".gzip") ||
      media_type.ends_with("tar.gzip")) {
    return Kind::kGzip;
  }
  if (media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar")) return Kind::kPlain;
  return StoreError(Errc::kUnsupported,
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
      return StoreError(Errc::kInternal, "inflateInit2 failed");
    }
    impl->z_init = true;
  } else if (kind == Kind::kZstd) {
    impl->zstd = ZSTD_createDStream();
    if (impl->zstd == nullptr || ZSTD_isError(ZSTD_initDStream(impl->zstd))) {
      return StoreError(Errc::kInternal, "ZSTD_initDStream failed");
    }
  }
  return std::unique_ptr<LayerDecoder>(new LayerDecoder(std::move(impl)));
}

bool LayerDecoder::Feed(std::span<const std::byte> in) {
  auto& s = *impl_;
  for (;;) {
    std::size_t consumed = 0;
    auto produced = s.Step(in, s.out, &consumed);
    if (!produced) return false;
    in = in.subspan(consumed);
    // Done when the input is used up and the decoder had room to spare (nothing left buffered).
    if (in.empty() && *produced < s.out.size()) return true;
    if (!in.empty() && consumed == 0 && *produced == 0) {
      s.error = "corrupt stream: decoder made no progress";
      return false;
    }
  }
}

Result<std::size_t> LayerDecoder::Decode(std::span<const std::byte> in, std::size_t* consumed,
                                         std::span<std::byte> out) {
  auto produced = impl_->Step(in, out, consumed);
  if (!produced) return StoreError(Errc::kCorrupt, *impl_->error);
  return *produced;
}

Result<verify::Digest> LayerDecoder::Finish() {
  auto& s = *impl_;
  if (!s.error) {
    if (s.kind == Kind::kGzip && !s.z_member_done) s.error = "truncated gzip stream";
    if (s.kind == Kind::kZstd && s.zstd_last != 0) s.error = "truncated zstd stream";
  }
  if (s.error) return StoreError(Errc::kCorrupt, *s.error);
  return s.hasher.Finish();
}

}  // namespace digestd::store
