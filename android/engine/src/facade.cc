// engine_facade.h (the C API the JNI bridge calls) over AppSegmenter. Plain C at the
// boundary: no exception crosses it, every error is a return code plus the Status text.
#include "mobdistill_engine/engine_facade.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli.h"
#include "params.h"
#include "app_segmenter.h"
#include "image_convert.h"
#include "stats.h"

struct MdEngine {
  std::unique_ptr<mobdistill::AppSegmenter> segmenter;
  MdModelInfo info{};
  std::string delegate_used;
  std::mutex stats_mu;
  std::deque<double> invoke_us, preprocess_us;  // the last kWindow frames
  std::deque<bool> keyframe;  // delta-distilled models: of the same frames
  int64_t frames = 0;
  static constexpr size_t kWindow = 1000;
};

namespace {

void SetText(char* out, size_t size, const std::string& text) {
  if (out != nullptr && size > 0) std::snprintf(out, size, "%s", text.c_str());
}

nlohmann::json StatsJson(const std::deque<double>& window) {
  const mobdistill::LatencyStats st =
      mobdistill::ComputeStats(std::vector<double>(window.begin(), window.end()));
  return {{"count", st.count},   {"min_us", st.min_us}, {"p50_us", st.p50_us},
          {"p90_us", st.p90_us}, {"p99_us", st.p99_us}, {"max_us", st.max_us},
          {"mean_us", st.mean_us}};
}

void Record(MdEngine* engine, const mobdistill::FrameRecord& record) {
  std::lock_guard<std::mutex> lock(engine->stats_mu);
  engine->invoke_us.push_back(record.invoke_us);
  engine->preprocess_us.push_back(record.preprocess_us);
  engine->keyframe.push_back(record.keyframe);
  if (engine->invoke_us.size() > MdEngine::kWindow) {
    engine->invoke_us.pop_front();
    engine->preprocess_us.pop_front();
    engine->keyframe.pop_front();
  }
  ++engine->frames;
}

// Delta-distilled models: keyframes and delta frames of the window apart, and p99 / median of
// all of them (the slow frames a camera app feels against the typical one).
nlohmann::json ScheduleJson(const MdEngine& engine, int32_t interval) {
  if (interval == 0) return nullptr;
  std::deque<double> key, delta;
  for (size_t i = 0; i < engine.invoke_us.size(); ++i) {
    (engine.keyframe[i] ? key : delta).push_back(engine.invoke_us[i]);
  }
  const mobdistill::LatencyStats all = mobdistill::ComputeStats(
      std::vector<double>(engine.invoke_us.begin(), engine.invoke_us.end()));
  return {{"keyframe_interval", interval},
          {"keyframe_invoke", StatsJson(key)},
          {"delta_invoke", StatsJson(delta)},
          {"invoke_p99_over_p50", all.p50_us > 0 ? all.p99_us / all.p50_us : 0.0}};
}

int64_t RoundUs(double us) { return static_cast<int64_t>(us + 0.5); }

// The C struct as the engine's; the converter checks every field against the plane sizes.
mobdistill::CameraImage ToCameraImage(const MdCameraImage& in) {
  mobdistill::CameraImage out;
  out.format = static_cast<mobdistill::PixelFormat>(in.format);
  out.width = in.width;
  out.height = in.height;
  out.rotation_degrees = in.rotation_degrees;
  for (int p = 0; p < 3; ++p) {
    out.planes[p] = {in.planes[p].data, in.planes[p].size, in.planes[p].row_stride,
                     in.planes[p].pixel_stride};
  }
  return out;
}

bool IsFile(const char* path) {
  struct stat st;
  return path != nullptr && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

extern "C" {

int32_t md_engine_create(const MdEngineOptions* options, MdEngine** out, char* error,
                         size_t error_size) {
  if (options == nullptr || out == nullptr) {
    SetText(error, error_size, "md_engine_create needs options and an output pointer");
    return 1;
  }
  *out = nullptr;
  if (!IsFile(options->manifest)) {
    SetText(error, error_size, std::string("cannot read manifest ") +
                                   (options->manifest ? options->manifest : "(null)") +
                                   ": pass the <name>.manifest.json written by `mobdistill "
                                   "export`, copied next to its .tflite");
    return 1;
  }
  mobdistill::Params params;
  params.manifest = options->manifest;
  params.runtime_lib = options->runtime_lib ? options->runtime_lib : "";
  params.delegate_lib = options->delegate_lib ? options->delegate_lib : "";
  params.num_threads = options->num_threads > 0 ? options->num_threads : 1;
  const std::string delegate = options->delegate ? options->delegate : "xnnpack";
  params.use_xnnpack = delegate == "xnnpack";
  params.use_gpu = delegate == "gpu";
  params.use_nnapi = delegate == "nnapi";
  if (delegate != "cpu" && delegate != "xnnpack" && delegate != "gpu" && delegate != "nnapi") {
    SetText(error, error_size, "unknown delegate '" + delegate + "': use cpu, xnnpack, gpu or nnapi");
    return 1;
  }
  if (params.runtime_lib.empty()) {
    SetText(error, error_size, "runtime_lib is required (liblitert-lm.so, the TFLite C API)");
    return 1;
  }
  std::unique_ptr<MdEngine> engine(new MdEngine());
  engine->segmenter.reset(new mobdistill::AppSegmenter());
  mobdistill::UpdateSecurity security;
  if (options->update_key != nullptr && options->update_key_size > 0) {
    security.hmac_key.assign(options->update_key, options->update_key + options->update_key_size);
  }
  if (options->update_device_id != nullptr) {
    std::memcpy(security.device_id.data(), options->update_device_id, security.device_id.size());
  }
  security.insecure = options->insecure_updates != 0;
  if (options->update_state_file != nullptr) security.state_file = options->update_state_file;
  const std::string priority =
      options->update_build_priority ? options->update_build_priority : "idle";
  if (priority != "idle" && priority != "normal") {
    SetText(error, error_size, "update_build_priority must be idle or normal, not '" + priority +
                                   "'");
    return 1;
  }
  security.build_in_background = priority == "idle";
  mobdistill::Status s = engine->segmenter->Open(params, std::move(security));
  if (!s.ok()) {
    SetText(error, error_size, s.message());
    return 1;
  }
  const mobdistill::Manifest& m = engine->segmenter->manifest();
  engine->info = MdModelInfo{m.height, m.width, m.num_classes,
                             m.has_memory ? m.memory.queue_length : 0};
  engine->delegate_used = engine->segmenter->delegate_used();
  *out = engine.release();
  return 0;
}

void md_engine_destroy(MdEngine* engine) { delete engine; }

int32_t md_engine_info(const MdEngine* engine, MdModelInfo* info) {
  if (engine == nullptr || info == nullptr) return 1;
  *info = engine->info;
  return 0;
}

const char* md_engine_delegate_used(const MdEngine* engine) {
  return engine == nullptr ? nullptr : engine->delegate_used.c_str();
}

void md_engine_reset(MdEngine* engine) {
  if (engine != nullptr) engine->segmenter->ResetVideo();
}

int32_t md_engine_keyframe_interval(MdEngine* engine) {
  return engine == nullptr ? 0 : engine->segmenter->keyframe_interval();
}

int32_t md_engine_set_keyframe_interval(MdEngine* engine, int32_t interval, char* error,
                                        size_t error_size) {
  if (engine == nullptr) {
    SetText(error, error_size, "the engine is closed");
    return 1;
  }
  const mobdistill::Status s = engine->segmenter->SetKeyframeInterval(interval);
  if (!s.ok()) SetText(error, error_size, s.message());
  return s.ok() ? 0 : 1;
}

int32_t md_engine_last_frame_keyframe(MdEngine* engine) {
  return engine == nullptr ? -1 : engine->segmenter->last_frame_keyframe();
}

int32_t md_engine_segment(MdEngine* engine, const uint8_t* rgb, int32_t row_stride,
                          uint8_t* mask, int64_t* invoke_us, char* error, size_t error_size) {
  if (engine == nullptr) {
    SetText(error, error_size, "the engine is closed");
    return 1;
  }
  mobdistill::FrameRecord record;
  mobdistill::Status s = engine->segmenter->ProcessFrame(rgb, row_stride, mask, &record);
  if (!s.ok()) {
    SetText(error, error_size, s.message());
    return 1;
  }
  if (invoke_us != nullptr) *invoke_us = RoundUs(record.invoke_us);
  Record(engine, record);
  return 0;
}

int32_t md_engine_segment_image(MdEngine* engine, const MdCameraImage* image, uint8_t* mask,
                                MdFrameTiming* timing, char* error, size_t error_size) {
  if (engine == nullptr || image == nullptr) {
    SetText(error, error_size, engine == nullptr ? "the engine is closed" : "the image is null");
    return 1;
  }
  mobdistill::FrameRecord record;
  mobdistill::Status s = engine->segmenter->ProcessCameraImage(ToCameraImage(*image), mask,
                                                               &record);
  if (!s.ok()) {
    SetText(error, error_size, s.message());
    return 1;
  }
  if (timing != nullptr) {
    *timing = MdFrameTiming{RoundUs(record.preprocess_us), RoundUs(record.invoke_us),
                            RoundUs(record.postprocess_us)};
  }
  Record(engine, record);
  return 0;
}

int32_t md_convert_image(const MdCameraImage* image, int32_t out_width, int32_t out_height,
                         uint8_t* rgb, char* error, size_t error_size) {
  if (image == nullptr) {
    SetText(error, error_size, "the image is null");
    return 1;
  }
  mobdistill::CameraImageConverter converter;
  mobdistill::Status s = converter.Convert(ToCameraImage(*image), out_width, out_height, rgb);
  if (!s.ok()) SetText(error, error_size, s.message());
  return s.ok() ? 0 : 1;
}

int32_t md_mask_to_preview(const uint8_t* mask, int32_t mask_width, int32_t mask_height,
                           uint8_t* out, int32_t out_width, int32_t out_height,
                           int32_t out_row_stride, char* error, size_t error_size) {
  mobdistill::Status s = mobdistill::MaskToPreview(mask, mask_width, mask_height, out, out_width,
                                                   out_height, out_row_stride);
  if (!s.ok()) SetText(error, error_size, s.message());
  return s.ok() ? 0 : 1;
}

int32_t md_engine_apply_update(MdEngine* engine, const uint8_t* packet, size_t packet_size,
                               char* result_json, size_t result_size) {
  if (engine == nullptr || (packet == nullptr && packet_size > 0)) {
    SetText(result_json, result_size, "the engine is closed or the packet is null");
    return -1;
  }
  mobdistill::UpdateRecord record;
  mobdistill::Status s = engine->segmenter->ApplyUpdateNow(
      std::vector<uint8_t>(packet, packet + packet_size), &record);
  if (!s.ok()) {
    SetText(result_json, result_size, s.message());
    return -1;
  }
  SetText(result_json, result_size, record.ToJson());
  return record.applied ? 0 : 1;
}

int32_t md_engine_stats(MdEngine* engine, char* json, size_t json_size) {
  if (engine == nullptr) return -1;
  nlohmann::json j;
  const int32_t interval = engine->segmenter->keyframe_interval();  // not under stats_mu
  {
    std::lock_guard<std::mutex> lock(engine->stats_mu);
    j["frames"] = engine->frames;
    j["invoke"] = StatsJson(engine->invoke_us);
    j["preprocess"] = StatsJson(engine->preprocess_us);
    j["schedule"] = ScheduleJson(*engine, interval);
  }
  j["model_version"] = engine->segmenter->model_version();
  j["delegate_used"] = engine->delegate_used;
  const mobdistill::UpdateTotals totals = engine->segmenter->update_totals();
  nlohmann::json reasons = nlohmann::json::object();
  for (const auto& reason : totals.rejected_by_reason) reasons[reason.first] = reason.second;
  j["updates"] = {{"received", totals.received},
                  {"applied", totals.applied},
                  {"rejected", totals.rejected},
                  {"rejected_by_reason", reasons},
                  {"last", totals.has_last ? nlohmann::json::parse(totals.last.ToJson())
                                           : nlohmann::json(nullptr)}};
  const std::string text = j.dump();
  if (json == nullptr || text.size() + 1 > json_size) return static_cast<int32_t>(text.size() + 1);
  std::memcpy(json, text.c_str(), text.size() + 1);
  return 0;
}

int32_t md_engine_benchmark_main(int32_t argc, const char* const* argv, char* error,
                                 size_t error_size) {
  std::string message;
  const int code = mobdistill::RunEngineCli(argc, argv, &message);
  if (code != 0) SetText(error, error_size, message);
  return code;
}

}  // extern "C"
