#include "verify/hasher.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace digestd::verify {
namespace {

// FIPS 180-4 / NIST CSRC example vectors.
TEST(HasherTest, Sha256PublishedVectors) {
  EXPECT_EQ(Hasher::Of(DigestAlgorithm::kSha256, "").ToString(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hasher::Of(DigestAlgorithm::kSha256, "abc").ToString(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(
      Hasher::Of(DigestAlgorithm::kSha256,
                 "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
          .ToString(),
      "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(HasherTest, Sha512PublishedVectors) {
  EXPECT_EQ(Hasher::Of(DigestAlgorithm::kSha512, "abc").ToString(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a8"
            "36ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  EXPECT_EQ(Hasher::Of(DigestAlgorithm::kSha512, "").ToString(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0"
            "ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
}

TEST(HasherTest, MillionAs) {
  auto h = Hasher::Create(DigestAlgorithm::kSha256);
  ASSERT_OK(h);
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h->Update(chunk);
  EXPECT_EQ(h->Finish().ToString(),
            "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(HasherTest, StreamingEqualsOneShotAndCloneCarriesState) {
  auto h = Hasher::Create(DigestAlgorithm::kSha256);
  ASSERT_OK(h);
  h->Update("hello ");
  auto c = h->Clone();
  ASSERT_OK(c);
  h->Update("world");
  c->Update("world");
  const auto expect = Hasher::Of(DigestAlgorithm::kSha256, "hello world");
  EXPECT_EQ(h->Finish(), expect);
  EXPECT_EQ(c->Finish(), expect);
  // Finish resets.
  h->Update("abc");
  EXPECT_EQ(h->Finish(), Hasher::Of(DigestAlgorithm::kSha256, "abc"));
}

}  // namespace
}  // namespace digestd::verify
