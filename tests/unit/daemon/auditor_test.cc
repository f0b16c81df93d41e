// The Auditor: one event schema (store/audit_event.h), fields clipped, invalid UTF-8 replaced, refusals rate-limited per
// peer with the count of what was left out, retention by size and age. Time is the test's.

#include "daemon/auditor.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "testing/test_util.h"

namespace digestd::daemon {
namespace {

using digestd::testing::TempDir;
using nlohmann::json;

class AuditorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = store::Store::Open({.root = dir_.path() / "store"});
    ASSERT_TRUE(s) << s.error().ToString();
    store_ = std::move(*s);
  }
  std::vector<json> Events() {
    std::vector<json> out;
    auto events = store_->ReadAudit(0, 100000);
    EXPECT_TRUE(events);
    for (const auto& e : *events) out.push_back(json::parse(e.json));
    return out;
  }
  TempDir dir_;
  store::StorePtr store_;
  std::int64_t now_ = 1'800'000'000;
};

TEST_F(AuditorTest, FieldsAreClippedAndInvalidUtf8Replaced) {
  Auditor a(*store_, AuditConfig{}, [this] { return now_; });
  a.Record({.type = "api.test",
            .reason = std::string(20000, 'r'),
            .details = {{"path", std::string(20000, 'p')},
                        {"bad", std::string("a\xff\xfe" "b")},
                        {"nested", {{"deep", std::string(1000, 'd')}}}}});
  auto events = Events();
  ASSERT_EQ(events.size(), 1u);
  const json& e = events[0];
  EXPECT_EQ(e["type"], "api.test");
  EXPECT_EQ(e["time"], now_);
  EXPECT_EQ(e["actor"], "digestd");  // no client: the daemon acted
  EXPECT_FALSE(e.contains("pid"));
  EXPECT_FALSE(e.contains("digest"));  // typed fields appear when set
  EXPECT_LT(e["reason"].get<std::string>().size(), Auditor::kFieldMaxBytes + 40);
  const std::string path = e["path"];
  EXPECT_LT(path.size(), Auditor::kFieldMaxBytes + 40);
  EXPECT_NE(path.find("(20000 bytes)"), std::string::npos) << path;
  EXPECT_EQ(e["bad"], "a\xef\xbf\xbd\xef\xbf\xbd" "b");  // U+FFFD for each invalid byte
  EXPECT_LT(e["nested"]["deep"].get<std::string>().size(), Auditor::kFieldMaxBytes + 40);
  // A clip never splits a UTF-8 character.
  std::string text;
  for (int i = 0; i < 400; ++i) text += "\xc3\xa9";  // é, 2 bytes each
  a.Record({.type = "api.test", .details = {{"t", text}}});
  const std::string clipped = Events().back()["t"];
  EXPECT_EQ(clipped.find("\xef\xbf\xbd"), std::string::npos) << "a character was split";
  EXPECT_EQ(Auditor::Dump(json(std::string("\xff"))), "\"\xef\xbf\xbd\"");
}

TEST_F(AuditorTest, RefusalsAreRateLimitedPerPeerAndTheRestCounted) {
  Auditor a(*store_, AuditConfig{.refusals_per_minute = 3}, [this] { return now_; });
  auto refusal = [](std::int64_t uid, int i) {
    return store::AuditEvent{.type = "api.forbidden", .actor_uid = uid, .details = {{"i", i}}};
  };
  for (int i = 0; i < 10; ++i) a.Refusal(refusal(65534, i));
  for (int i = 0; i < 2; ++i) a.Refusal(refusal(1000, i));
  EXPECT_EQ(Events().size(), 5u);  // 3 of uid 65534, 2 of uid 1000
  EXPECT_EQ(a.suppressed(), 7u);
  now_ += 60;  // a new minute: the next refusal is recorded and says how many were left out
  a.Refusal(refusal(65534, 0));
  const json last = Events().back();
  EXPECT_EQ(last["actor"], 65534);
  EXPECT_EQ(last["suppressed"], 7);
  a.Refusal(refusal(65534, 0));
  EXPECT_FALSE(Events().back().contains("suppressed"));
}

TEST_F(AuditorTest, TypedFieldsNeverGiveWayToDetails) {
  Auditor a(*store_, AuditConfig{}, [this] { return now_; });
  a.Record({.type = "deny.added",
            .actor_uid = 0,
            .pid = 42,
            .digest = "sha256:aa",
            .details = {{"type", "forged"}, {"actor", "someone"}, {"digest", "x"}, {"extra", 1}}});
  const json e = Events().back();
  EXPECT_EQ(e["type"], "deny.added");
  EXPECT_EQ(e["actor"], 0);
  EXPECT_EQ(e["pid"], 42);
  EXPECT_EQ(e["digest"], "sha256:aa");
  EXPECT_EQ(e["extra"], 1);
}

TEST_F(AuditorTest, AFailedWriteIsCountedNotDropped) {
  Auditor a(*store_, AuditConfig{}, [this] { return now_; });
  // Over the store's bound for one record even after clipping: many clipped fields.
  json many = json::object();
  for (int i = 0; i < 200; ++i) many["f" + std::to_string(i)] = std::string(1000, 'x');
  a.Record({.type = "too.big", .details = many});
  EXPECT_EQ(a.write_failures(), 1u);
  EXPECT_EQ(store_->counters().audit_write_failures, 1u);
  EXPECT_TRUE(Events().empty());
  metrics::Registry registry;
  a.RegisterMetrics(registry);
  EXPECT_NE(registry.Render().find("digestd_audit_write_failures_total 1\n"), std::string::npos)
      << registry.Render();
}

TEST_F(AuditorTest, RetentionBySizeAndAge) {
  Auditor old(*store_, AuditConfig{}, [this] { return now_ - 40 * 86400; });
  for (int i = 0; i < 10; ++i) old.Record({.type = "old", .details = {{"i", i}}});
  Auditor a(*store_, AuditConfig{.max_bytes = 0, .max_age_days = 30}, [this] { return now_; });
  for (int i = 0; i < 10; ++i) a.Record({.type = "new", .details = {{"i", i}}});
  const auto before = store_->GetAuditStats();
  EXPECT_EQ(before.events, 20u);
  // Store retention judges age by the store's clock; this test's events are far in the future
  // or past of it, so age is checked through the store with its own clock below.
  auto by_size = store_->PruneAudit(before.bytes / 2, 0);
  ASSERT_TRUE(by_size) << by_size.error().ToString();
  EXPECT_GE(by_size->removed, 9u);
  EXPECT_LE(by_size->after.bytes, before.bytes / 2);
  // The newest events are the ones kept, and sequence numbers go on.
  auto kept = Events();
  EXPECT_EQ(kept.back()["type"], "new");
  EXPECT_EQ(store_->GetAuditStats().events, kept.size());
  // Age (judged by the store's clock; events are appended in time order, so the scan stops at
  // the first young one): a fresh log with stale events first, then fresh ones.
  auto other = store::Store::Open({.root = dir_.path() / "store2"});
  ASSERT_TRUE(other);
  const std::int64_t store_now = static_cast<std::int64_t>(::time(nullptr));
  Auditor stale(**other, AuditConfig{}, [store_now] { return store_now - 40 * 86400; });
  for (int i = 0; i < 3; ++i) stale.Record({.type = "stale"});
  Auditor fresh(**other, AuditConfig{.max_bytes = 0, .max_age_days = 30},
                [store_now] { return store_now; });
  fresh.Record({.type = "fresh"});
  auto pruned = fresh.Prune();
  ASSERT_TRUE(pruned) << pruned.error().ToString();
  EXPECT_EQ(pruned->removed, 3u);
  EXPECT_EQ(fresh.pruned(), 3u);
  auto left = (*other)->ReadAudit(0, 100);
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_NE(left->front().json.find("fresh"), std::string::npos);
  // Reopened, the store counts its audit log again.
  const auto stats = store_->GetAuditStats();
  store_.reset();
  auto s = store::Store::Open({.root = dir_.path() / "store"});
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)->GetAuditStats().events, stats.events);
  EXPECT_EQ((*s)->GetAuditStats().bytes, stats.bytes);
}

}  // namespace
}  // namespace digestd::daemon
