#include "cli.h"

#include <cstdio>

#include "device_sensors.h"
#include "params.h"
#include "runner.h"
#include "benchmark_runner.h"

namespace mobdistill {

int RunEngineCli(int argc, const char* const* argv, std::string* error) {
  Params params;
  Status s = ParseFlags(argc, argv, &params);
  if (s.ok() && params.help) {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  if (s.ok()) s = params.Validate();
  JsonLinesReporter jsonl;
  SummaryWriter summary(params.summary);
  LogReporter log;
  if (s.ok()) s = jsonl.Open(params.jsonl);
  DeviceSensors sensors;  // outlives the runner that samples it
  if (s.ok()) {
    BenchmarkRunner runner(params);
    if (params.record_sensors) {
      sensors.Discover(params.sysfs_root);
      runner.SetSensors(&sensors);
    }
    runner.AddListener(&log);
    runner.AddListener(&jsonl);
    runner.AddListener(&summary);
    s = runner.Run();
    if (s.ok()) s = summary.status();
  }
  if (!s.ok()) {
    if (error != nullptr) *error = s.message();
    return 1;
  }
  return 0;
}

}  // namespace mobdistill
