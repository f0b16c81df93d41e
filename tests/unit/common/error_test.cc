#include "common/error.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace digestd {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return MakeError(Module::kCommon, Errc::kInvalidArgument, "odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  DIGESTD_ASSIGN_OR_RETURN(int h, Half(x));
  DIGESTD_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(ErrorTest, ToStringNamesModuleCodeContextAndErrno) {
  Error e = SysError(Module::kStore, "open blob", ENOENT);
  EXPECT_EQ(e.ToString(), "store: io: open blob: No such file or directory");
  Error w = MakeError(Module::kVerify, Errc::kDigestMismatch, "x").Wrap("pull");
  EXPECT_EQ(w.ToString(), "verify: digest-mismatch: pull: x");
}

TEST(ErrorTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
}

TEST(ErrorTest, QuoteEscapesAndTruncates) {
  EXPECT_EQ(Quote("abc"), "\"abc\"");
  EXPECT_EQ(Quote(std::string_view("a\0b\n\"\\", 6)), "\"a\\x00b\\x0a\\x22\\x5c\"");
  EXPECT_EQ(Quote("\xff"), "\"\\xff\"");
  EXPECT_EQ(Quote(std::string(200, 'x'), 4), "\"xxxx...\"");
}

TEST(ErrorTest, EveryCodeHasAName) {
  for (int c = 0; c <= static_cast<int>(Errc::kInternal); ++c) {
    EXPECT_NE(ToString(static_cast<Errc>(c)), "unknown-code");
  }
}

}  // namespace
}  // namespace digestd
