// Engine parameters: every default is declared once, here (benchmark_model's DefaultParams()
// idea, but typed fields instead of string keys, so a typo is a compile error).
#ifndef MOBDISTILL_ENGINE_PARAMS_H_
#define MOBDISTILL_ENGINE_PARAMS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace mobdistill {

struct Params {
  std::string manifest;        // --manifest (required)
  std::string graph;           // --graph: override the manifest's tflite file (same sha256 rule)
  std::string runtime_lib;     // --runtime_lib (required): library exporting the TFLite C API
  std::string delegate_lib;    // --delegate_lib: optional library with TfLiteGpuDelegateV2Create
  // benchmark_model defaults to -1 ("runtime decides"); we default to 1 so numbers are
  // reproducible across devices; -1 is accepted and passed through.
  int32_t num_threads = 1;
  int32_t warmup_runs = 1;
  int32_t num_runs = 50;
  double run_delay = 0.0;      // --run_delay seconds between runs (benchmark_model's flag)
  std::string frames;          // raw uint8 RGB HxWx3 frames, concatenated, cycled
  bool random_input = false;   // deterministic random frames (the default when --frames is absent)
  std::string init_mask;       // raw uint8 HxW label map for the stateful init (0 = background)
  // Delta-distilled models: the `keyframe` signature every N-th frame, `delta` between
  // (0: the manifest's schedule.period).
  int32_t keyframe_interval = 0;
  bool use_xnnpack = true;
  bool use_gpu = false;
  bool use_nnapi = false;
  std::string jsonl;           // --jsonl (required): one JSON line per frame
  std::string summary;         // --summary (required): one JSON object
  int32_t model_version = 0;
  std::string output_masks;    // uint8 argmax masks, HxW per run, concatenated
  std::string output_logits;   // float32 logits per run, concatenated (for tests)
  std::string swap_graph;      // hot-swap demo/test: model bytes to swap in ...
  int32_t swap_after_run = -1; // ... prepared after this run index finishes
  // Streamed sparse updates (docs/engine.md "Sparse updates"); any combination of sources.
  std::string update_dir;      // watched folder: complete *.mdup files, renamed when done
  std::string update_schedule; // JSONL {"frame": K, "packet": PATH}: visible when run K starts
  int32_t update_port = -1;    // TCP on 127.0.0.1 (0: any free port, printed on stderr); -1 off
  std::string update_key_file; // HMAC-SHA256 key (raw bytes); without it HMAC packets are refused
  bool update_blocking = false;  // run K waits for every packet received before it (replay)
  std::string update_state_file; // persisted last applied sequence (refuses replays after restart)
  std::string update_device_id;  // 32 hex digits: the 16-byte id packets must carry (wire v2)
  bool insecure_updates = false; // accept packets without an HMAC (explicit opt-out, warns)
  // "idle": the update worker decodes, patches and builds as SCHED_IDLE (frames preempt it);
  // "normal": at the frame thread's priority (the engine before issue 14, for comparisons).
  std::string update_build_priority = "idle";
  bool updates_enabled() const {
    return !update_dir.empty() || !update_schedule.empty() || update_port >= 0;
  }
  // Per-frame CPU frequencies and thermal-zone temperatures from sysfs (device_sensors.h),
  // read outside the timed region. On by default on Android, off on hosts.
#ifdef __ANDROID__
  bool record_sensors = true;
#else
  bool record_sensors = false;
#endif
  std::string sysfs_root = "/sys";  // --sysfs_root: tests point it at a fake tree
  // benchmark_model's flag: per-operator times (op_profiler.h), a pass after the measured runs.
  bool enable_op_profiling = false;
  std::string op_profile;      // --op_profile: where the per-operator JSON goes (required by it)
  bool help = false;

  Status Validate() const;
};

// Parses --flag=value / --flag value. Unknown flags are errors naming the flag.
Status ParseFlags(int argc, const char* const* argv, Params* params);
std::string Usage();

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_PARAMS_H_
