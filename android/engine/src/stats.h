// Latency statistics over a sample (microseconds in, microseconds out).
#ifndef MOBDISTILL_ENGINE_STATS_H_
#define MOBDISTILL_ENGINE_STATS_H_

#include <cstddef>
#include <vector>

namespace mobdistill {

struct LatencyStats {
  size_t count = 0;
  double min_us = 0, max_us = 0, mean_us = 0, std_us = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0;
};

// Percentiles interpolate linearly between closest ranks (numpy's default "linear"), so the
// Python side can recompute them from the JSONL and get the same numbers.
double Percentile(std::vector<double> sorted_or_not, double p);
LatencyStats ComputeStats(const std::vector<double>& samples_us);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_STATS_H_
