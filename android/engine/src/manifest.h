// The subset of the mobdistill manifest (docs/manifest.md, schema_version 1) the engine reads.
#ifndef MOBDISTILL_ENGINE_MANIFEST_H_
#define MOBDISTILL_ENGINE_MANIFEST_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "status.h"

namespace mobdistill {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;   // "float32"
  std::string layout;  // "NHWC" | "raw"
  std::string role;    // "frame" | "mask" | "logits" | "state" | "memory" | ...
  int64_t NumElements() const;
};

struct SignatureSpec {
  std::string name;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  const TensorSpec* Input(const std::string& n) const;
  const TensorSpec* Output(const std::string& n) const;
  const TensorSpec* InputWithRole(const std::string& role) const;
};

struct MemorySpec {
  int queue_length = 0;
  std::string init_signature;
  std::string step_signature;
  std::vector<std::pair<std::string, std::string>> carry;  // (output, input)
};

// The keyframe schedule of a delta-distilled model (docs/engine.md "Delta Distillation"): every
// period-th frame runs `keyframe_signature` (the original blocks), the others `delta_signature`;
// `carry` feeds each frame's state outputs to the next delta frame's inputs.
struct ScheduleSpec {
  int period = 0;  // T >= 1
  std::string keyframe_signature;
  std::string delta_signature;
  std::vector<std::pair<std::string, std::string>> carry;  // (output, input)
};

// One parameter_map entry: where a deployed float32 tensor's raw data sits in the .tflite file
// (the address space of sparse updates, docs/wire-format.md).
struct ParameterEntry {
  uint32_t tensor_index = 0;
  uint64_t buffer_offset = 0;
  uint64_t buffer_size = 0;  // bytes
  std::string dtype;         // "float32"
};

struct Manifest {
  static constexpr int kSchemaVersion = 1;
  std::string path;  // the manifest file; artifacts are relative to its folder
  std::string model_name;
  int height = 0, width = 0;
  std::string tflite_file;    // absolute or relative to the process cwd (resolved)
  std::string tflite_sha256;  // lowercase hex
  std::vector<SignatureSpec> signatures;
  double input_lo = 0.0, input_hi = 255.0;  // preprocessing.input_range
  std::string output_name = "logits";
  int num_classes = 0;
  bool has_memory = false;
  MemorySpec memory;
  bool has_schedule = false;  // a delta-distilled model
  ScheduleSpec schedule;
  std::vector<ParameterEntry> parameters;  // parameter_map.entries (empty if absent)

  const SignatureSpec* Signature(const std::string& name) const;
};

// Parses manifest text; `dir` resolves relative artifact paths.
Status ParseManifest(const std::string& text, const std::string& dir, Manifest* out);
Status LoadManifest(const std::string& path, Manifest* out);
Status ReadFileBytes(const std::string& path, std::vector<uint8_t>* out);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_MANIFEST_H_
