// Keys, payloads, envelopes: every check with keys and signatures the test makes itself.

#include <gtest/gtest.h>

#include "testing/crypto_util.h"
#include "testing/test_util.h"
#include "verify/base64.h"
#include "verify/cosign.h"
#include "verify/hasher.h"
#include "verify/public_key.h"

namespace digestd::verify {
namespace {

using digestd::testing::TestKey;

TEST(Base64Test, StrictDecode) {
  EXPECT_EQ(*Base64Decode("aGVsbG8="), "hello");
  EXPECT_EQ(*Base64Decode("aGVsbG8hIQ=="), "hello!!");
  EXPECT_EQ(*Base64Decode(""), "");
  for (const char* bad : {"aGVsbG8", "aGVsbG8=\n", " aGVsbG8=", "aGVs=G8=", "aGVsbG9=", "a===",
                          "aGVsbG8-", "aGVsbG8_", "====", "aGVsbG8h=Q=="}) {
    EXPECT_FALSE(Base64Decode(bad)) << bad;
  }
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    EXPECT_EQ(*Base64Decode(Base64Encode(s)), s);
  }
}

TEST(PublicKeyTest, AllSupportedTypesVerifyAndRejectTampering) {
  for (auto make : {&TestKey::EcP256, &TestKey::EcP384, &TestKey::Ed25519}) {
    TestKey k = make();
    auto pub = PublicKey::FromPem(k.PublicPem());
    ASSERT_OK(pub);
    const std::string sig = k.Sign("payload");
    EXPECT_OK((*pub)->Verify("payload", sig));
    EXPECT_FALSE((*pub)->Verify("payload ", sig));
    std::string flipped = sig;
    flipped[flipped.size() / 2] ^= 1;
    EXPECT_FALSE((*pub)->Verify("payload", flipped));
    EXPECT_TRUE((*pub)->fingerprint().starts_with("sha256:"));
  }
  TestKey rsa = TestKey::Rsa(2048);
  auto pub = PublicKey::FromPem(rsa.PublicPem());
  ASSERT_OK(pub);
  EXPECT_EQ((*pub)->type(), KeyType::kRsa);
  EXPECT_OK((*pub)->Verify("m", rsa.Sign("m")));
  // Another key's signature fails.
  TestKey other = TestKey::EcP256();
  auto other_pub = PublicKey::FromPem(other.PublicPem());
  ASSERT_OK(other_pub);
  EXPECT_FALSE((*other_pub)->Verify("m", TestKey::EcP256().Sign("m")));
}

TEST(PublicKeyTest, RefusesWeakUnknownAndGarbageKeys) {
  auto small = PublicKey::FromPem(TestKey::Rsa(1024).PublicPem());
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().context().find("too small"), std::string::npos);
  auto p521 = PublicKey::FromPem(TestKey(TestKey::EcP256()).PublicPem());  // sanity: P-256 ok
  EXPECT_TRUE(p521);
  EXPECT_FALSE(PublicKey::FromPem("not a key"));
  EXPECT_FALSE(PublicKey::FromPem("-----BEGIN PUBLIC KEY-----\nwrongkey==\n-----END PUBLIC KEY-----\n"));
  EXPECT_FALSE(PublicKey::FromPem(TestKey::EcP256().PrivatePem()));
}

std::string Payload(std::string_view ref, std::string_view digest, std::string optional = "null") {
  return R"({"critical":{"identity":{"docker-reference":")" + std::string(ref) +
         R"("},"image":{"docker-manifest-digest":")" + std::string(digest) +
         R"("},"type":"cosign container image signature"},"optional":)" + optional + "}";
}

TEST(SimpleSigningTest, ParsesStrictly) {
  const std::string d = "sha256:" + std::string(64, 'c');
  auto p = ParseSimpleSigningPayload(Payload("reg.io/app", d));
  ASSERT_OK(p);
  EXPECT_EQ(p->docker_reference, "reg.io/app");
  EXPECT_EQ(p->manifest_digest.ToString(), d);
  auto opt = ParseSimpleSigningPayload(Payload("reg.io/app", d, R"({"creator":"x","timestamp":5,"other":1})"));
  ASSERT_OK(opt);
  EXPECT_EQ(*opt->creator, "x");
  EXPECT_EQ(*opt->timestamp, 5);

  std::string extra = Payload("reg.io/app", d);
  extra.insert(extra.find("\"type\""), "\"evil\":1,");
  auto r = ParseSimpleSigningPayload(extra);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().context().find("unknown field"), std::string::npos);
  std::string wrong_type = Payload("reg.io/app", d);
  wrong_type.replace(wrong_type.find("cosign container image signature"), 6, "atomic");
  EXPECT_FALSE(ParseSimpleSigningPayload(wrong_type));
  EXPECT_FALSE(ParseSimpleSigningPayload(Payload("reg.io/app", "sha256:abc")));
  EXPECT_FALSE(ParseSimpleSigningPayload(Payload("reg.io/app", d, "5")));
  EXPECT_FALSE(ParseSimpleSigningPayload(R"({"critical":{}})"));
  std::string dup = Payload("reg.io/app", d);
  dup.insert(1, R"("critical":{},)");
  EXPECT_FALSE(ParseSimpleSigningPayload(dup));
}

TEST(DsseTest, PaeMatchesTheSpecExample) {
  EXPECT_EQ(Pae("http://example.com/HelloWorld", "hello world"),
            "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
}

TEST(DsseTest, EnvelopeAndStatement) {
  const std::string stmt =
      R"({"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":")" +
      std::string(64, 'e') + R"("}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}})";
  const std::string env = R"({"payloadType":"application/vnd.in-toto+json","payload":")" +
                          Base64Encode(stmt) + R"(","signatures":[{"keyid":"","sig":")" +
                          Base64Encode("sig") + R"("}]})";
  auto e = ParseDsseEnvelope(env);
  ASSERT_OK(e);
  EXPECT_EQ(e->payload, stmt);
  auto st = ParseInTotoStatement(e->payload);
  ASSERT_OK(st);
  EXPECT_TRUE(StatementCovers(*st, *Digest::Parse("sha256:" + std::string(64, 'e'))));
  EXPECT_FALSE(StatementCovers(*st, *Digest::Parse("sha256:" + std::string(64, 'f'))));
  EXPECT_FALSE(ParseInTotoStatement(R"({"_type":"other","subject":[],"predicateType":"x"})"));
}

TEST(ContainersSignatureTest, ParsesTheDirFormat) {
  const std::string body = R"({"mimeType":"application/vnd.dev.cosign.simplesigning.v1+json","payload":")" +
                           Base64Encode("PAYLOAD") +
                           R"(","annotations":{"dev.cosignproject.cosign/signature":"abc="}})";
  auto s = ParseContainersSigstoreSignature(std::string("\0sigstore-json\n", 15) + body);
  ASSERT_OK(s);
  EXPECT_EQ(s->payload, "PAYLOAD");
  EXPECT_EQ(s->annotations.at("dev.cosignproject.cosign/signature"), "abc=");
  EXPECT_FALSE(ParseContainersSigstoreSignature(body));
}

}  // namespace
}  // namespace digestd::verify
