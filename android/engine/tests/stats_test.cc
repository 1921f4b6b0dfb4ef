#include <cmath>
#include <vector>

#include "check.h"
#include "stats.h"

int main() {
  using mobdistill::ComputeStats;
  using mobdistill::Percentile;
  std::vector<double> v = {5, 1, 4, 2, 3};
  auto s = ComputeStats(v);
  CHECK_EQ(s.count, 5u);
  CHECK_EQ(s.min_us, 1.0);
  CHECK_EQ(s.max_us, 5.0);
  CHECK_EQ(s.p50_us, 3.0);
  CHECK(std::fabs(s.p90_us - 4.6) < 1e-12);  // numpy.percentile([1..5], 90) == 4.6
  CHECK_EQ(s.mean_us, 3.0);
  CHECK(std::fabs(s.std_us - std::sqrt(2.0)) < 1e-12);
  CHECK_EQ(Percentile({7}, 99), 7.0);
  CHECK_EQ(ComputeStats({}).count, 0u);
  return TEST_MAIN_RETURN();
}
