// The mobdistill-engine command line as a library function, so the executable (main.cc) and the
// app's in-process benchmark (md_engine_benchmark_main, facade.cc) run exactly the same code.
#ifndef MOBDISTILL_ENGINE_CLI_H_
#define MOBDISTILL_ENGINE_CLI_H_

#include <string>

namespace mobdistill {

// Parses flags, runs BenchmarkRunner with the log, JSONL and summary listeners. Returns the
// exit code (0 ok, 1 error) and, on error, the one-line message in *error.
int RunEngineCli(int argc, const char* const* argv, std::string* error);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_CLI_H_
