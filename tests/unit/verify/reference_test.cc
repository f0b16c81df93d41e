#include "verify/reference.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace digestd::verify {
namespace {

const std::string kD = "sha256:" + std::string(64, 'a');

struct Case {
  std::string in, registry, repository, tag, canonical;
};

TEST(ReferenceTest, NormalisesLikeDocker) {
  const Case cases[] = {
      {"busybox", "docker.io", "library/busybox", "", "docker.io/library/busybox"},
      {"busybox:1.36", "docker.io", "library/busybox", "1.36", "docker.io/library/busybox:1.36"},
      {"library/busybox", "docker.io", "library/busybox", "", "docker.io/library/busybox"},
      {"index.docker.io/foo/bar", "docker.io", "foo/bar", "", "docker.io/foo/bar"},
      {"docker.io/foo", "docker.io", "library/foo", "", "docker.io/library/foo"},
      {"user/app:v1", "docker.io", "user/app", "v1", "docker.io/user/app:v1"},
      {"localhost/app", "localhost", "app", "", "localhost/app"},
      {"localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", "localhost:5000/a/b/c:t"},
      {"127.0.0.1:5000/app", "127.0.0.1:5000", "app", "", "127.0.0.1:5000/app"},
      {"[::1]:5000/app:x", "[::1]:5000", "app", "x", "[::1]:5000/app:x"},
      // Hosts are case-insensitive: one spelling (lowercase) everywhere hosts are compared.
      {"Registry.Example.com/ns/app", "registry.example.com", "ns/app", "",
       "registry.example.com/ns/app"},
      {"REG.example.com:443/ns/app", "reg.example.com", "ns/app", "", "reg.example.com/ns/app"},
      {"Index.Docker.IO/foo/bar", "docker.io", "foo/bar", "", "docker.io/foo/bar"},
      {"[::1]:443/app", "[::1]", "app", "", "[::1]/app"},
      {"reg.example.com/a__b/c-d/e..f", "", "", "", ""},  // ".." separator invalid: see below
      {"reg.example.com/a__b/c---d/e.f_g", "reg.example.com", "a__b/c---d/e.f_g", "",
       "reg.example.com/a__b/c---d/e.f_g"},
  };
  for (const auto& c : cases) {
    auto r = Reference::Parse(c.in);
    if (c.registry.empty()) {
      EXPECT_FALSE(r) << c.in;
      continue;
    }
    ASSERT_OK(r);
    EXPECT_EQ(r->registry(), c.registry) << c.in;
    EXPECT_EQ(r->repository(), c.repository) << c.in;
    EXPECT_EQ(r->tag(), c.tag) << c.in;
    EXPECT_EQ(r->String(), c.canonical) << c.in;
    // The canonical form parses to itself.
    auto again = Reference::Parse(r->String());
    ASSERT_OK(again);
    EXPECT_EQ(*again, *r);
  }
}

TEST(ReferenceTest, Digests) {
  auto r = Reference::Parse("reg.io/app@" + kD);
  ASSERT_OK(r);
  EXPECT_TRUE(r->has_digest());
  EXPECT_FALSE(r->has_tag());
  EXPECT_EQ(r->String(), "reg.io/app@" + kD);
  auto both = Reference::Parse("reg.io/app:v1@" + kD);
  ASSERT_OK(both);
  EXPECT_EQ(both->tag(), "v1");
  EXPECT_EQ(both->WithoutTag().String(), "reg.io/app@" + kD);
}

TEST(ReferenceTest, RefusesBadInputWithClearMessages) {
  const std::pair<std::string, std::string> bad[] = {
      {"", "empty"},
      {"Busybox", "lowercase"},
      {"reg.io/Team/app", "lowercase"},
      {"reg.io/../app", "not allowed"},
      {"reg.io/a//b", "empty path component"},
      {"reg.io/app/", "empty path component"},
      {"reg.io/-app", "must start with"},
      {"reg.io/app-", "must be followed by"},
      {"reg.io/a.-b", "must be followed by"},
      {"reg.io/app:" + std::string(129, 'a'), "longer than 128"},
      {"reg.io/app:-bad", "must start with"},
      {"reg.io/app:ba$d", "not allowed in tag"},
      {"reg.io/app:", "empty tag"},
      {"reg.io/app@sha256:abc", "invalid digest"},
      {"reg.io/app@md5:" + std::string(32, 'a'), "invalid digest"},
      {"reg.io/app@" + std::string("sha256:") + std::string(64, 'A'), "invalid digest"},
      {"reg.io/a\x01pp", "control"},
      {"reg.io/a pp", "control"},
      {"reg.io/app\n", "control"},
      {std::string("reg.io/ap\0p", 11), "control"},
      {"reg.io/\xc3\xa9", "non-ASCII"},
      {"reg.io:99999/app", "bad port"},
      {"reg.io:/app", "empty port"},
      {"-reg.io/app", "must start and end"},
      {"reg_io.com/app", "character \"_\" not allowed in host"},  // the "." makes it a host
      {std::string(2000, 'a'), "longer than 1024"},
      // A host only by its case or its :443 would read back as a Docker Hub namespace (found by
      // the fuzz target's round trip once hosts were lowercased).
      {"Ro/v", "needs a '.' or a port other than 443"},
      {"MYREG/app:1", "needs a '.' or a port other than 443"},
      {"myreg:443/app", "needs a '.' or a port other than 443"},
      {"reg.io/" + std::string(250, 'a'), "name longer than 255"},
  };
  for (const auto& [in, msg] : bad) {
    auto r = Reference::Parse(in);
    ASSERT_FALSE(r) << "accepted " << Quote(in);
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
    EXPECT_NE(r.error().context().find(msg), std::string::npos)
        << Quote(in) << " -> " << r.error().context();
    for (char c : r.error().context()) ASSERT_TRUE(c >= 0x20 && c < 0x7f);
  }
}


TEST(ReferenceTest, RegistryHostsHaveOneSpelling) {
  EXPECT_EQ(*NormalizeRegistryHost("REG.Internal.Example.COM"), "reg.internal.example.com");
  EXPECT_EQ(*NormalizeRegistryHost("reg.example.com:443"), "reg.example.com");
  EXPECT_EQ(*NormalizeRegistryHost("reg.example.com:5000"), "reg.example.com:5000");
  EXPECT_EQ(*NormalizeRegistryHost("INDEX.docker.io"), "docker.io");
  EXPECT_EQ(*NormalizeRegistryHost("XN--bcher-kva.example"), "xn--bcher-kva.example");
  ASSERT_ERRC(NormalizeRegistryHost("b\xc3\xbc" "cher.example"), Errc::kInvalidArgument);
  ASSERT_ERRC(NormalizeRegistryHost("reg_x.example"), Errc::kInvalidArgument);
  // The reference grammar refuses Unicode hosts outright (punycode is the way to write them).
  auto unicode = Reference::Parse("b\xc3\xbc" "cher.example/app:1");
  ASSERT_FALSE(unicode);
  EXPECT_NE(unicode.error().context().find("non-ASCII"), std::string::npos);
  // Two spellings of one reference are one reference.
  EXPECT_EQ(*Reference::Parse("Reg.Example.com/a/b:1"), *Reference::Parse("reg.example.com:443/a/b:1"));
  EXPECT_EQ(NormalizeHostPart("REG.Example.com/Team/*"), "reg.example.com/Team/*");
  EXPECT_EQ(NormalizeHostPart("*.Example.COM"), "*.example.com");
}

}  // namespace
}  // namespace digestd::verify
