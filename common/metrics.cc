#include "common/metrics.h"

#include <fmt/format.h>

namespace digestd::metrics {

std::string Label(std::string_view key, std::string_view value) {
  std::string out = "{" + std::string(key) + "=\"";
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out + "\"}";
}

Registry::Entry& Registry::EntryFor(const Family& family) {
  for (auto& e : entries_) {
    if (e.family.name == family.name) return e;
  }
  entries_.push_back(Entry{.family = family, .reads = {}, .histogram = nullptr});
  return entries_.back();
}

void Registry::Add(const Family& family, std::function<std::uint64_t()> read, std::string labels) {
  AddFamily(family, [read = std::move(read), labels = std::move(labels)] {
    return std::vector<Sample>{{labels, read()}};
  });
}

void Registry::AddFamily(const Family& family, std::function<std::vector<Sample>()> read) {
  std::lock_guard lock(mu_);
  EntryFor(family).reads.push_back(std::move(read));
}

void Registry::AddHistogram(const Family& family, std::function<Histogram()> read) {
  std::lock_guard lock(mu_);
  EntryFor(family).histogram = std::move(read);
}

std::string Registry::Render() const {
  std::lock_guard lock(mu_);
  std::string m;
  for (const auto& e : entries_) {
    const auto& f = e.family;
    const char* type = e.histogram ? "histogram" : f.kind == Kind::kCounter ? "counter" : "gauge";
    m += "# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + type + "\n";
    for (const auto& read : e.reads) {
      for (const auto& s : read()) m += f.name + s.labels + " " + std::to_string(s.value) + "\n";
    }
    if (e.histogram) {
      const Histogram h = e.histogram();
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < h.counts.size(); ++i) {
        cumulative += h.counts[i];
        const std::string le = i < h.bounds.size() ? fmt::format("{}", h.bounds[i]) : "+Inf";
        m += f.name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
      }
      m += f.name + "_sum " + fmt::format("{}", h.sum) + "\n";
      m += f.name + "_count " + std::to_string(h.count) + "\n";
    }
  }
  return m;
}

std::vector<std::string> Registry::Names() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> names;
  for (const auto& e : entries_) names.push_back(e.family.name);
  return names;
}

}  // namespace digestd::metrics
