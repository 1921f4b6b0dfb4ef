#include "benchmark_runner.h"

#include <string>
#include <utility>

#include "op_profiler.h"

namespace mobdistill {

BenchmarkRunner::BenchmarkRunner(Params params)
    : Runner(params.warmup_runs, params.num_runs, params.run_delay), params_(std::move(params)) {}

BenchmarkRunner::~BenchmarkRunner() {
  updates_.reset();  // before the files close and the model's slots go away
  if (masks_out_) std::fclose(masks_out_);
  if (logits_out_) std::fclose(logits_out_);
}

Status BenchmarkRunner::Init() {
  MD_RETURN_IF_ERROR(model_.Load(params_, &info_));
  processor_.reset(new FrameProcessor(&model_, params_.init_mask));
  MD_RETURN_IF_ERROR(OpenOutputs());
  if (params_.updates_enabled()) MD_RETURN_IF_ERROR(StartUpdates());
  return Status::Ok();
}

Status BenchmarkRunner::OpenOutputs() {
  if (!params_.output_masks.empty() &&
      !(masks_out_ = std::fopen(params_.output_masks.c_str(), "wb"))) {
    return Status::Error("cannot write --output_masks " + params_.output_masks);
  }
  if (!params_.output_logits.empty() &&
      !(logits_out_ = std::fopen(params_.output_logits.c_str(), "wb"))) {
    return Status::Error("cannot write --output_logits " + params_.output_logits);
  }
  return Status::Ok();
}

Status BenchmarkRunner::StartUpdates() {
  UpdateSecurity security;
  MD_RETURN_IF_ERROR(UpdateSecurityFromFlags(params_, &security));
  updates_.reset(new UpdateSession(&model_.engine(),
                                   [this](const UpdateRecord& r) { NotifyUpdate(r); }));
  // Base-relative updates patch the pristine model, which is the one just loaded.
  MD_RETURN_IF_ERROR(
      updates_->Start(model_.manifest(), model_.engine().active().bytes(), std::move(security)));
  if (!params_.update_schedule.empty()) {
    std::vector<ScheduledPacket> schedule;
    MD_RETURN_IF_ERROR(LoadUpdateSchedule(params_.update_schedule, &schedule));
    updates_->SetSchedule(std::move(schedule));
  }
  return Status::Ok();
}

Status BenchmarkRunner::PrepareInputs() {
  const Manifest& manifest = model_.manifest();
  if (params_.frames.empty()) {
    frames_.UseRandom(manifest.height, manifest.width, 8, 0x6d6f6264u);
    info_.input_source = "random";
  } else {
    MD_RETURN_IF_ERROR(frames_.OpenFile(params_.frames, manifest.height, manifest.width));
    info_.input_source = params_.frames;
  }
  info_.num_source_frames = frames_.count();
  if (processor_->stateful()) {
    MD_RETURN_IF_ERROR(processor_->StartVideo(
        [this](std::vector<uint8_t>* frame) { return frames_.Read(0, frame); }, &info_.init_ms));
    frame_offset_ = 1;
  }
  if (updates_) MD_RETURN_IF_ERROR(updates_->Listen(params_.update_dir, params_.update_port));
  return Status::Ok();
}

Status BenchmarkRunner::BeforeRun(int64_t run, FrameRecord* record) {
  if (updates_) {  // only ever between two frames; the update session owns the swaps then
    updates_->SubmitDue(run);
    updates_->BetweenFrames(run, params_.update_blocking);
  } else {
    ApplySwapIfReady(run);
  }
  record->model_version = processor_->UseActiveModel();
  processor_->RecordSchedule(record);
  record->frame_index = (frame_offset_ + run) % frames_.count();
  return frames_.Read(record->frame_index, processor_->frame());
}

// --swap_graph: adopts the slot built in the background once it is ready; a failed build is
// recorded and the old model keeps running.
void BenchmarkRunner::ApplySwapIfReady(int64_t run) {
  SwapEvent event;
  Status failure;
  const bool swapped = model_.engine().ApplyPendingSwap(&event, &failure);
  if (!swapped && failure.ok()) {  // nothing ready: an idle build past its frames is raised
    // run swap_after_run + 1 is the first that could adopt it (an update's received_frame)
    const int64_t first_chance = params_.swap_after_run + 1;
    if (params_.swap_after_run >= 0 && run - first_chance >= kRaiseIdleBuildAfterFrames) {
      model_.engine().RaiseSwapBuilder();
    }
    return;
  }
  SwapRecord rec;
  rec.version = event.version;
  rec.build_ms = event.build_ms;
  rec.sha256 = event.sha256;
  rec.build_priority = model_.engine().swap_builder_raised() ? "raised" : event.priority;
  if (swapped) {
    rec.applied_before_run = run;
  } else {
    rec.error = failure.message();
    info_.warnings.push_back("hot swap failed: " + failure.message());
  }
  swaps_.push_back(rec);
  NotifySwap(rec);
}

Status BenchmarkRunner::AfterRun(int64_t run) {
  if (masks_out_) {
    const std::vector<uint8_t>& mask = processor_->mask();
    std::fwrite(mask.data(), 1, mask.size(), masks_out_);
    std::fflush(masks_out_);
  }
  if (logits_out_) {
    std::fwrite(processor_->logits_data(), 1, processor_->logits_bytes(), logits_out_);
    std::fflush(logits_out_);
  }
  if (!params_.swap_graph.empty() && run == params_.swap_after_run) {
    std::vector<uint8_t> bytes;
    MD_RETURN_IF_ERROR(ReadFileBytes(params_.swap_graph, &bytes));
    MD_RETURN_IF_ERROR(model_.engine().PrepareSwap(std::move(bytes)));
  }
  return Status::Ok();
}

Status BenchmarkRunner::Finish(int64_t /*runs*/) {
  if (updates_) updates_->Finish(&info_.warnings);
  if (!params_.swap_graph.empty() && swaps_.empty()) {
    info_.warnings.push_back("hot swap: the graph prepared after run " +
                             std::to_string(params_.swap_after_run) +
                             " was not ready before the last run");
  }
  if (params_.enable_op_profiling) MD_RETURN_IF_ERROR(ProfileOperators());
  return Status::Ok();
}

// --enable_op_profiling: the frame signature on the last frame's inputs (memory included), with
// the requested delegate and then, if that was a delegate, on the built-in kernels alone.
Status BenchmarkRunner::ProfileOperators() {
  const TfLiteApi& api = model_.api();
  ModelSlot& slot = model_.engine().active();
  const std::string& signature = model_.frame_signature();
  const SignatureSpec* spec = model_.manifest().Signature(signature);
  if (spec == nullptr) return Status::Error("op profile: no signature " + signature);
  std::vector<OpProfileInput> inputs;
  for (const TensorSpec& t : spec->inputs) {
    TfLiteTensor* tensor = api.RunnerGetInputTensor(slot.runner(signature), t.name.c_str());
    if (tensor == nullptr) return Status::Error("op profile: no input " + t.name);
    OpProfileInput input{t.name, std::vector<uint8_t>(api.TensorByteSize(tensor))};
    MD_RETURN_IF_ERROR(api.TensorCopyToBuffer(tensor, input.bytes.data(), input.bytes.size()) ==
                               kTfLiteOk
                           ? Status::Ok()
                           : Status::Error("op profile: cannot read input " + t.name));
    inputs.push_back(std::move(input));
  }
  std::vector<OpProfilePass> passes(1);
  passes[0].label = "delegate";
  MD_RETURN_IF_ERROR(ProfileOps(api, slot.bytes(), signature, inputs, params_.num_threads,
                                params_.use_xnnpack, params_.num_runs, &passes[0]));
  if (passes[0].delegate != "cpu") {
    // Best effort: a graph the delegate runs may not prepare on the built-in kernels (e.g. int8
    // scales they refuse); the pass then records why instead of failing the run.
    passes.emplace_back();
    passes[1].label = "builtin";
    passes[1].delegate = "cpu";
    Status builtin = ProfileOps(api, slot.bytes(), signature, inputs, params_.num_threads,
                                false, params_.num_runs, &passes[1]);
    if (!builtin.ok()) passes[1].error = builtin.message();
  } else {
    passes[0].label = "builtin";
  }
  return WriteOpProfile(params_.op_profile, passes);
}

}  // namespace mobdistill
