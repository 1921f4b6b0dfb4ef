#include <string>

#include "check.h"
#include "manifest.h"

using mobdistill::Manifest;
using mobdistill::ParseManifest;

static const char* kStateless = R"({
  "schema": "mobdistill.manifest", "schema_version": 1,
  "model": {"name": "tiny", "resolution": [16, 24]},
  "artifacts": [{"format": "onnx", "file": "m.onnx", "sha256": "00"},
                {"format": "tflite", "file": "m.tflite", "sha256": "abc"}],
  "signatures": [{"name": "serving_default",
    "inputs": [{"name": "frame", "shape": [1,16,24,3], "dtype": "float32", "role": "frame"}],
    "outputs": [{"name": "logits", "shape": [1,16,24,2], "dtype": "float32", "role": "logits"}]}],
  "preprocessing": {"channel_order": "RGB", "input_range": [0, 1]},
  "output": {"name": "logits", "num_classes": 2},
  "memory": null
})";

static std::string Replace(std::string s, const std::string& from, const std::string& to) {
  s.replace(s.find(from), from.size(), to);
  return s;
}

int main() {
  Manifest m;
  CHECK(ParseManifest(kStateless, "/models", &m).ok());
  CHECK_EQ(m.tflite_file, "/models/m.tflite");
  CHECK_EQ(m.tflite_sha256, "abc");
  CHECK_EQ(m.height, 16);
  CHECK_EQ(m.input_hi, 1.0);
  CHECK(!m.has_memory);

  CHECK_CONTAINS(ParseManifest(Replace(kStateless, "\"schema_version\": 1",
                                       "\"schema_version\": 2"), "", &m).message(),
                 "schema_version 2");
  CHECK_CONTAINS(ParseManifest("{not json", "", &m).message(), "not valid JSON");
  CHECK_CONTAINS(ParseManifest(Replace(kStateless, "serving_default", "main"), "", &m).message(),
                 "serving_default");
  CHECK_CONTAINS(ParseManifest(Replace(kStateless, "\"resolution\": [16, 24]", "\"resolution\": 3"),
                               "", &m).message(), "model.resolution");

  std::string stateful = R"({
  "schema": "mobdistill.manifest", "schema_version": 1,
  "model": {"name": "vos", "resolution": [8, 8]},
  "artifacts": [{"format": "tflite", "file": "v.tflite", "sha256": "ff"}],
  "signatures": [
    {"name": "init", "inputs": [{"name": "frame", "shape": [1,8,8,3], "dtype": "float32", "role": "frame"},
                                {"name": "mask", "shape": [1,8,8,1], "dtype": "float32", "role": "mask"}],
     "outputs": [{"name": "key", "shape": [1,2,2,4], "dtype": "float32"},
                 {"name": "value", "shape": [1,1,2,2,4], "dtype": "float32"}]},
    {"name": "step", "inputs": [{"name": "frame", "shape": [1,8,8,3], "dtype": "float32", "role": "frame"},
                                {"name": "memory_keys", "shape": [3,2,2,4], "dtype": "float32"},
                                {"name": "memory_values", "shape": [3,1,2,2,4], "dtype": "float32"}],
     "outputs": [{"name": "logits", "shape": [1,8,8,2], "dtype": "float32"},
                 {"name": "key", "shape": [1,2,2,4], "dtype": "float32"},
                 {"name": "value", "shape": [1,1,2,2,4], "dtype": "float32"}]}],
  "memory": {"kind": "memory_queue", "queue_length": 3, "policy": "first_frame_plus_fifo",
             "pad": "repeat_oldest", "init_signature": "init", "step_signature": "step",
             "carry": [{"output": "key", "input": "memory_keys"},
                       {"output": "value", "input": "memory_values"}]}
})";
  CHECK(ParseManifest(stateful, "", &m).ok());
  CHECK(m.has_memory);
  CHECK_EQ(m.memory.queue_length, 3);
  CHECK_EQ(m.memory.carry.size(), 2u);
  CHECK_CONTAINS(ParseManifest(Replace(stateful, "\"queue_length\": 3", "\"queue_length\": 2"),
                               "", &m).message(), "queue_length");
  CHECK_CONTAINS(ParseManifest(Replace(stateful, "\"dtype\": \"float32\", \"role\": \"mask\"",
                                       "\"dtype\": \"uint8\", \"role\": \"mask\""), "", &m).message(),
                 "float32");

  // Delta Distillation: keyframe + delta signatures, state carried from either to the next delta.
  const std::string delta = R"({
  "schema": "mobdistill.manifest", "schema_version": 1,
  "model": {"name": "dd", "resolution": [8, 8]},
  "artifacts": [{"format": "tflite", "file": "d.tflite", "sha256": "ee"}],
  "signatures": [
    {"name": "keyframe", "inputs": [{"name": "frame", "shape": [1,8,8,3], "dtype": "float32", "role": "frame"}],
     "outputs": [{"name": "logits", "shape": [1,8,8,2], "dtype": "float32"},
                 {"name": "z_out", "shape": [1,4,4,6], "dtype": "float32"}]},
    {"name": "delta", "inputs": [{"name": "frame", "shape": [1,8,8,3], "dtype": "float32", "role": "frame"},
                                 {"name": "z_prev", "shape": [1,4,4,6], "dtype": "float32", "role": "state"}],
     "outputs": [{"name": "logits", "shape": [1,8,8,2], "dtype": "float32"},
                 {"name": "z_out", "shape": [1,4,4,6], "dtype": "float32"}]}],
  "memory": null,
  "schedule": {"kind": "keyframe_delta", "version": 1, "period": 4, "keyframe_signature": "keyframe",
               "delta_signature": "delta", "carry": [{"output": "z_out", "input": "z_prev"}]}
})";
  CHECK(ParseManifest(delta, "", &m).ok());
  CHECK(m.has_schedule && !m.has_memory);
  CHECK_EQ(m.schedule.period, 4);
  CHECK_EQ(m.schedule.delta_signature, "delta");
  CHECK_EQ(m.schedule.carry.size(), 1u);
  CHECK_CONTAINS(ParseManifest(Replace(delta, "\"period\": 4", "\"period\": 0"), "", &m).message(),
                 "period must be >= 1");
  CHECK_CONTAINS(ParseManifest(Replace(delta, "\"input\": \"z_prev\"", "\"input\": \"z\""), "",
                               &m).message(), "does not name outputs");
  CHECK_CONTAINS(ParseManifest(Replace(delta, "\"shape\": [1,4,4,6], \"dtype\": \"float32\", \"role\": \"state\"",
                                       "\"shape\": [1,4,4,5], \"dtype\": \"float32\", \"role\": \"state\""),
                               "", &m).message(), "differ in size");
  CHECK_CONTAINS(ParseManifest(Replace(delta, "\"delta_signature\": \"delta\"",
                                       "\"delta_signature\": \"step\""), "", &m).message(),
                 "not listed");
  CHECK_CONTAINS(ParseManifest(Replace(delta, "\"version\": 1, \"period\"",
                                       "\"version\": 2, \"period\""), "", &m).message(),
                 "not supported");
  // A delta input nothing feeds would run on whatever the tensor holds.
  CHECK_CONTAINS(ParseManifest(Replace(delta, "\"role\": \"state\"}]",
                                       "\"role\": \"state\"}, {\"name\": \"extra\", "
                                       "\"shape\": [1], \"dtype\": \"float32\"}]"),
                               "", &m).message(), "extra is neither the frame nor carried");
  return TEST_MAIN_RETURN();
}
