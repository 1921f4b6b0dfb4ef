// mobdistill-engine: benchmark_model-style CLI over SegmentationRunner. Turns the Status into an
// exit code and a one-line message on stderr; everything else lives in the core library.
#include <cstdio>

#include "params.h"
#include "runner.h"
#include "segmentation_runner.h"

int main(int argc, char** argv) {
  using namespace mobdistill;
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
  if (s.ok()) {
    SegmentationRunner runner(params);
    runner.AddListener(&log);
    runner.AddListener(&jsonl);
    runner.AddListener(&summary);
    s = runner.Run();
    if (s.ok()) s = summary.status();
  }
  if (!s.ok()) {
    std::fprintf(stderr, "mobdistill-engine: error: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
