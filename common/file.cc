#include "common/file.h"

#include <fstream>

namespace digestd {

Result<std::string> ReadFileCapped(const std::filesystem::path& path, std::size_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    return MakeError(Module::kCommon, Errc::kNotFound,
                     "cannot read " + Quote(path.string()) + ": " + ec.message());
  }
  if (size > max_bytes) {
    return MakeError(Module::kCommon, Errc::kTooLarge,
                     Quote(path.string()) + " is " + std::to_string(size) +
                         " bytes, over the limit of " + std::to_string(max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(Module::kCommon, Errc::kNotFound, "cannot read " + Quote(path.string()));
  std::string out(size, '\0');
  in.read(out.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::size_t>(in.gcount()) != size) {
    return MakeError(Module::kCommon, Errc::kIo, "short read of " + Quote(path.string()));
  }
  return out;
}

}  // namespace digestd
