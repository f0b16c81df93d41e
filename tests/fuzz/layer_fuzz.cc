// Fuzz target: layer tars (plain, gzip or zstd by magic) through the bounded decoder and the
// libarchive-based tree reader. Never crash, never accept a hostile path, never exceed a limit.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "store/tar_reader.h"
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

// Independent of store/: splits on '/' and checks each component.
bool SafeRelativePath(std::string_view path) {
  if (path.empty()) return true;  // the layer's root
  std::size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    const std::string_view comp =
        path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (comp.empty() || comp == "." || comp == "..") return false;
    if (comp.find('\0') != std::string_view::npos) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

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
    // An oracle independent of the code under test (ValidateTreePath is what unpacking uses):
    // every path is "" (the root) or components joined by '/', each non-empty, not "." or "..",
    // without NUL; every entry's parent directory came before it.
    std::set<std::string_view> dirs = {""};
    for (const auto& e : tree->entries) {
      if (!SafeRelativePath(e.path)) std::abort();
      if (!e.path.empty()) {
        const auto slash = e.path.rfind('/');
        const std::string_view parent =
            slash == std::string::npos ? std::string_view() : std::string_view(e.path).substr(0, slash);
        if (!dirs.count(parent)) std::abort();
      }
      if (e.type == s::EntryType::kDirectory) dirs.insert(e.path);
    }
  }
  ::close(fd);
  return 0;
}
