// mobdistill-engine: benchmark_model-style CLI over BenchmarkRunner. Turns the Status into an
// exit code and a one-line message on stderr; everything else lives in the core library.
#include <cstdio>
#include <string>

#include "cli.h"

int main(int argc, char** argv) {
  std::string error;
  const int code = mobdistill::RunEngineCli(argc, argv, &error);
  if (code != 0) std::fprintf(stderr, "mobdistill-engine: error: %s\n", error.c_str());
  return code;
}
