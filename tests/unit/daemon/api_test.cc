// The control API's route table: docs/api.md's endpoint table lists exactly the routes (method,
// path, role) and names the file each handler is in; path patterns match as documented.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "daemon/api/api.h"

namespace digestd::daemon::api {
namespace {

namespace fs = std::filesystem;
const fs::path kSource = DIGESTD_SOURCE_DIR;

using Row = std::tuple<std::string, std::string, std::string>;  // method, path, role

std::string Read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ApiRoutesTest, DocsTableIsTheRouteTable) {
  const std::string doc = Read(kSource / "docs/api.md");
  ASSERT_FALSE(doc.empty()) << "docs/api.md not found under " << kSource;
  std::set<Row> documented;
  const std::regex row(R"(^\| (GET|POST|DELETE|PUT|HEAD) \| (/v1/\S*) \| (reader|admin) \| (\S+) \|$)");
  std::istringstream lines(doc);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    EXPECT_TRUE(documented.insert({m[1], m[2], m[3]}).second) << "listed twice: " << line;
    // The handler file exists and holds a handler.
    const std::string file = Read(kSource / m[4].str());
    EXPECT_NE(file.find("asio::awaitable<Reply> "), std::string::npos) << line;
  }
  std::set<Row> routed;
  for (const auto& r : Routes()) {
    routed.insert({std::string(MethodName(r.method)), std::string(r.pattern),
                   std::string(RoleName(r.role))});
  }
  for (const auto& r : routed) {
    EXPECT_TRUE(documented.count(r)) << "not in docs/api.md: " << std::get<0>(r) << " "
                                     << std::get<1>(r) << " (" << std::get<2>(r) << ")";
  }
  for (const auto& d : documented) {
    EXPECT_TRUE(routed.count(d)) << "documented but not routed: " << std::get<0>(d) << " "
                                 << std::get<1>(d) << " (" << std::get<2>(d) << ")";
  }
  EXPECT_EQ(routed.size(), Routes().size()) << "a route is in the table twice";
}

TEST(ApiRoutesTest, OnlyGetEndpointsAndPolicyEvalAreOpenToReaders) {
  for (const auto& r : Routes()) {
    const bool read = r.method == Method::kGet || r.pattern == "/v1/policy/eval";
    EXPECT_EQ(r.role, read ? Role::kReader : Role::kAdmin) << r.pattern;
    EXPECT_NE(r.handler, nullptr) << r.pattern;
  }
}

TEST(ApiRoutesTest, PatternsMatchAsDocumented) {
  auto m = FindRoute(Method::kGet, "/v1/images/sha256:abc");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->handler, &InspectImage);
  ASSERT_EQ(m.params.size(), 1u);
  EXPECT_EQ(m.params[0], "sha256:abc");
  // The last placeholder takes the rest (the handler refuses what is not a digest).
  m = FindRoute(Method::kDelete, "/v1/images/a/b");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params.at(0), "a/b");
  m = FindRoute(Method::kGet, "/v1/images/");
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.params.at(0), "");
  // Exact paths are exact.
  EXPECT_EQ(FindRoute(Method::kGet, "/v1/images").route->handler, &ListImages);
  EXPECT_EQ(FindRoute(Method::kGet, "/v1/imagesx").route, nullptr);
  EXPECT_EQ(FindRoute(Method::kGet, "/v1/health/").route, nullptr);
  EXPECT_EQ(FindRoute(Method::kGet, "/v1/../v1/health").route, nullptr);
  // A known path with another method: no route, but known (answered 404, or 403 to a reader).
  m = FindRoute(Method::kPost, "/v1/health");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_TRUE(m.path_known);
  m = FindRoute(Method::kGet, "/v2/");
  EXPECT_EQ(m.route, nullptr);
  EXPECT_FALSE(m.path_known);
  EXPECT_EQ(FindRoute(Method::kDelete, "/v1/leases/job-7").params.at(0), "job-7");
  EXPECT_EQ(FindRoute(Method::kDelete, "/v1/deny/sha256:ff").route->handler, &RemoveDeny);
}

TEST(ApiRoutesTest, ErrorsMapToStatuses) {
  EXPECT_EQ(StatusFor(MakeError(Module::kDaemon, Errc::kInvalidArgument, "x")), Status::kBadRequest);
  EXPECT_EQ(StatusFor(MakeError(Module::kDaemon, Errc::kPermission, "x")), Status::kForbidden);
  EXPECT_EQ(StatusFor(MakeError(Module::kDaemon, Errc::kDigestMismatch, "x")), Status::kBadGateway);
  EXPECT_EQ(StatusFor(MakeError(Module::kDaemon, Errc::kBusy, "x")), Status::kConflict);
  const Reply r = FromError(MakeError(Module::kDaemon, Errc::kNotFound, "gone"));
  EXPECT_EQ(r.status, Status::kNotFound);
  EXPECT_NE(r.body.find("\"code\""), std::string::npos);
  // Text from a request with invalid UTF-8 never makes a reply throw.
  EXPECT_NO_THROW(ErrorReply(Status::kBadRequest, "bad \xff path"));
}

TEST(ApiRoutesTest, RequestHelpersRefuseWhatIsNotThere) {
  EXPECT_EQ(QueryValue("a=1&b=2", "b"), "2");
  EXPECT_EQ(QueryValue("a=1&b", "b"), "");
  EXPECT_EQ(QueryValue("ab=1", "a"), "");
  EXPECT_FALSE(BodyObject("[1]"));
  EXPECT_FALSE(BodyObject("{"));
  EXPECT_TRUE(BodyObject(""));
  auto body = BodyObject(R"({"s":"x","n":1})");
  ASSERT_TRUE(body);
  EXPECT_TRUE(StringField(*body, "s", true, 10));
  EXPECT_FALSE(StringField(*body, "n", false, 10));
  EXPECT_FALSE(StringField(*body, "missing", true, 10));
  EXPECT_FALSE(StringField(*body, "s", true, 0));
}

}  // namespace
}  // namespace digestd::daemon::api
