// Fuzz target: layer tars (plain, gzip or zstd by magic) through the bounded decoder and the
// libarchive-based tree reader. Never crash, never accept a hostile path, never exceed a limit.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/layer_unpack.h"
#include "verify/hasher.h"

namespace {

// Hashes content, keeps nothing.
class NullSink final : public digestd::store::ContentSink {
 public:
  digestd::Result<void> Begin(std::uint64_t size) override {
    want_ = size;
    got_ = 0;
    return {};
  }
  digestd::Result<void> Append(std::span<const std::byte> data) override {
    got_ += data.size();
    if (got_ > want_) std::abort();  // the reader must never hand over more than the size
    hasher_.Update(data);
    return {};
  }
  digestd::Result<digestd::verify::Digest> End() override {
    if (got_ != want_) std::abort();
    return hasher_.Finish();
  }

 private:
  digestd::verify::Hasher hasher_ =
      digestd::verify::Hasher::Create(digestd::verify::DigestAlgorithm::kSha256).value();
  std::uint64_t want_ = 0, got_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace s = digestd::store;
  const int fd = ::memfd_create("layer", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (::write(fd, data, size) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return 0;
  }
  auto kind = s::LayerDecoder::Kind::kPlain;
  if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) kind = s::LayerDecoder::Kind::kGzip;
  if (size >= 4 && data[0] == 0x28 && data[1] == 0xb5 && data[2] == 0x2f && data[3] == 0xfd) {
    kind = s::LayerDecoder::Kind::kZstd;
  }
  const s::UnpackLimits limits{.max_entries = 2000, .max_file_bytes = 8u << 20};
  NullSink sink;
  if (auto tree = s::ReadLayerTree(fd, kind, limits, sink)) {
    if (tree->entries.empty() || !tree->entries.front().path.empty()) std::abort();
    if (tree->entries.size() > limits.max_entries) std::abort();
    if (tree->file_bytes > limits.max_file_bytes) std::abort();
    for (const auto& e : tree->entries) {
      if (!s::ValidateTreePath(e.path, limits)) std::abort();
      if (e.path.find("..") != std::string::npos && e.path.find("/../") != std::string::npos) {
        std::abort();
      }
    }
  }
  ::close(fd);
  return 0;
}
