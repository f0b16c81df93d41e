#include "verify/digest.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace digestd::verify {
namespace {

const std::string kHex64(64, 'a');
const std::string kHex128(128, 'b');

TEST(DigestTest, ParsesCanonicalForms) {
  auto d = Digest::Parse("sha256:" + kHex64);
  ASSERT_OK(d);
  EXPECT_EQ(d->algorithm(), DigestAlgorithm::kSha256);
  EXPECT_EQ(d->hex(), kHex64);
  EXPECT_EQ(d->ToString(), "sha256:" + kHex64);
  EXPECT_EQ(d->Short(), "sha256:aaaaaaaaaaaa");
  auto e = Digest::Parse("sha512:" + kHex128);
  ASSERT_OK(e);
  EXPECT_EQ(e->algorithm(), DigestAlgorithm::kSha512);
}

TEST(DigestTest, RefusesEverythingElse) {
  const std::vector<std::string> bad = {
      "",
      "sha256:",
      "sha256:" + std::string(64, 'A'),            // uppercase
      "SHA256:" + kHex64,                          // uppercase algorithm
      "sha256:" + kHex64.substr(1),                // short
      "sha256:" + kHex64 + "a",                    // long
      "sha512:" + kHex64,                          // wrong length for algorithm
      "md5:" + std::string(32, 'a'),               // unknown algorithm
      "sha384:" + std::string(96, 'a'),            // unknown algorithm
      "sha256:" + kHex64.substr(0, 63) + "g",      // not hex
      " sha256:" + kHex64,                         // whitespace
      "sha256:" + kHex64.substr(0, 63) + " ",      // trailing whitespace
      "sha256:" + kHex64 + "\n",                   // newline
      std::string("sha256:") + std::string(32, 'a') + std::string(1, '\0') + std::string(31, 'a'),
      "sha256:../" + kHex64.substr(3),             // traversal
      "sha256/" + kHex64,                          // wrong separator
      "sha256::" + kHex64.substr(1),
      kHex64,                                      // no algorithm
      std::string(10000, 'a'),                     // huge
  };
  for (const auto& s : bad) {
    auto d = Digest::Parse(s);
    EXPECT_FALSE(d) << "accepted " << Quote(s);
    if (!d) {
      EXPECT_TRUE(d.error().code() == Errc::kInvalidArgument) << d.error().ToString();
      // The message quotes the input safely: no raw control bytes.
      for (char c : d.error().context()) EXPECT_TRUE(c >= 0x20 && c < 0x7f);
    }
  }
}

TEST(DigestTest, OrderingAndHashing) {
  auto a = *Digest::Parse("sha256:" + std::string(64, '0'));
  auto b = *Digest::Parse("sha256:" + std::string(64, '1'));
  EXPECT_LT(a, b);
  EXPECT_NE(std::hash<Digest>{}(a), std::hash<Digest>{}(b));
  EXPECT_EQ(a, *Digest::Parse(a.ToString()));
}

}  // namespace
}  // namespace digestd::verify

namespace digestd::verify {
namespace {

TEST(HexTest, RoundTripAndRefusals) {
  const std::string raw("\x00\x01\xab\xff", 4);
  EXPECT_EQ(HexEncode(raw), "0001abff");
  EXPECT_EQ(HexDecode("0001abff"), raw);
  EXPECT_EQ(HexDecode(""), std::string());
  EXPECT_FALSE(HexDecode("abc"));   // odd length
  EXPECT_FALSE(HexDecode("AB"));    // uppercase is not our encoding
  EXPECT_FALSE(HexDecode("zz"));
}

}  // namespace
}  // namespace digestd::verify
