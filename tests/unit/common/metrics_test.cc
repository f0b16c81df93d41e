// The metrics registry: families from several registrants render once with their samples, label
// values are escaped, histograms are cumulative.

#include "common/metrics.h"

#include <gtest/gtest.h>

namespace digestd::metrics {
namespace {

TEST(MetricsTest, FamiliesRenderOnceWithEverySample) {
  Registry r;
  Counter c;
  c.Add(3);
  r.Add({"x_total", "Xs.", Kind::kCounter}, [&c] { return c.value(); }, Label("socket", "a"));
  r.Add({"y", "Y now.", Kind::kGauge}, [] { return 7u; });
  r.Add({"x_total", "ignored: the first help stays", Kind::kGauge}, [] { return 5u; },
        Label("socket", "b"));
  r.AddFamily({"z_total", "Zs.", Kind::kCounter}, [] {
    return std::vector<Sample>{{Label("reason", "io"), 1}, {Label("reason", "q\"\\\n"), 2}};
  });
  EXPECT_EQ(r.Render(),
            "# HELP x_total Xs.\n# TYPE x_total counter\n"
            "x_total{socket=\"a\"} 3\nx_total{socket=\"b\"} 5\n"
            "# HELP y Y now.\n# TYPE y gauge\ny 7\n"
            "# HELP z_total Zs.\n# TYPE z_total counter\n"
            "z_total{reason=\"io\"} 1\nz_total{reason=\"q\\\"\\\\\\n\"} 2\n");
  EXPECT_EQ(r.Names(), (std::vector<std::string>{"x_total", "y", "z_total"}));
  c.Add();
  EXPECT_NE(r.Render().find("x_total{socket=\"a\"} 4\n"), std::string::npos);
}

TEST(MetricsTest, HistogramsAreCumulative) {
  Registry r;
  r.AddHistogram({"h_seconds", "Latency.", Kind::kCounter}, [] {
    return Histogram{.bounds = {0.001, 0.01}, .counts = {2, 3, 1}, .sum = 0.5, .count = 6};
  });
  EXPECT_EQ(r.Render(),
            "# HELP h_seconds Latency.\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{le=\"0.001\"} 2\nh_seconds_bucket{le=\"0.01\"} 5\n"
            "h_seconds_bucket{le=\"+Inf\"} 6\nh_seconds_sum 0.5\nh_seconds_count 6\n");
}

}  // namespace
}  // namespace digestd::metrics
