#include "store/records.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"
#include "verify/hasher.h"

namespace digestd::store {
namespace {

Digest D(std::string_view s) { return verify::Hasher::Of(verify::DigestAlgorithm::kSha256, s); }

TEST(RecordsTest, BlobRoundTrip) {
  BlobInfo in{.digest = D("x"), .size = 42, .media_type = "application/vnd.oci.image.layer.v1.tar",
              .created = 5, .last_used = 6, .tenant = "t1"};
  auto out = DecodeBlob(in.digest.ToString(), EncodeBlob(in));
  ASSERT_OK(out);
  EXPECT_EQ(out->size, 42u);
  EXPECT_EQ(out->media_type, in.media_type);
  EXPECT_EQ(out->tenant, "t1");
  EXPECT_EQ(out->last_used, 6);
}

TEST(RecordsTest, HostileValuesAreCorrupt) {
  const std::string key = D("x").ToString();
  const std::vector<std::string> bad = {
      "",
      "null",
      "[]",
      "{\"v\":2,\"size\":1,\"media_type\":\"\",\"created\":1,\"last_used\":1,\"tenant\":\"\"}",
      "{\"v\":1,\"size\":-1,\"media_type\":\"\",\"created\":1,\"last_used\":1,\"tenant\":\"\"}",
      "{\"v\":1,\"size\":1,\"media_type\":\"a\\nb\",\"created\":1,\"last_used\":1,\"tenant\":\"\"}",
      "{\"v\":1,\"size\":1,\"media_type\":\"\",\"created\":1,\"last_used\":1,\"tenant\":\"../x\"}",
      "{\"v\":1,\"size\":1,\"media_type\":\"\",\"created\":\"1\",\"last_used\":1,\"tenant\":\"\"}",
      std::string(2 << 20, ' '),
  };
  for (const auto& v : bad) {
    ASSERT_ERRC(DecodeBlob(key, v), Errc::kCorrupt);
  }
  ASSERT_ERRC(DecodeBlob("sha256:../../etc/passwd", EncodeBlob({.digest = D("x")})),
              Errc::kCorrupt);
}

TEST(RecordsTest, LeaseAndRefAndDenyAndEdges) {
  Lease l{.id = "id", .tenant = "t", .digests = {D("a"), D("b")}, .created = 3};
  auto lo = DecodeLease("id", EncodeLease(l));
  ASSERT_OK(lo);
  EXPECT_EQ(lo->digests, l.digests);
  ASSERT_ERRC(DecodeLease("id", R"({"v":1,"tenant":"t","created":1,"digests":["sha256:zz"]})"),
              Errc::kCorrupt);
  RefRecord r{.reference = "reg/app:1", .digest = D("m"), .resolved_at = 9};
  auto ro = DecodeRef(r.reference, EncodeRef(r));
  ASSERT_OK(ro);
  EXPECT_EQ(ro->digest, r.digest);
  auto de = DecodeDeny(D("z").ToString(), EncodeDeny({.digest = D("z"), .reason = "cve"}));
  ASSERT_OK(de);
  EXPECT_EQ(de->reason, "cve");
  auto e = DecodeEdgeKey(EdgeKey(D("p"), D("c")));
  ASSERT_OK(e);
  EXPECT_EQ(e->second, D("c"));
  ASSERT_ERRC(DecodeEdgeKey("sha256:x sha256:y"), Errc::kCorrupt);
  for (std::uint64_t seq : {0ull, 1ull, 255ull, 256ull, 1ull << 40}) {
    auto s = DecodeAuditKey(AuditKey(seq));
    ASSERT_OK(s);
    EXPECT_EQ(*s, seq);
  }
  EXPECT_LT(AuditKey(255), AuditKey(256));
  ASSERT_ERRC(DecodeAuditKey("short"), Errc::kCorrupt);
}

}  // namespace
}  // namespace digestd::store
