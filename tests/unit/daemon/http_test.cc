#include "daemon/http_client.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace digestd::daemon {
namespace {

TEST(UrlTest, ParsesAbsoluteUrls) {
  auto u = Url::Parse("https://auth.example.com/token?service=x");
  ASSERT_OK(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "auth.example.com");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->target, "/token?service=x");
  EXPECT_EQ(u->Origin(), "https://auth.example.com");
  auto p = Url::Parse("http://127.0.0.1:5000");
  ASSERT_OK(p);
  EXPECT_EQ(p->target, "/");
  EXPECT_EQ(p->Authority(), "127.0.0.1:5000");
  auto v6 = Url::Parse("http://[::1]:8080/v2/");
  ASSERT_OK(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->Authority(), "[::1]:8080");
  for (const char* bad : {"ftp://x/", "http://", "http://user:pw@host/", "http://h:99999999/",
                          "http://h/a b", "//host/x", "http://[::1/"}) {
    EXPECT_FALSE(Url::Parse(bad)) << bad;
  }
}

TEST(HttpResponseTest, HeaderLookupIsCaseInsensitive) {
  HttpResponse r{.status = 200, .headers = {{"content-type", "a/b"}}};
  EXPECT_EQ(r.Header("Content-Type").value_or(""), "a/b");
  EXPECT_FALSE(r.Header("Location"));
}

}  // namespace
}  // namespace digestd::daemon
