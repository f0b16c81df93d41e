// digestctl's output for people: ISO 8601 times in UTC, short digests, the audit log as a
// table, a decision or a refusal in one line that names the rule and its scope once.

#include "tools/human.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

namespace digestd::tools {
namespace {

using nlohmann::json;

std::size_t Count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

TEST(HumanTest, TimesAreIsoUtcAndDigestsShort) {
  EXPECT_EQ(IsoUtc(1796590895), "2026-12-06T21:01:35Z");
  EXPECT_EQ(IsoUtc(0), "-");
  EXPECT_EQ(IsoUtc(-5), "-");
  EXPECT_EQ(ShortDigest("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
  EXPECT_EQ(ShortDigest("sha256:abc"), "sha256:abc");
  EXPECT_EQ(ShortDigest("not a digest"), "not a digest");
}

TEST(HumanTest, AuditIsATable) {
  const std::string ndjson =
      R"({"seq":7,"time":1796590895,"type":"policy.denied","actor":0,"pid":12,"reference":"reg.test/app:v1","digest":"sha256:0a5a10d09bdce1d7f8f82b1969ebf4ef","reason":"no accepted signature: no signatures found"})"
      "\n"
      R"({"seq":8,"time":1796590896,"type":"lease.created","actor":0,"lease":"job-1"})"
      "\nnot json\n";
  const std::string t = AuditTable(ndjson);
  EXPECT_EQ(t.find("SEQ"), 0u) << t;
  EXPECT_NE(t.find("2026-12-06T21:01:35Z"), std::string::npos) << t;
  EXPECT_NE(t.find("sha256:0a5a10d09bdc "), std::string::npos) << t;
  EXPECT_EQ(t.find("0a5a10d09bdce1d7"), std::string::npos) << "digest not shortened: " << t;
  EXPECT_NE(t.find("reg.test/app:v1: no accepted signature: no signatures found"), std::string::npos)
      << t;
  EXPECT_NE(t.find("lease job-1"), std::string::npos) << t;
  EXPECT_NE(t.find("not json"), std::string::npos) << t;
  EXPECT_EQ(t.find("{\""), std::string::npos) << "raw JSON in the table: " << t;
  EXPECT_EQ(Count(t, "\n"), 4u) << t;
}

TEST(HumanTest, ARefusalNamesRuleScopeAndReferenceOnceWithTheNextStep) {
  const json d = {{"allowed", false},
                  {"scope", "docker:reg.test/svc"},
                  {"requirement", "sigstoreSigned"},
                  {"signer", ""},
                  {"reason", "no accepted signature: no signatures found"}};
  const std::string text = RefusalText("reg.test/svc/unsigned:v1", d);
  EXPECT_EQ(Count(text, "sigstoreSigned"), 1u) << text;
  EXPECT_EQ(Count(text, "scope docker:reg.test/svc"), 1u) << text;
  EXPECT_EQ(Count(text, "reg.test/svc/unsigned:v1"), 2u) << text;  // the refusal and the next step
  EXPECT_NE(text.find("next: digestctl explain reg.test/svc/unsigned:v1"), std::string::npos) << text;
  EXPECT_EQ(text.find('{'), std::string::npos) << text;
  EXPECT_EQ(DecisionLine({{"allowed", true}, {"scope", "default"}, {"rule", "signedBy"},
                          {"signer", "team"}}),
            "allowed by rule signedBy (scope default), signed by team");
}

// Text a registry or a client chose never reaches the operator's terminal as control bytes.
TEST(HumanTest, ControlCharactersAreNotPrinted) {
  const std::string evil = "a\x1b]0;owned\x07" "b\nc";
  const std::string t =
      AuditTable(json{{"seq", 1}, {"type", "pull.failed"}, {"reason", evil}}.dump() + "\n");
  EXPECT_EQ(t.find('\x1b'), std::string::npos);
  EXPECT_EQ(t.find('\x07'), std::string::npos);
  EXPECT_NE(t.find("a?]0;owned?b?c"), std::string::npos) << t;
  const std::string r = RefusalText("reg.test/app:v1", {{"allowed", false}, {"reason", evil}});
  EXPECT_EQ(r.find('\x1b'), std::string::npos);
  EXPECT_EQ(std::count(r.begin(), r.end(), '\n'), 2) << r;  // its own two lines only
}

}  // namespace
}  // namespace digestd::tools
