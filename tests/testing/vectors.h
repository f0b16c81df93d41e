#pragma once

// The public signature vectors in ../shared/vectors (read-only; see its INDEX.md). A test target
// that uses them defines DIGESTD_VECTORS_DIR; a test that needs them starts with
// DIGESTD_REQUIRE_VECTORS(), which skips with a message on a checkout without them.

#include <gtest/gtest.h>

#include <filesystem>

namespace digestd::testing {

inline const std::filesystem::path& VectorsDir() {
  static const std::filesystem::path dir = DIGESTD_VECTORS_DIR;
  return dir;
}

}  // namespace digestd::testing

#define DIGESTD_REQUIRE_VECTORS()                                                              \
  do {                                                                                         \
    if (!std::filesystem::exists(::digestd::testing::VectorsDir() / "INDEX.md")) {             \
      GTEST_SKIP() << "signature vectors not found at " << ::digestd::testing::VectorsDir()   \
                   << " (they live in ../shared/vectors beside the checkout, as in CI)";       \
    }                                                                                          \
  } while (0)
