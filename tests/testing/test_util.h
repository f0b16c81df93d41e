#pragma once

// Shared helpers for digestd tests.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#define ASSERT_OK(expr)                                                   \
  do {                                                                    \
    const auto& digestd_r_ = (expr);                                      \
    ASSERT_TRUE(digestd_r_.has_value()) << digestd_r_.error().ToString(); \
  } while (0)

#define EXPECT_OK(expr)                                                   \
  do {                                                                    \
    const auto& digestd_r_ = (expr);                                      \
    EXPECT_TRUE(digestd_r_.has_value()) << digestd_r_.error().ToString(); \
  } while (0)

// Asserts the result failed with `errc`, and prints the value case clearly.
#define ASSERT_ERRC(expr, errc)                                                         \
  do {                                                                                  \
    const auto& digestd_r_ = (expr);                                                    \
    ASSERT_FALSE(digestd_r_.has_value()) << "expected error " << #errc;                 \
    ASSERT_EQ(digestd_r_.error().code(), errc) << digestd_r_.error().ToString();        \
  } while (0)

namespace digestd::testing {

// A whole file's bytes ("" when it cannot be read).
inline std::string Slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A shell command printing the tree under the current directory: paths, types, modes, owners,
// link targets (sorted), then the sha256 of every regular file. Two trees are the same for a
// container when these outputs are equal.
inline constexpr const char* kTreeListing =
    "find . -mindepth 1 -printf \"%P|%y|%m|%U|%G|%l\\n\" | LC_ALL=C sort"
    " && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum";

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "digestd-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    if (p == nullptr) std::abort();
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    // Blobs are 0444 in 0700 dirs; remove_all handles that as the owner.
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace digestd::testing
