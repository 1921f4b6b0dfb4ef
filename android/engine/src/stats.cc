#include "stats.h"

#include <algorithm>
#include <cmath>

namespace mobdistill {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * frac;
}

LatencyStats ComputeStats(const std::vector<double>& samples) {
  LatencyStats s;
  s.count = samples.size();
  if (samples.empty()) return s;
  s.min_us = *std::min_element(samples.begin(), samples.end());
  s.max_us = *std::max_element(samples.begin(), samples.end());
  double sum = 0;
  for (double x : samples) sum += x;
  s.mean_us = sum / static_cast<double>(samples.size());
  double var = 0;
  for (double x : samples) var += (x - s.mean_us) * (x - s.mean_us);
  s.std_us = std::sqrt(var / static_cast<double>(samples.size()));
  s.p50_us = Percentile(samples, 50);
  s.p90_us = Percentile(samples, 90);
  s.p99_us = Percentile(samples, 99);
  return s;
}

}  // namespace mobdistill
