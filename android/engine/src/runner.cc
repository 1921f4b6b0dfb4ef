#include "runner.h"

#include <sys/resource.h>
#include <sys/utsname.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <nlohmann/json.hpp>
#include <thread>

#ifndef MOBDISTILL_ENGINE_VERSION
#define MOBDISTILL_ENGINE_VERSION "0.0.0"
#endif

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

nlohmann::json StatsJson(const LatencyStats& s) {
  return {{"count", s.count}, {"min_us", s.min_us},   {"p50_us", s.p50_us},
          {"p90_us", s.p90_us}, {"p99_us", s.p99_us}, {"max_us", s.max_us},
          {"mean_us", s.mean_us}, {"std_us", s.std_us}};
}

nlohmann::json HostJson() {
  nlohmann::json host;
  struct utsname u;
  if (uname(&u) == 0) {
    host = {{"sysname", u.sysname}, {"release", u.release}, {"machine", u.machine},
            {"nodename", u.nodename}};
  }
  host["cpu_count"] = std::thread::hardware_concurrency();
  return host;
}

// Peak resident memory of this process image. VmHWM (kB, Linux and Android) belongs to the
// current address space; ru_maxrss also survives fork+exec, so an engine started from a large
// parent (a Python driver holding torch) would report the parent's peak as its own.
double PeakRssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0.0;
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux and Android
}

// Counts over every record of the run; stage times over the applied ones among the last
// UpdateLog::kKept records (`stats_over_last`).
nlohmann::json UpdatesJson(const UpdateLog& updates) {
  std::vector<double> decode, patch, build, warm, total, delay;
  nlohmann::json reasons = nlohmann::json::object();
  for (const auto& reason : updates.rejected_by_reason()) reasons[reason.first] = reason.second;
  for (const UpdateRecord& u : updates.recent()) {
    if (!u.applied) continue;
    decode.push_back(u.decode_us);
    patch.push_back(u.patch_us);
    build.push_back(u.build_us);
    warm.push_back(u.warm_us);
    total.push_back(u.decode_us + u.patch_us + u.build_us + u.warm_us);
    delay.push_back(double(u.swapped_frame - u.received_frame));
  }
  const LatencyStats d = ComputeStats(delay);
  return {{"received", updates.received()},
          {"applied", updates.applied()},
          {"rejected", updates.rejected()},
          {"rejected_by_reason", reasons},
          {"stats_over_last", updates.recent().size()},
          {"decode", StatsJson(ComputeStats(decode))},
          {"patch", StatsJson(ComputeStats(patch))},
          {"build", StatsJson(ComputeStats(build))},
          {"warm", StatsJson(ComputeStats(warm))},
          {"apply_total", StatsJson(ComputeStats(total))},
          {"frames_to_swap", {{"min", d.min_us}, {"p50", d.p50_us}, {"max", d.max_us},
                              {"mean", d.mean_us}}}};
}

// `,"sensors_us":…,"cpu_freq_khz":[…],"thermal_c":{…}` for a frame record (null: no reading).
std::string SensorFields(const FrameRecord& r) {
  nlohmann::json cpus = nlohmann::json::array();
  for (int64_t khz : r.sensors.cpu_freq_khz) {
    cpus.push_back(khz < 0 ? nlohmann::json(nullptr) : nlohmann::json(khz));
  }
  nlohmann::ordered_json zones = nlohmann::ordered_json::object();
  for (const auto& z : r.sensors.thermal_c) zones[z.first] = z.second;
  char us[48];
  std::snprintf(us, sizeof(us), ",\"sensors_us\":%.3f", r.sensors_us);
  const auto replace = nlohmann::json::error_handler_t::replace;
  return std::string(us) + ",\"cpu_freq_khz\":" + cpus.dump() +
         ",\"thermal_c\":" + zones.dump(-1, ' ', false, replace);
}

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

// p99 / median over the measured frames: how much slower the slow frames a camera app feels are
// than the typical one (a delta-distilled model's keyframes dominate the p99).
nlohmann::json ImbalanceJson(const Results& r) {
  std::vector<double> frame;
  for (const FrameRecord& f : r.frames()) {
    if (f.phase != Phase::kMeasure) continue;
    frame.push_back(f.preprocess_us + f.invoke_us + f.postprocess_us);
  }
  const LatencyStats total = ComputeStats(frame);
  return {{"invoke_p99_over_p50", Ratio(r.invoke().p99_us, r.invoke().p50_us)},
          {"frame_p99_over_p50", Ratio(total.p99_us, total.p50_us)}};
}

// Delta-distilled models: measured keyframes and delta frames apart (invoke alone, and the
// whole frame: preprocess + invoke + postprocess, the carried state's copies included).
nlohmann::json DeltaJson(const Results& r) {
  const RunInfo& i = r.info();
  if (i.keyframe_interval == 0) return nullptr;
  std::vector<double> key_invoke, delta_invoke, key_frame, delta_frame;
  int64_t forced = 0;
  for (const FrameRecord& f : r.frames()) {
    if (f.phase != Phase::kMeasure) continue;
    const double total = f.preprocess_us + f.invoke_us + f.postprocess_us;
    (f.keyframe ? key_invoke : delta_invoke).push_back(f.invoke_us);
    (f.keyframe ? key_frame : delta_frame).push_back(total);
    if (f.keyframe && std::string(f.keyframe_reason) != "interval") ++forced;
  }
  const LatencyStats key = ComputeStats(key_invoke), delta = ComputeStats(delta_invoke);
  return {{"keyframe_interval", i.keyframe_interval},
          {"keyframe_interval_source", i.keyframe_interval_source},
          {"keyframes", key_invoke.size()},
          {"delta_frames", delta_invoke.size()},
          {"forced_keyframes", forced},
          {"keyframe_invoke", StatsJson(key)},
          {"delta_invoke", StatsJson(delta)},
          {"keyframe_frame", StatsJson(ComputeStats(key_frame))},
          {"delta_frame", StatsJson(ComputeStats(delta_frame))},
          {"keyframe_over_delta_p50", Ratio(key.p50_us, delta.p50_us)}};
}

nlohmann::json SensorsJson(const Results& r) {
  const SensorInfo& s = r.info().sensors;
  nlohmann::json zones = nlohmann::json::array();
  for (size_t k = 0; k < s.zones.size(); ++k) {
    zones.push_back({{"zone", s.zones[k]}, {"type", s.zone_types[k]}, {"key", s.zone_keys[k]}});
  }
  std::vector<double> cost;
  for (const FrameRecord& f : r.frames()) {
    if (f.has_sensors) cost.push_back(f.sensors_us);
  }
  return {{"requested", s.requested},
          {"recorded", s.recorded()},
          {"sysfs_root", s.requested ? nlohmann::json(s.sysfs_root) : nlohmann::json(nullptr)},
          {"cpus", s.cpus},
          {"thermal_zones", zones},
          {"read", StatsJson(ComputeStats(cost))}};
}

}  // namespace

const char* PhaseName(Phase phase) { return phase == Phase::kWarmup ? "warmup" : "measure"; }

Results::Results(RunInfo info, std::vector<FrameRecord> frames, std::vector<SwapRecord> swaps,
                 UpdateLog updates)
    : info_(std::move(info)),
      frames_(std::move(frames)),
      swaps_(std::move(swaps)),
      updates_(std::move(updates)) {
  std::vector<double> inv, pre, post, warm;
  for (const FrameRecord& f : frames_) {
    if (f.phase == Phase::kMeasure) {
      inv.push_back(f.invoke_us);
      pre.push_back(f.preprocess_us);
      post.push_back(f.postprocess_us);
    } else {
      warm.push_back(f.invoke_us);
    }
    final_model_version_ = f.model_version;
  }
  invoke_ = ComputeStats(inv);
  preprocess_ = ComputeStats(pre);
  postprocess_ = ComputeStats(post);
  if (!frames_.empty()) first_inference_us_ = frames_.front().invoke_us;
  warmup_avg_us_ = ComputeStats(warm).mean_us;
}

Status RunTimedStages(FrameStages* stages, FrameRecord* record) {
  const auto t0 = Clock::now();
  MD_RETURN_IF_ERROR(stages->Preprocess());
  const auto t1 = Clock::now();
  MD_RETURN_IF_ERROR(stages->RunImpl());
  const auto t2 = Clock::now();
  MD_RETURN_IF_ERROR(stages->Postprocess());
  const auto t3 = Clock::now();
  record->preprocess_us = Us(t0, t1);
  record->invoke_us = Us(t1, t2);
  record->postprocess_us = Us(t2, t3);
  return Status::Ok();
}

Status Runner::Run() {
  MD_RETURN_IF_ERROR(Init());
  MD_RETURN_IF_ERROR(PrepareInputs());
  const RunInfo start_info = WithSensors(Info());
  const bool sample = sensors_ != nullptr && sensors_->any();
  for (Listener* l : listeners_) l->OnStart(start_info);
  std::vector<FrameRecord> frames;
  const int64_t total = int64_t(warmup_runs_) + num_runs_;
  frames.reserve(static_cast<size_t>(total));
  for (int64_t run = 0; run < total; ++run) {
    FrameRecord rec;
    rec.run = run;
    rec.phase = run < warmup_runs_ ? Phase::kWarmup : Phase::kMeasure;
    MD_RETURN_IF_ERROR(BeforeRun(run, &rec));
    MD_RETURN_IF_ERROR(RunTimedStages(this, &rec));
    if (sample) {  // after the timestamps: never inside a timed stage
      const auto started = Clock::now();
      sensors_->Sample(&rec.sensors);
      rec.has_sensors = true;
      rec.sensors_us = Us(started, Clock::now());
    }
    for (Listener* l : listeners_) l->OnFrame(rec);
    frames.push_back(rec);
    MD_RETURN_IF_ERROR(AfterRun(run));
    if (run_delay_s_ > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(run_delay_s_));
    }
  }
  MD_RETURN_IF_ERROR(Finish(total));
  const Results results(WithSensors(Info()), std::move(frames), Swaps(), Updates());
  for (Listener* l : listeners_) l->OnEnd(results);
  return Status::Ok();
}

RunInfo Runner::WithSensors(RunInfo info) const {
  if (sensors_ == nullptr) return info;
  SensorInfo& s = info.sensors;
  s = SensorInfo();
  s.requested = true;
  s.sysfs_root = sensors_->root();
  for (const DeviceSensors::Cpu& c : sensors_->cpus()) s.cpus.push_back(c.index);
  for (const DeviceSensors::Zone& z : sensors_->zones()) {
    s.zones.push_back("thermal_zone" + std::to_string(z.index));
    s.zone_types.push_back(z.type);
    s.zone_keys.push_back(z.key);
  }
  return info;
}

void Runner::NotifySwap(const SwapRecord& s) {
  for (Listener* l : listeners_) l->OnSwap(s);
}

void Runner::NotifyUpdate(const UpdateRecord& u) {
  for (Listener* l : listeners_) l->OnUpdate(u);
}

std::string UpdateRecord::ToJson() const {
  auto us = [](double v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
  auto frame = [](int64_t v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
  nlohmann::json j = nlohmann::json::object();
  j["event"] = "update";
  j["source"] = source;
  j["name"] = name;
  j["sequence"] = has_sequence ? nlohmann::json(sequence) : nlohmann::json(nullptr);
  j["mode"] = mode.empty() ? nlohmann::json(nullptr) : nlohmann::json(mode);
  j["status"] = applied ? "applied" : "rejected";
  j["reason"] = applied ? nlohmann::json(nullptr) : nlohmann::json(reason);
  j["message"] = message;
  j["received_frame"] = frame(received_frame);
  j["swapped_frame"] = frame(swapped_frame);
  j["decode_us"] = us(decode_us);
  j["patch_us"] = us(patch_us);
  j["build_us"] = us(build_us);
  j["warm_us"] = us(warm_us);
  j["build_priority"] = build_priority.empty() ? nlohmann::json(nullptr)
                                               : nlohmann::json(build_priority);
  j["build_threads"] = build_priority.empty() ? nlohmann::json(nullptr)
                                              : nlohmann::json(build_threads);
  j["pacing"] = pacing.empty() ? nlohmann::json(nullptr) : nlohmann::json(pacing);
  j["work_cpu_us"] = us(work_cpu_us);
  j["frame_gap_us"] = us(frame_gap_us);
  j["packet_bytes"] = packet_bytes;
  j["values"] = num_values;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

JsonLinesReporter::~JsonLinesReporter() {
  if (file_) std::fclose(file_);
}

Status JsonLinesReporter::Open(const std::string& path) {
  file_ = std::fopen(path.c_str(), "w");
  if (!file_) return Status::Error("cannot write --jsonl " + path);
  return Status::Ok();
}

void JsonLinesReporter::OnFrame(const FrameRecord& r) {
  if (!file_) return;
  std::string schedule;
  if (r.scheduled) {
    schedule = std::string(",\"keyframe\":") + (r.keyframe ? "true" : "false") +
               ",\"keyframe_reason\":" +
               (r.keyframe ? "\"" + std::string(r.keyframe_reason) + "\"" : "null");
  }
  std::fprintf(file_,
               "{\"run\":%lld,\"frame\":%lld,\"phase\":\"%s\",\"preprocess_us\":%.3f,"
               "\"invoke_us\":%.3f,\"postprocess_us\":%.3f,\"model_version\":%lld%s%s}\n",
               static_cast<long long>(r.run), static_cast<long long>(r.frame_index),
               PhaseName(r.phase), r.preprocess_us, r.invoke_us, r.postprocess_us,
               static_cast<long long>(r.model_version), schedule.c_str(),
               r.has_sensors ? SensorFields(r).c_str() : "");
  std::fflush(file_);
}

void JsonLinesReporter::OnUpdate(const UpdateRecord& u) {
  if (!file_) return;
  std::fprintf(file_, "%s\n", u.ToJson().c_str());
  std::fflush(file_);
}

void LogReporter::OnStart(const RunInfo& i) {
  std::fprintf(stderr,
               "mobdistill-engine: model %s (%s), runtime %s, threads %d, delegate %s (requested "
               "%s), %s, warmup %d, runs %d\n",
               i.model_name.c_str(), i.graph_path.c_str(), i.runtime_version.c_str(),
               i.num_threads, i.delegate_used.c_str(), i.delegate_requested.c_str(),
               i.stateful ? ("stateful Q=" + std::to_string(i.queue_length)).c_str()
                          : "stateless",
               i.warmup_runs, i.num_runs);
  if (i.sensors.requested) {
    std::fprintf(stderr, "sensors: %zu CPU frequencies, %zu thermal zones readable under %s%s\n",
                 i.sensors.cpus.size(), i.sensors.zones.size(), i.sensors.sysfs_root.c_str(),
                 i.sensors.recorded() ? "" : " (frame records carry no sensor fields)");
  }
  if (i.keyframe_interval > 0) {
    std::fprintf(stderr, "delta-distilled: keyframe every %d frames (%s), delta frames between\n",
                 i.keyframe_interval, i.keyframe_interval_source.c_str());
  }
  for (const std::string& w : i.warnings) std::fprintf(stderr, "WARNING: %s\n", w.c_str());
}

void LogReporter::OnSwap(const SwapRecord& s) {
  if (s.error.empty()) {
    std::fprintf(stderr, "swap: model_version %lld active before run %lld (built in %.2f ms)\n",
                 static_cast<long long>(s.version), static_cast<long long>(s.applied_before_run),
                 s.build_ms);
  } else {
    std::fprintf(stderr, "WARNING: swap to model_version %lld failed: %s\n",
                 static_cast<long long>(s.version), s.error.c_str());
  }
}

void LogReporter::OnUpdate(const UpdateRecord& u) {
  if (u.applied) {
    std::fprintf(stderr, "update %s: sequence %llu applied before run %lld (decode %.0f us, "
                 "patch %.0f us, build %.0f us, warm %.0f us)\n", u.name.c_str(),
                 static_cast<unsigned long long>(u.sequence),
                 static_cast<long long>(u.swapped_frame), u.decode_us, u.patch_us, u.build_us,
                 u.warm_us);
  } else {
    std::fprintf(stderr, "update %s rejected (%s): %s\n", u.name.c_str(), u.reason.c_str(),
                 u.message.c_str());
  }
}

void LogReporter::OnEnd(const Results& r) {
  const RunInfo& i = r.info();
  const LatencyStats& s = r.invoke();
  std::fprintf(stderr,
               "Init: model load %.3f ms, init signature %.3f ms\n"
               "First inference: %.1f us, warmup avg %.1f us\n"
               "Inference (us): count=%zu min=%.1f p50=%.1f p90=%.1f p99=%.1f max=%.1f "
               "avg=%.1f std=%.1f\n",
               i.model_load_ms, i.init_ms, r.first_inference_us(), r.warmup_avg_us(), s.count,
               s.min_us, s.p50_us, s.p90_us, s.p99_us, s.max_us, s.mean_us, s.std_us);
  const nlohmann::json delta = DeltaJson(r);
  if (delta.is_null()) return;
  for (const char* kind : {"keyframe", "delta"}) {
    const nlohmann::json& k = delta[std::string(kind) + "_invoke"];
    std::fprintf(stderr, "  %s frames (us): count=%d p50=%.1f p99=%.1f avg=%.1f\n", kind,
                 k["count"].get<int>(), k["p50_us"].get<double>(), k["p99_us"].get<double>(),
                 k["mean_us"].get<double>());
  }
  std::fprintf(stderr, "  imbalance p99/p50: invoke %.2f\n",
               Ratio(s.p99_us, s.p50_us));
}

void SummaryWriter::OnEnd(const Results& r) {
  const RunInfo& i = r.info();
  nlohmann::json swaps = nlohmann::json::array();
  for (const SwapRecord& s : r.swaps()) {
    swaps.push_back({{"version", s.version},
                     {"applied_before_run", s.applied_before_run},
                     {"build_ms", s.build_ms},
                     {"sha256", s.sha256},
                     {"error", s.error},
                     {"build_priority", s.build_priority}});
  }
  int64_t warm = 0, meas = 0;
  for (const FrameRecord& f : r.frames()) (f.phase == Phase::kWarmup ? warm : meas)++;
  nlohmann::json j = {
      {"ok", true},
      {"engine_version", MOBDISTILL_ENGINE_VERSION},
      {"runtime_version", i.runtime_version},
      {"model", i.model_name},
      {"graph", i.graph_path},
      {"stateful", i.stateful},
      {"queue_length", i.queue_length},
      {"num_threads", i.num_threads},
      {"warmup_runs", i.warmup_runs},
      {"num_runs", i.num_runs},
      {"frames", {{"warmup", warm}, {"measure", meas}, {"source_frames", i.num_source_frames}}},
      {"input_source", i.input_source},
      {"delegate_requested", i.delegate_requested},
      {"delegate_used", i.delegate_used},
      {"warnings", i.warnings},
      {"runtime_load_ms", i.runtime_load_ms},
      {"model_load_ms", i.model_load_ms},
      {"init_ms", i.init_ms},
      {"first_inference_us", r.first_inference_us()},
      {"warmup_avg_us", r.warmup_avg_us()},
      {"invoke", StatsJson(r.invoke())},
      {"preprocess", StatsJson(r.preprocess())},
      {"postprocess", StatsJson(r.postprocess())},
      {"imbalance", ImbalanceJson(r)},
      {"delta", DeltaJson(r)},
      {"model_version", r.final_model_version()},
      {"swaps", swaps},
      {"updates", UpdatesJson(r.updates())},
      {"sensors", SensorsJson(r)},
      {"peak_rss_mb", PeakRssMb()},
      {"host", HostJson()},
  };
  const std::string tmp = path_ + ".part";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) {
      status_ = Status::Error("cannot write --summary " + path_);
      return;
    }
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    status_ = Status::Error("cannot write --summary " + path_);
  }
}

}  // namespace mobdistill
