// pull_once: one verified pull into a store, outside the daemon, for benchmarks and for tracing
// the I/O path (strace shows io_uring_enter and no epoll). Prints one line:
//   pulled <digest> layers=<n> bytes=<fetched> seconds=<s> maxrss_kb=<kb>
// Usage: pull_once --store DIR --policy FILE [--config FILE] [--insecure HOST]... REFERENCE

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/io_uring_check.h"
#include "daemon/offline_pull.h"
#include "store/store.h"
#include "verify/policy_set.h"

int main(int argc, char** argv) {
  namespace d = digestd::daemon;
  std::string store_dir, policy, config_path, reference;
  std::vector<std::string> insecure;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--store" && i + 1 < argc) store_dir = argv[++i];
    else if (a == "--policy" && i + 1 < argc) policy = argv[++i];
    else if (a == "--config" && i + 1 < argc) config_path = argv[++i];
    else if (a == "--insecure" && i + 1 < argc) insecure.push_back(argv[++i]);
    else reference = a;
  }
  if (store_dir.empty() || policy.empty() || reference.empty()) {
    std::cerr << "usage: pull_once --store DIR --policy FILE [--config FILE] [--insecure HOST]... "
                 "REFERENCE\n";
    return 2;
  }
  if (auto ok = d::CheckIoUring(); !ok) {
    std::cerr << "pull_once: " << ok.error().ToString() << "\n";
    return 2;
  }
  d::Config config;
  if (!config_path.empty()) {
    auto c = d::LoadConfig(config_path);
    if (!c) {
      std::cerr << "pull_once: " << c.error().ToString() << "\n";
      return 2;
    }
    config = std::move(*c);
  }
  for (const auto& h : insecure) config.registries.push_back({.host = h, .insecure = true});
  auto store = digestd::store::Store::Open({.root = store_dir, .quota_bytes = config.quota_bytes});
  if (!store) {
    std::cerr << "pull_once: " << store.error().ToString() << "\n";
    return 2;
  }
  digestd::verify::PolicySet policies(policy, "");
  if (auto r = policies.Reload(); !r) {
    std::cerr << "pull_once: " << r.error().ToString() << "\n";
    return 2;
  }
  // A named argument: GCC 12 mis-destroys braced temporaries passed to a co_await'ed call.
  d::PullOptions options;
  const auto t0 = std::chrono::steady_clock::now();
  if (std::getenv("PULL_ONCE_TRACE") != nullptr) {
    options.on_event = [t0](const d::PullEvent& e) {
      if (e.type == "blob" && e.bytes != e.total) return;
      const double at = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "%8.3f %s %s %s\n", at, e.type.c_str(), e.digest.c_str(),
                   e.type == "policy" ? "" : e.detail.c_str());
    };
  }
  auto result = d::PullOffline(**store, policies, config, reference, std::move(options));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!result) {
    std::cerr << "pull_once: " << result.error().ToString() << "\n";
    return 1;
  }
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  std::printf("pulled %s layers=%zu bytes=%llu seconds=%.3f maxrss_kb=%ld\n",
              result->manifest.ToString().c_str(), result->layers.size(),
              static_cast<unsigned long long>(result->bytes_fetched), secs, ru.ru_maxrss);
  return 0;
}
