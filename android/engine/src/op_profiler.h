// Per-operator invoke times (--enable_op_profiling) through the TFLite C API's telemetry
// profiler: TfLiteInterpreterOptionsSetTelemetryProfiler takes a struct of callbacks that the
// interpreter calls around every node it invokes (a TFLite kernel, or one delegated partition)
// and, from delegates that time their own operators (XNNPACK), once per inner operator with its
// elapsed time. Layout of that struct: tensorflow/lite/profiling/telemetry/c/profiler.h (which
// says it is not ABI-stable, so it is checked against the runtime's version at load).
//
// The profile is a separate pass after the measured runs, on the same model bytes, threads and
// the last frame's real inputs: profiling callbacks would otherwise add to the latencies the
// benchmark reports. It runs twice: with the requested delegate (what the app runs: per
// delegated partition, plus XNNPACK's own per-operator times when it reports them) and on the
// built-in kernels (no delegate: every operator timed by the interpreter itself).
#ifndef MOBDISTILL_ENGINE_OP_PROFILER_H_
#define MOBDISTILL_ENGINE_OP_PROFILER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "status.h"
#include "tflite_c_api.h"

namespace mobdistill {

struct OpTiming {
  std::string name;           // op name (TFLite builtin or delegate kernel, e.g. CONV_2D)
  int64_t subgraph = -1;
  int64_t partition = -1;     // delegate_inner: which delegated partition, in run order
  int64_t node = -1;          // interpreter node index, or the delegate's operator index
  bool delegate_inner = false;  // reported by a delegate for one of its own operators
  int64_t count = 0;
  double total_us = 0;
};

struct OpProfilePass {
  std::string label;     // "delegate" | "builtin"
  std::string delegate;  // "xnnpack" | "cpu"
  int runs = 0;
  double invoke_avg_us = 0;  // wall time of one Invoke with the profiler attached
  std::vector<OpTiming> ops;
  std::string error;         // why the pass could not run (then `ops` is empty)
};

struct OpProfileInput {
  std::string name;
  std::vector<uint8_t> bytes;
};

// Runs `signature` of `model_bytes` `runs` times (after one untimed warm-up) with the telemetry
// profiler attached and fills `*pass`.
Status ProfileOps(const TfLiteApi& api, const std::vector<uint8_t>& model_bytes,
                  const std::string& signature, const std::vector<OpProfileInput>& inputs,
                  int32_t num_threads, bool use_xnnpack, int runs, OpProfilePass* pass);

// The --op_profile JSON file: {"passes": [{label, delegate, runs, invoke_avg_us, ops: [...]}]}.
Status WriteOpProfile(const std::string& path, const std::vector<OpProfilePass>& passes);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_OP_PROFILER_H_
