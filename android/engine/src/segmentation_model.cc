#include "segmentation_model.h"

#include <chrono>
#include <vector>

#include "digest.h"

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Every tensor the engine touches, in the order the slot's IoByteSizes reports them.
SlotConfig SlotConfigFor(const Manifest& manifest, const Params& params) {
  SlotConfig config;
  config.num_threads = params.num_threads;
  config.use_xnnpack = params.use_xnnpack;
  config.use_gpu = params.use_gpu;
  config.use_nnapi = params.use_nnapi;
  if (manifest.has_memory) {
    config.signatures = {manifest.memory.init_signature, manifest.memory.step_signature};
  } else if (manifest.has_schedule) {
    config.signatures = {manifest.schedule.keyframe_signature, manifest.schedule.delta_signature};
  } else {
    config.signatures = {"serving_default"};
  }
  for (const std::string& name : config.signatures) {
    for (const TensorSpec& t : manifest.Signature(name)->inputs) {
      config.inputs.emplace_back(name, t.name);
    }
  }
  for (const std::string& name : config.signatures) {
    for (const TensorSpec& t : manifest.Signature(name)->outputs) {
      config.outputs.emplace_back(name, t.name);
    }
  }
  return config;
}

}  // namespace

SegmentationModel::~SegmentationModel() {
  engine_.reset();  // joins a builder thread before the API table goes away
}

Status SegmentationModel::Load(const Params& params, RunInfo* info) {
  const auto t_lib = Clock::now();
  MD_RETURN_IF_ERROR(TfLiteApi::Load(params.runtime_lib, params.delegate_lib, &api_));
  info->runtime_load_ms = Ms(t_lib, Clock::now());
  const auto t0 = Clock::now();
  MD_RETURN_IF_ERROR(LoadManifest(params.manifest, &manifest_));
  const std::string graph = params.graph.empty() ? manifest_.tflite_file : params.graph;
  std::vector<uint8_t> bytes;
  Status read = ReadFileBytes(graph, &bytes);
  if (!read.ok()) return Status::Error("cannot read model " + graph + " (from --manifest/--graph)");
  const std::string digest = Sha256Hex(bytes.data(), bytes.size());
  if (digest != manifest_.tflite_sha256) {
    return Status::Error("sha256 mismatch for " + graph + ": manifest says " +
                         manifest_.tflite_sha256 + ", file has " + digest +
                         "; re-export or re-stage the model");
  }
  frame_signature_ = manifest_.has_memory ? manifest_.memory.step_signature
                     : manifest_.has_schedule ? manifest_.schedule.delta_signature
                                              : "serving_default";
  MD_RETURN_IF_ERROR(ChooseKeyframeInterval(params, info));
  const SlotConfig config = SlotConfigFor(manifest_, params);
  engine_.reset(new Engine(&api_, config));
  MD_RETURN_IF_ERROR(engine_->Load(std::move(bytes), params.model_version));
  MD_RETURN_IF_ERROR(CheckTensorSizes(config));
  info->model_load_ms = Ms(t0, Clock::now());

  info->model_name = manifest_.model_name;
  info->graph_path = graph;
  info->runtime_version = api_.Version();
  info->delegate_requested = params.use_gpu ? "gpu"
                             : params.use_nnapi ? "nnapi"
                             : params.use_xnnpack ? "xnnpack" : "cpu";
  info->delegate_used = engine_->active().delegate_used();
  info->warnings = engine_->active().warnings();
  if (!params.use_xnnpack && !params.use_gpu) {
    info->warnings.push_back("--use_xnnpack=false: no delegate applied explicitly; the runtime "
                             "may still apply its built-in default XNNPACK delegate");
  }
  info->num_threads = params.num_threads;
  info->warmup_runs = params.warmup_runs;
  info->num_runs = params.num_runs;
  info->stateful = manifest_.has_memory;
  info->queue_length = manifest_.has_memory ? manifest_.memory.queue_length : 0;
  return Status::Ok();
}

// Delta-distilled models run the manifest's schedule.period unless --keyframe_interval
// overrides it; the flag on any other model would silently do nothing, so it is refused.
Status SegmentationModel::ChooseKeyframeInterval(const Params& params, RunInfo* info) {
  if (!manifest_.has_schedule) {
    if (params.keyframe_interval > 0) {
      return Status::Error("--keyframe_interval applies to delta-distilled models only; " +
                           params.manifest + " has no keyframe schedule");
    }
    keyframe_interval_ = 0;
    return Status::Ok();
  }
  const bool flag = params.keyframe_interval > 0;
  keyframe_interval_ = flag ? params.keyframe_interval : manifest_.schedule.period;
  info->keyframe_interval = keyframe_interval_;
  info->keyframe_interval_source = flag ? "--keyframe_interval" : "manifest";
  return Status::Ok();
}

// The manifest states every tensor's float32 shape; a model that disagrees would read or write
// past what the engine fills, so it is refused here rather than at the first frame.
Status SegmentationModel::CheckTensorSizes(const SlotConfig& config) {
  const std::vector<size_t> actual = engine_->active().IoByteSizes();
  const size_t n_in = config.inputs.size();
  for (size_t k = 0; k < actual.size(); ++k) {
    const auto& ref = k < n_in ? config.inputs[k] : config.outputs[k - n_in];
    const SignatureSpec* sig = manifest_.Signature(ref.first);
    const std::vector<TensorSpec>& specs = k < n_in ? sig->inputs : sig->outputs;
    int64_t expected = 0;
    for (const TensorSpec& t : specs) {
      if (t.name == ref.second) expected = t.NumElements() * 4;
    }
    if (int64_t(actual[k]) != expected) {
      return Status::Error("tensor " + ref.first + "." + ref.second + " has " +
                           std::to_string(actual[k]) + " bytes in the model but the manifest "
                           "shape gives " + std::to_string(expected));
    }
  }
  return Status::Ok();
}

}  // namespace mobdistill
