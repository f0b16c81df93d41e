#include "daemon/config.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace digestd::daemon {
namespace {

TEST(ConfigTest, FullExample) {
  auto c = ParseConfig(R"(
[store]
root = "/var/lib/digestd"
quota_bytes = 107374182400

[policy]
file = "/etc/digestd/policy.json"
trust = "/etc/digestd/trust.json"

[auth]
file = "/etc/digestd/auth.json"

[pull]
platform = "linux/arm64/v8"
layer_concurrency = 8
manifest_max_bytes = 1048576
retries = 2

[timeouts]
connect_ms = 5000
first_byte_ms = 10000
stall_ms = 15000

[[registry]]
host = "registry.example.com"
max_concurrency = 6
ca_file = "/etc/digestd/ca.pem"

[[registry.mirror]]
host = "mirror.internal:5000"
insecure = true

[[registry]]
host = "localhost:5000"
insecure = true
)", "digestd.toml");
  ASSERT_OK(c);
  EXPECT_EQ(c->store_root, "/var/lib/digestd");
  EXPECT_EQ(c->quota_bytes, 107374182400u);
  EXPECT_EQ(c->trust_path, "/etc/digestd/trust.json");
  EXPECT_EQ(c->platform.String(), "linux/arm64/v8");
  EXPECT_EQ(c->layer_concurrency, 8);
  EXPECT_EQ(c->stall_timeout.count(), 15000);
  ASSERT_EQ(c->registries.size(), 2u);
  const auto* r = c->FindRegistry("registry.example.com");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->max_concurrency, 6);
  ASSERT_EQ(r->mirrors.size(), 1u);
  EXPECT_TRUE(r->mirrors[0].insecure);
  EXPECT_FALSE(r->mirrors[0].resolve_tags);
  EXPECT_TRUE(c->FindRegistry("localhost:5000")->insecure);
  EXPECT_EQ(c->FindRegistry("quay.io"), nullptr);
}

TEST(ConfigTest, DefaultsWhenEmpty) {
  auto c = ParseConfig("", "empty.toml");
  ASSERT_OK(c);
  EXPECT_EQ(c->store_root, "/var/lib/digestd");
  EXPECT_EQ(c->manifest_max_bytes, 4u << 20);
  EXPECT_TRUE(c->registries.empty());
  EXPECT_FALSE(c->snapshotter.enabled);
  EXPECT_TRUE(c->snapshotter.wipe);
}

TEST(ConfigTest, Snapshotter) {
  auto c = ParseConfig("[snapshotter]\nenabled = true\nsocket = \"/run/x/snap.sock\"\n"
                       "root = \"/srv/snaps\"\nwipe = false\npull_on_demand = true\n",
                       "s.toml");
  ASSERT_OK(c);
  EXPECT_TRUE(c->snapshotter.enabled);
  EXPECT_EQ(c->snapshotter.socket, "/run/x/snap.sock");
  EXPECT_EQ(c->snapshotter.root, "/srv/snaps");
  EXPECT_FALSE(c->snapshotter.wipe);
  EXPECT_TRUE(c->snapshotter.pull_on_demand);
  EXPECT_TRUE(c->snapshotter.seed_namespaces.empty());  // no hand-off unless asked for
  auto seed = ParseConfig("[snapshotter]\ncontainerd_socket = \"/run/containerd/containerd.sock\"\n"
                          "seed_namespaces = [\"default\", \"k8s.io\"]\nseed_hold_s = 600\n",
                          "s.toml");
  ASSERT_OK(seed);
  EXPECT_EQ(seed->snapshotter.containerd_socket, "/run/containerd/containerd.sock");
  EXPECT_EQ(seed->snapshotter.seed_namespaces, (std::vector<std::string>{"default", "k8s.io"}));
  EXPECT_EQ(seed->snapshotter.seed_hold, std::chrono::seconds(600));
}

TEST(ConfigTest, AuditDeadlinesAndHostsNormalised) {
  auto c = ParseConfig(
      "[audit]\nmax_bytes = 0\nmax_age_days = 7\nrefusals_per_minute = 5\n"
      "[timeouts]\nblob_deadline_min_ms = 1500\nmin_rate_bytes_per_s = 2048\n"
      "[[registry]]\nhost = \"REG.Example.com:443\"\ninsecure = true\n"
      "[[registry.mirror]]\nhost = \"Mirror.Example.com\"\n",
      "digestd.toml");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c->audit.max_bytes, 0u);
  EXPECT_EQ(c->audit.max_age_days, 7);
  EXPECT_EQ(c->audit.refusals_per_minute, 5);
  EXPECT_EQ(c->blob_deadline_min, std::chrono::milliseconds(1500));
  EXPECT_EQ(c->min_rate_bytes_per_s, 2048u);
  // One spelling of a host: the config's entry is found whatever case a reference uses.
  EXPECT_EQ(c->registries[0].host, "reg.example.com");
  EXPECT_EQ(c->registries[0].mirrors[0].host, "mirror.example.com");
  ASSERT_NE(c->FindRegistry("Reg.EXAMPLE.com"), nullptr);
  EXPECT_TRUE(c->FindRegistry("reg.example.com:443")->insecure);
  EXPECT_EQ(c->FindRegistry("reg.example.com:5000"), nullptr);
  auto defaults = ParseConfig("", "digestd.toml");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->audit.max_bytes, std::uint64_t{256} << 20);
  EXPECT_EQ(defaults->audit.refusals_per_minute, 60);
}

TEST(ConfigTest, UnknownKeysAndBadValuesNameTheKey) {
  const std::pair<std::string, std::string> bad[] = {
      {"[store]\nroots = \"/x\"", "store.roots: unknown key"},
      {"[stor]\n", "stor: unknown key"},
      {"[store]\nroot = \"relative\"", "store.root: must be an absolute path"},
      {"[store]\nquota_bytes = -1", "store.quota_bytes: must not be negative"},
      {"[store]\nquota_bytes = \"10G\"", "store.quota_bytes: must be an integer"},
      {"[pull]\nplatform = \"linux\"", "pull.platform"},
      {"[pull]\nlayer_concurrency = 0", "pull.layer_concurrency: must be 1..64"},
      {"[timeouts]\nstall_ms = 0", "timeouts.stall_ms: must be 1..3600000"},
      {"[[registry]]\ninsecure = true", "registry[0].host: required"},
      {"[[registry]]\nhost = \"https://reg.io\"", "registry[0].host"},
      {"[[registry]]\nhost = \"reg.io\"\n[[registry]]\nhost = \"reg.io\"", "duplicate registry"},
      {"[[registry]]\nhost = \"reg.io\"\n[[registry.mirror]]\nhost = \"m.io\"\ntls = false",
       "registry[0].mirror[0].tls: unknown key"},
      {"[[registry]]\nhost = \"reg.io\"\ninsecure = \"yes\"", "registry[0].insecure: must be true or false"},
      {"store = 5", "store: must be a table"},
      {"[snapshotter]\nenable = true", "snapshotter.enable: unknown key"},
      {"[snapshotter]\nenabled = 1", "snapshotter.enabled: must be true or false"},
      {"[snapshotter]\nseed_namespaces = [\"default\"]",
       "snapshotter.seed_namespaces: needs snapshotter.containerd_socket"},
      {"[snapshotter]\ncontainerd_socket = \"/c.sock\"\nseed_namespaces = \"default\"",
       "snapshotter.seed_namespaces: must be an array of strings"},
      {"[snapshotter]\ncontainerd_socket = \"/c.sock\"\nseed_namespaces = [1]",
       "snapshotter.seed_namespaces: must hold non-empty strings"},
      {"[snapshotter]\ncontainerd_socket = \"/c.sock\"\nseed_namespaces = [\"../etc\"]",
       "snapshotter.seed_namespaces: \"../etc\" is not a containerd namespace name"},
      {"[snapshotter]\ncontainerd_socket = \"c.sock\"",
       "snapshotter.containerd_socket: must be an absolute path"},
      {"[snapshotter]\nseed_hold_s = 5", "snapshotter.seed_hold_s: must be 60..604800"},
      {"[snapshotter]\nroot = \"snaps\"", "snapshotter.root: must be an absolute path"},
      {"snapshotter = true", "snapshotter: must be a table"},
      {"[store\nroot = 1", "digestd.toml: "},
      {"[audit]\nmax_bytes = 10", "audit.max_bytes: must be 0 (no bound) or at least 1 MiB"},
      {"[audit]\nmax_age_days = 100000", "audit.max_age_days: must be 0..36500"},
      {"[audit]\nrefusals_per_minute = 0", "audit.refusals_per_minute: must be 1..100000"},
      {"[audit]\nretention = 1", "audit.retention: unknown key"},
      {"[timeouts]\nmin_rate_bytes_per_s = 10", "timeouts.min_rate_bytes_per_s: must be at least 1024"},
      {"[timeouts]\nblob_deadline_min_ms = 0", "timeouts.blob_deadline_min_ms: must be 1..3600000"},
  };
  for (const auto& [text, msg] : bad) {
    auto c = ParseConfig(text, "digestd.toml");
    ASSERT_FALSE(c) << text;
    EXPECT_NE(c.error().context().find("digestd.toml"), std::string::npos) << c.error().context();
    EXPECT_NE(c.error().context().find(msg), std::string::npos)
        << text << " -> " << c.error().context();
  }
}

}  // namespace
}  // namespace digestd::daemon
