#pragma once

// One metrics registry for the process. Each module registers what it measures (a name, a help
// text, a kind and a function that reads the value when the registry renders), and the control
// API's /v1/metrics renders the registry in one place, in Prometheus' text format (0.0.4).
//
//   metrics::Registry registry;
//   store.RegisterMetrics(registry);          // store/, fusefs/, daemon/ ... each adds its own
//   registry.Add({"digestd_x_total", "What x counts.", metrics::Kind::kCounter}, [&] { return x; });
//   std::string text = registry.Render();
//
// Samples of one family (same name, other labels) may come from different modules: the first
// registration's help and kind are kept. A family can also read all its samples at once (labels
// known only at render time: pull failures by reason).
//
// Lifetime: a registered function must stay callable as long as the registry renders; the
// daemon registers objects that live until the process exits.
// Thread safety: Add*, Render and Names may be called from any thread; read functions are called
// with the registry's lock held and must not call back into it.

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace digestd::metrics {

enum class Kind { kCounter, kGauge };

struct Family {
  std::string name;  // digestd_<module>_<what>[_total]
  std::string help;
  Kind kind = Kind::kCounter;
};

// A value and its label set ("" or `{key="value",...}`).
struct Sample {
  std::string labels;
  std::uint64_t value = 0;
};

// A cumulative-bucket histogram read at render time: counts[i] are the observations in bucket i
// (not cumulative), bounds has one entry less than counts (the last bucket is +Inf).
struct Histogram {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts;
  double sum = 0;
  std::uint64_t count = 0;
};

// A counter a module owns and increments (relaxed atomics: totals, not ordering).
class Counter {
 public:
  void Add(std::uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// `{key="value"}` with the value escaped as the text format requires.
std::string Label(std::string_view key, std::string_view value);

class Registry {
 public:
  // One sample of `family`.
  void Add(const Family& family, std::function<std::uint64_t()> read, std::string labels = "");
  // Every sample of `family`, read together.
  void AddFamily(const Family& family, std::function<std::vector<Sample>()> read);
  void AddHistogram(const Family& family, std::function<Histogram()> read);

  std::string Render() const;
  // Registered family names, in registration order (for tests and docs).
  std::vector<std::string> Names() const;

 private:
  struct Entry {
    Family family;
    std::vector<std::function<std::vector<Sample>()>> reads;
    std::function<Histogram()> histogram;
  };
  Entry& EntryFor(const Family& family);  // mu_ held

  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

}  // namespace digestd::metrics
