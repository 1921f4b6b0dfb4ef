// The run loop, kept apart from reporting (benchmark_model's design):
//  * Runner::Run() is a template method: Init → PrepareInputs → warmup runs → measured runs.
//    Per run: BeforeRun (untimed) → Preprocess → RunImpl → Postprocess → AfterRun (untimed)
//    Only RunImpl (the Invoke) sits between the invoke timestamps.
//  * Listeners observe; they never change the run. Results are immutable once built.
#ifndef MOBDISTILL_ENGINE_RUNNER_H_
#define MOBDISTILL_ENGINE_RUNNER_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "device_sensors.h"
#include "stats.h"
#include "status.h"
#include "update_record.h"

namespace mobdistill {

enum class Phase { kWarmup, kMeasure };
const char* PhaseName(Phase phase);

struct FrameRecord {
  int64_t run = 0;          // 0-based over warmup + measured runs
  int64_t frame_index = 0;  // index into the frame source (cycled)
  Phase phase = Phase::kWarmup;
  double preprocess_us = 0, invoke_us = 0, postprocess_us = 0;
  int64_t model_version = 0;
  // Delta-distilled models: whether this frame ran the keyframe signature, and why.
  bool scheduled = false;  // false: not a delta-distilled model (no keyframe fields)
  bool keyframe = false;
  const char* keyframe_reason = "none";  // KeyframeReasonName()
  // --record_sensors with at least one readable source: read after Postprocess (untimed).
  bool has_sensors = false;
  double sensors_us = 0;  // cost of the read itself
  SensorSample sensors;
};

struct SwapRecord {
  int64_t applied_before_run = -1;  // -1: never applied (failed or still building at the end)
  int64_t version = 0;
  double build_ms = 0;
  std::string sha256;
  std::string error;
  // The builder's priority: "idle", "normal", or "raised" (started idle, raised to frame
  // priority after kRaiseIdleBuildAfterFrames frames).
  std::string build_priority;
};

// What --record_sensors found at start (the summary's "sensors" object).
struct SensorInfo {
  bool requested = false;
  std::string sysfs_root;
  std::vector<int> cpus;                // N of every cpuN with a readable scaling_cur_freq
  std::vector<std::string> zones;       // "thermal_zoneN" of every readable zone ...
  std::vector<std::string> zone_types;  // ... its `type` ...
  std::vector<std::string> zone_keys;   // ... and its key in the frame's "thermal_c"
  bool recorded() const { return !cpus.empty() || !zones.empty(); }
};

// Everything a report needs besides the frames; filled by the concrete runner.
struct RunInfo {
  std::string model_name;
  std::string graph_path;
  std::string runtime_version;
  std::string delegate_requested, delegate_used;
  std::vector<std::string> warnings;
  int32_t num_threads = 0, warmup_runs = 0, num_runs = 0;
  bool stateful = false;
  int queue_length = 0;
  int keyframe_interval = 0;             // delta-distilled models: T (0 otherwise) ...
  std::string keyframe_interval_source;  // ... from "manifest" or "--keyframe_interval"
  int64_t num_source_frames = 0;
  std::string input_source;  // frames file or "random"
  double runtime_load_ms = 0;  // dlopen + dlsym of the runtime (and delegate) library
  double model_load_ms = 0;  // read + sha256 + model/interpreter create + allocate
  double init_ms = 0;        // stateful: the `init` signature on the first frame (0 otherwise)
  SensorInfo sensors;        // filled by Runner::Run from SetSensors (not the concrete runner)
};

class Results {
 public:
  Results(RunInfo info, std::vector<FrameRecord> frames, std::vector<SwapRecord> swaps,
          UpdateLog updates = {});
  const RunInfo& info() const { return info_; }
  const std::vector<FrameRecord>& frames() const { return frames_; }
  const std::vector<SwapRecord>& swaps() const { return swaps_; }
  const UpdateLog& updates() const { return updates_; }
  const LatencyStats& invoke() const { return invoke_; }  // measured runs only
  const LatencyStats& preprocess() const { return preprocess_; }
  const LatencyStats& postprocess() const { return postprocess_; }
  double first_inference_us() const { return first_inference_us_; }
  double warmup_avg_us() const { return warmup_avg_us_; }
  int64_t final_model_version() const { return final_model_version_; }

 private:
  RunInfo info_;
  std::vector<FrameRecord> frames_;
  std::vector<SwapRecord> swaps_;
  UpdateLog updates_;
  LatencyStats invoke_, preprocess_, postprocess_;
  double first_inference_us_ = 0, warmup_avg_us_ = 0;
  int64_t final_model_version_ = 0;
};

class Listener {
 public:
  virtual ~Listener() = default;
  virtual void OnStart(const RunInfo&) {}
  virtual void OnFrame(const FrameRecord&) {}
  virtual void OnSwap(const SwapRecord&) {}
  virtual void OnUpdate(const UpdateRecord&) {}
  virtual void OnEnd(const Results&) {}
};

// One JSON object per line per frame, flushed per record: a crash or kill keeps every
// completed frame.
class JsonLinesReporter : public Listener {
 public:
  ~JsonLinesReporter() override;
  Status Open(const std::string& path);
  void OnFrame(const FrameRecord& r) override;
  void OnUpdate(const UpdateRecord& u) override;  // {"event":"update",...}, flushed at once

 private:
  std::FILE* file_ = nullptr;
};

// Human-readable report on stderr, like benchmark_model's log.
class LogReporter : public Listener {
 public:
  void OnStart(const RunInfo& info) override;
  void OnSwap(const SwapRecord& s) override;
  void OnUpdate(const UpdateRecord& u) override;
  void OnEnd(const Results& r) override;
};

// Writes the summary JSON at the end (atomically: temporary file, then rename).
class SummaryWriter : public Listener {
 public:
  explicit SummaryWriter(std::string path) : path_(std::move(path)) {}
  void OnEnd(const Results& r) override;
  const Status& status() const { return status_; }

 private:
  std::string path_;
  Status status_;
};

// The three timed stages of one frame. Runner::Run times them for the benchmark; frame-at-a-time
// callers (the app facade) time the same stages with RunTimedStages.
class FrameStages {
 public:
  virtual ~FrameStages() = default;
  virtual Status Preprocess() = 0;
  virtual Status RunImpl() = 0;  // the only code between the invoke timestamps
  virtual Status Postprocess() = 0;
};

// Preprocess, RunImpl, Postprocess, each timed into `record`.
Status RunTimedStages(FrameStages* stages, FrameRecord* record);

class Runner : public FrameStages {
 public:
  Runner(int32_t warmup_runs, int32_t num_runs, double run_delay_s)
      : warmup_runs_(warmup_runs), num_runs_(num_runs), run_delay_s_(run_delay_s) {}
  virtual ~Runner() = default;
  void AddListener(Listener* listener) { listeners_.push_back(listener); }
  // Sources discovered before Run (--record_sensors); sampled after every run's Postprocess,
  // outside the timed region. Null (the default): no sensor fields anywhere.
  void SetSensors(const DeviceSensors* sensors) { sensors_ = sensors; }
  Status Run();

 protected:
  virtual Status Init() = 0;
  virtual Status PrepareInputs() = 0;
  virtual Status BeforeRun(int64_t run, FrameRecord* record) = 0;  // untimed: swaps, I/O
  virtual Status AfterRun(int64_t run) = 0;  // untimed: dumps, swap triggers
  virtual RunInfo Info() const = 0;
  virtual std::vector<SwapRecord> Swaps() const { return {}; }
  virtual UpdateLog Updates() const { return {}; }
  // Called once after the last run (untimed): stop background work, report what is left.
  virtual Status Finish(int64_t /*runs*/) { return Status::Ok(); }
  void NotifySwap(const SwapRecord& s);
  void NotifyUpdate(const UpdateRecord& u);

 private:
  int32_t warmup_runs_, num_runs_;
  double run_delay_s_;
  std::vector<Listener*> listeners_;
  const DeviceSensors* sensors_ = nullptr;
  RunInfo WithSensors(RunInfo info) const;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_RUNNER_H_
