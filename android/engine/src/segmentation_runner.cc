#include "segmentation_runner.h"

#include <chrono>
#include <cstring>
#include <future>

#include "digest.h"

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

// ---------------------------------------------------------------- FrameSource

FrameSource::~FrameSource() {
  if (file_) std::fclose(file_);
}

Status FrameSource::OpenFile(const std::string& path, int height, int width) {
  frame_bytes_ = size_t(height) * size_t(width) * 3;
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) return Status::Error("cannot open --frames " + path);
  if (std::fseek(file_, 0, SEEK_END) != 0) return Status::Error("cannot seek --frames " + path);
  const long long size = std::ftell(file_);
  if (size <= 0 || size % static_cast<long long>(frame_bytes_) != 0) {
    return Status::Error("--frames " + path + " has " + std::to_string(size) +
                         " bytes, not a positive multiple of one " + std::to_string(height) +
                         "x" + std::to_string(width) + "x3 uint8 RGB frame (" +
                         std::to_string(frame_bytes_) +
                         " bytes); decode the video at the model's resolution");
  }
  count_ = size / static_cast<long long>(frame_bytes_);
  return Status::Ok();
}

void FrameSource::UseRandom(int height, int width, int count, uint32_t seed) {
  frame_bytes_ = size_t(height) * size_t(width) * 3;
  count_ = count;
  random_.resize(frame_bytes_ * size_t(count));
  uint32_t x = seed ? seed : 1;
  for (uint8_t& b : random_) {  // xorshift32: deterministic across platforms
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = uint8_t(x >> 24);
  }
}

Status FrameSource::Read(int64_t index, std::vector<uint8_t>* frame) {
  const int64_t i = index % count_;
  frame->resize(frame_bytes_);
  if (!file_) {
    std::memcpy(frame->data(), random_.data() + size_t(i) * frame_bytes_, frame_bytes_);
    return Status::Ok();
  }
  if (std::fseek(file_, static_cast<long>(i * static_cast<int64_t>(frame_bytes_)), SEEK_SET) != 0 ||
      std::fread(frame->data(), 1, frame_bytes_, file_) != frame_bytes_) {
    return Status::Error("cannot read frame " + std::to_string(i) + " of --frames");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- SegmentationRunner

SegmentationRunner::SegmentationRunner(Params params)
    : Runner(params.warmup_runs, params.num_runs, params.run_delay), params_(std::move(params)) {}

SegmentationRunner::~SegmentationRunner() {
  // Sources stop taking packets, then the update worker (whose last outcomes still reach the
  // sources' queues), then the sources finish, then the slots the worker built.
  tcp_listener_.StopReading();
  dir_watcher_.StopScanning();
  updates_.reset();
  tcp_listener_.Stop();
  dir_watcher_.Stop();
  engine_.reset();  // joins a builder thread before the API table goes away
  if (masks_out_) std::fclose(masks_out_);
  if (logits_out_) std::fclose(logits_out_);
}

namespace {

bool HexToBytes(const std::string& hex, uint8_t* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else return false;
    }
    out[i] = uint8_t(v);
  }
  return true;
}

}  // namespace

Status SegmentationRunner::Init() {
  const auto t_lib = Clock::now();
  MD_RETURN_IF_ERROR(TfLiteApi::Load(params_.runtime_lib, params_.delegate_lib, &api_));
  info_.runtime_load_ms = Ms(t_lib, Clock::now());
  const auto t0 = Clock::now();
  MD_RETURN_IF_ERROR(LoadManifest(params_.manifest, &manifest_));
  const std::string graph = params_.graph.empty() ? manifest_.tflite_file : params_.graph;
  std::vector<uint8_t> bytes;
  Status read = ReadFileBytes(graph, &bytes);
  if (!read.ok()) return Status::Error("cannot read model " + graph + " (from --manifest/--graph)");
  const std::string digest = Sha256Hex(bytes.data(), bytes.size());
  if (digest != manifest_.tflite_sha256) {
    return Status::Error("sha256 mismatch for " + graph + ": manifest says " +
                         manifest_.tflite_sha256 + ", file has " + digest +
                         "; re-export or re-stage the model");
  }

  std::vector<uint8_t> base;  // the pristine bytes that base-relative updates patch
  if (params_.updates_enabled()) base = bytes;

  SlotConfig config;
  config.num_threads = params_.num_threads;
  config.use_xnnpack = params_.use_xnnpack;
  config.use_gpu = params_.use_gpu;
  config.use_nnapi = params_.use_nnapi;
  if (manifest_.has_memory) {
    config.signatures = {manifest_.memory.init_signature, manifest_.memory.step_signature};
    run_signature_ = manifest_.memory.step_signature;
    queue_.reset(new MemoryQueue(manifest_.memory.queue_length));
  } else {
    config.signatures = {"serving_default"};
    run_signature_ = "serving_default";
  }
  std::vector<int64_t> expected;  // bytes per manifest, in SlotConfig order
  for (const std::string& name : config.signatures) {
    const SignatureSpec* sig = manifest_.Signature(name);
    for (const TensorSpec& t : sig->inputs) {
      config.inputs.emplace_back(name, t.name);
      expected.push_back(t.NumElements() * 4);
    }
  }
  for (const std::string& name : config.signatures) {
    const SignatureSpec* sig = manifest_.Signature(name);
    for (const TensorSpec& t : sig->outputs) {
      config.outputs.emplace_back(name, t.name);
      expected.push_back(t.NumElements() * 4);
    }
  }
  frame_input_ = manifest_.Signature(run_signature_)->InputWithRole("frame")->name;
  engine_.reset(new Engine(&api_, config));
  MD_RETURN_IF_ERROR(engine_->Load(std::move(bytes), params_.model_version));
  const std::vector<size_t> actual = engine_->active().IoByteSizes();
  const size_t n_in = config.inputs.size();
  for (size_t k = 0; k < actual.size(); ++k) {
    if (int64_t(actual[k]) != expected[k]) {
      const auto& ref = k < n_in ? config.inputs[k] : config.outputs[k - n_in];
      return Status::Error("tensor " + ref.first + "." + ref.second + " has " +
                           std::to_string(actual[k]) + " bytes in the model but the manifest "
                           "shape gives " + std::to_string(expected[k]));
    }
  }
  info_.model_load_ms = Ms(t0, Clock::now());

  info_.model_name = manifest_.model_name;
  info_.graph_path = graph;
  info_.runtime_version = api_.Version();
  info_.delegate_requested = params_.use_gpu ? "gpu"
                             : params_.use_nnapi ? "nnapi"
                             : params_.use_xnnpack ? "xnnpack" : "cpu";
  info_.delegate_used = engine_->active().delegate_used();
  info_.warnings = engine_->active().warnings();
  if (!params_.use_xnnpack && !params_.use_gpu) {
    info_.warnings.push_back("--use_xnnpack=false: no delegate applied explicitly; the runtime "
                             "may still apply its built-in default XNNPACK delegate");
  }
  info_.num_threads = params_.num_threads;
  info_.warmup_runs = params_.warmup_runs;
  info_.num_runs = params_.num_runs;
  info_.stateful = manifest_.has_memory;
  info_.queue_length = manifest_.has_memory ? manifest_.memory.queue_length : 0;

  if (!params_.output_masks.empty() && !(masks_out_ = std::fopen(params_.output_masks.c_str(), "wb"))) {
    return Status::Error("cannot write --output_masks " + params_.output_masks);
  }
  if (!params_.output_logits.empty() &&
      !(logits_out_ = std::fopen(params_.output_logits.c_str(), "wb"))) {
    return Status::Error("cannot write --output_logits " + params_.output_logits);
  }
  if (params_.updates_enabled()) {
    UpdateSecurity security;
    if (!params_.update_key_file.empty()) {
      if (!ReadFileBytes(params_.update_key_file, &security.hmac_key).ok() ||
          security.hmac_key.empty()) {
        return Status::Error("cannot read --update_key_file " + params_.update_key_file +
                             " (raw key bytes, not empty)");
      }
    }
    if (!params_.update_device_id.empty() &&
        !HexToBytes(params_.update_device_id, security.device_id.data(),
                    security.device_id.size())) {
      return Status::Error("--update_device_id must be 32 hex digits (16 bytes), not '" +
                           params_.update_device_id + "'");
    }
    security.insecure = params_.insecure_updates;
    security.state_file = params_.update_state_file;
    MD_RETURN_IF_ERROR(SetUpUpdates(std::move(base), std::move(security)));
    if (!params_.update_schedule.empty()) {
      MD_RETURN_IF_ERROR(LoadUpdateSchedule(params_.update_schedule, &schedule_));
    }
  }
  return Status::Ok();
}


Status SegmentationRunner::SetUpUpdates(std::vector<uint8_t> base, UpdateSecurity security) {
  if (manifest_.parameters.empty()) {
    return Status::Error("manifest " + manifest_.path + " has no parameter_map entries, so no "
                         "tensor can be updated; re-export the model with mobdistill export");
  }
  UpdateConfig config;
  config.base = std::move(base);
  config.hmac_key = std::move(security.hmac_key);
  config.device_id = security.device_id;
  config.insecure = security.insecure;
  config.state_file = std::move(security.state_file);
  if (!HexToBytes(manifest_.tflite_sha256, config.base_sha256.data(), 32)) {
    return Status::Error("manifest: tflite sha256 is not 64 hex digits");
  }
  for (const ParameterEntry& e : manifest_.parameters) {
    update::TensorLocation loc;
    loc.buffer_offset = e.buffer_offset;
    loc.buffer_size = e.buffer_size;
    loc.dtype = e.dtype == "float32" ? update::DType::kFloat32 : update::DType::kOther;
    config.table[e.tensor_index] = loc;
  }
  config.max_packet_bytes = update::DecodeLimits::ForTable(config.table).MaxPacketBytes();
  if (config.insecure) {
    std::fprintf(stderr, "mobdistill-engine: WARNING: updates are NOT authenticated "
                 "(insecure): anyone who can reach the update port or folder can rewrite the "
                 "model. Use a per-device key (--update_key_file) outside experiments.\n");
  }
  updates_.reset(new UpdateManager(engine_.get(), std::move(config)));
  MD_RETURN_IF_ERROR(updates_->LoadState());
  updates_->Start();
  return Status::Ok();
}

Status SegmentationRunner::StartUpdateSources() {
  if (!params_.update_dir.empty()) {
    MD_RETURN_IF_ERROR(
        dir_watcher_.Start(params_.update_dir, updates_.get(), updates_->max_packet_bytes()));
  }
  if (params_.update_port >= 0) {
    const TcpLimits limits = TcpLimits::For(updates_->max_packet_bytes());
    MD_RETURN_IF_ERROR(tcp_listener_.Start(params_.update_port, updates_.get(), limits));
    std::fprintf(stderr, "mobdistill-engine: update listener on 127.0.0.1:%d (messages up to "
                 "%llu bytes, %d clients, %llu bytes outstanding)\n", tcp_listener_.port(),
                 static_cast<unsigned long long>(limits.max_message_bytes), limits.max_clients,
                 static_cast<unsigned long long>(limits.max_outstanding_bytes));
  }
  return Status::Ok();
}

void SegmentationRunner::Report(std::vector<UpdateRecord>* records) {
  for (const UpdateRecord& r : *records) {
    update_log_.Add(r);
    NotifyUpdate(r);
  }
}

void SegmentationRunner::CollectUpdates(int64_t run, bool wait) {
  std::vector<UpdateRecord> records;
  updates_->BetweenFrames(run, wait, &records);
  Report(&records);
}

Status SegmentationRunner::Finish(int64_t /*runs*/) {
  if (!updates_) return Status::Ok();
  tcp_listener_.StopReading();
  dir_watcher_.StopScanning();
  std::vector<UpdateRecord> records;
  updates_->Stop(&records);
  dir_watcher_.Stop();  // deletes + receipts for the outcomes the worker reported last
  if (const uint64_t dropped = updates_->dropped_records()) {
    info_.warnings.push_back(std::to_string(dropped) + " refused update messages arrived "
                             "faster than frames ran and were not recorded one by one");
  }
  for (; schedule_next_ < schedule_.size(); ++schedule_next_) {  // due after the last run
    UpdateRecord r;
    r.source = "schedule";
    r.name = schedule_[schedule_next_].path;
    r.packet_bytes = schedule_[schedule_next_].bytes.size();
    r.reason = "run_ended";
    r.message = "scheduled for frame " + std::to_string(schedule_[schedule_next_].frame) +
                ", after the last run";
    records.push_back(r);
  }
  tcp_listener_.Stop();  // after Stop(): the final acks go out
  Report(&records);
  return Status::Ok();
}

Status SegmentationRunner::Open(UpdateSecurity security) {
  MD_RETURN_IF_ERROR(Init());
  if (!manifest_.parameters.empty()) {
    MD_RETURN_IF_ERROR(SetUpUpdates(engine_->active().bytes(), std::move(security)));
  }
  needs_init_ = true;
  return Status::Ok();
}

void SegmentationRunner::ResetVideo() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  needs_init_ = true;
}

int64_t SegmentationRunner::model_version() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  return engine_ ? engine_->active().version() : 0;
}

UpdateTotals SegmentationRunner::update_totals() {
  std::lock_guard<std::mutex> lock(frame_mu_);  // between frames by construction
  if (updates_) CollectUpdates(frames_processed_, false);
  UpdateTotals totals;
  totals.received = update_log_.received();
  totals.applied = update_log_.applied();
  totals.rejected = update_log_.rejected();
  totals.rejected_by_reason = update_log_.rejected_by_reason();
  totals.has_last = !update_log_.recent().empty();
  if (totals.has_last) totals.last = update_log_.recent().back();
  return totals;
}

Status SegmentationRunner::ProcessFrame(const uint8_t* rgb, int32_t row_stride, uint8_t* mask,
                                        FrameRecord* record) {
  std::lock_guard<std::mutex> lock(frame_mu_);
  if (!engine_) return Status::Error("the engine is not open");
  const size_t h = size_t(manifest_.height), w = size_t(manifest_.width);
  if (rgb == nullptr || mask == nullptr || row_stride < 0 || size_t(row_stride) < w * 3) {
    return Status::Error("frame rows must hold " + std::to_string(w) + " RGB pixels (" +
                         std::to_string(w * 3) + " bytes); resize the frame to the model input");
  }
  frame_.resize(h * w * 3);
  for (size_t y = 0; y < h; ++y) {
    std::memcpy(frame_.data() + y * w * 3, rgb + y * size_t(row_stride), w * 3);
  }
  if (updates_) CollectUpdates(frames_processed_, false);  // between frames
  if (queue_ && needs_init_) {
    MD_RETURN_IF_ERROR(RunInit(/*read_source_frame=*/false));
    needs_init_ = false;
  }
  slot_ = &engine_->active();
  current_ = slot_->runner(run_signature_);
  record->run = frames_processed_;
  record->frame_index = frames_processed_;
  record->phase = Phase::kMeasure;
  record->model_version = slot_->version();
  MD_RETURN_IF_ERROR(RunTimedStages(record));
  std::memcpy(mask, mask_.data(), mask_.size());
  ++frames_processed_;
  return Status::Ok();
}

Status SegmentationRunner::ApplyUpdateNow(std::vector<uint8_t> packet, UpdateRecord* record) {
  if (!updates_) {
    return Status::Error("this model cannot take updates: its manifest has no parameter_map; "
                         "re-export it with mobdistill export");
  }
  int64_t frame = 0;
  {
    std::lock_guard<std::mutex> lock(frame_mu_);
    CollectUpdates(frames_processed_, false);  // adopt an earlier prepared update first
    frame = frames_processed_;
  }
  std::promise<UpdateRecord> ready;
  std::future<UpdateRecord> outcome = ready.get_future();
  IncomingPacket p;
  p.source = "api";
  p.name = "api";
  p.bytes = std::move(packet);
  p.on_ready = [&ready](const UpdateRecord& r) { ready.set_value(r); };
  // No frame can adopt a build while we wait, so this returns only because the worker hands the
  // outcome over after recording it; the facade has no other update source that could hold the
  // worker with a build awaiting adoption.
  updates_->SubmitNow(std::move(p), frame);
  *record = outcome.get();
  return Status::Ok();
}

Status SegmentationRunner::PrepareInputs() {
  const int h = manifest_.height, w = manifest_.width;
  if (params_.frames.empty()) {
    frames_.UseRandom(h, w, 8, 0x6d6f6264u);
    info_.input_source = "random";
  } else {
    MD_RETURN_IF_ERROR(frames_.OpenFile(params_.frames, h, w));
    info_.input_source = params_.frames;
  }
  info_.num_source_frames = frames_.count();
  if (manifest_.has_memory) MD_RETURN_IF_ERROR(RunInit(/*read_source_frame=*/true));
  if (updates_) MD_RETURN_IF_ERROR(StartUpdateSources());
  return Status::Ok();
}

Status SegmentationRunner::WriteFrameInput(TfLiteSignatureRunner* r, const std::string& name) {
  TfLiteTensor* t = api_.RunnerGetInputTensor(r, name.c_str());
  float* dst = static_cast<float*>(api_.TensorData(t));
  const size_t n = frame_.size();
  if (!dst || api_.TensorByteSize(t) != n * sizeof(float)) {
    return Status::Error("frame input '" + name + "' does not hold one HxWx3 frame");
  }
  const double lo = manifest_.input_lo, hi = manifest_.input_hi;
  if (lo == 0.0 && hi == 255.0) {
    for (size_t i = 0; i < n; ++i) dst[i] = float(frame_[i]);
  } else {
    const float scale = float((hi - lo) / 255.0), offset = float(lo);
    for (size_t i = 0; i < n; ++i) dst[i] = offset + scale * float(frame_[i]);
  }
  return Status::Ok();
}

Status SegmentationRunner::RunInit(bool read_source_frame) {
  const int h = manifest_.height, w = manifest_.width;
  const SignatureSpec* sig = manifest_.Signature(manifest_.memory.init_signature);
  const TensorSpec* mask_spec = sig->InputWithRole("mask");
  const int64_t channels = mask_spec->shape.back();
  std::vector<uint8_t> labels(size_t(h) * size_t(w), 0);
  if (!params_.init_mask.empty()) {
    MD_RETURN_IF_ERROR(ReadFileBytes(params_.init_mask, &labels));
    if (labels.size() != size_t(h) * size_t(w)) {
      return Status::Error("--init_mask " + params_.init_mask + " has " +
                           std::to_string(labels.size()) + " bytes; expected one " +
                           std::to_string(h) + "x" + std::to_string(w) + " uint8 label map");
    }
  } else {  // no annotation: object 1 = the centre half of the frame
    for (int y = h / 4; y < h - h / 4; ++y)
      for (int x = w / 4; x < w - w / 4; ++x) labels[size_t(y) * w + x] = 1;
  }
  const auto t0 = Clock::now();
  ModelSlot& slot = engine_->active();
  TfLiteSignatureRunner* r = slot.runner(manifest_.memory.init_signature);
  if (read_source_frame) MD_RETURN_IF_ERROR(frames_.Read(0, &frame_));
  MD_RETURN_IF_ERROR(WriteFrameInput(r, sig->InputWithRole("frame")->name));
  TfLiteTensor* mt = api_.RunnerGetInputTensor(r, mask_spec->name.c_str());
  float* m = static_cast<float*>(api_.TensorData(mt));
  for (size_t p = 0; p < labels.size(); ++p)
    for (int64_t c = 0; c < channels; ++c) m[p * channels + c] = labels[p] == c + 1 ? 1.f : 0.f;
  if (api_.RunnerInvoke(r) != kTfLiteOk) return Status::Error("invoke of 'init' failed");
  MemoryQueue::Entry first;
  for (const auto& carry : manifest_.memory.carry) {
    const TfLiteTensor* out = api_.RunnerGetOutputTensor(r, carry.first.c_str());
    const uint8_t* p = static_cast<const uint8_t*>(api_.TensorData(out));
    first.emplace_back(p, p + api_.TensorByteSize(out));
  }
  queue_->Reset(std::move(first));
  info_.init_ms = Ms(t0, Clock::now());
  frame_offset_ = 1;
  return Status::Ok();
}

Status SegmentationRunner::ApplySwapIfReady(int64_t run) {
  SwapEvent event;
  Status failure;
  const bool swapped = engine_->ApplyPendingSwap(&event, &failure);
  if (!swapped && failure.ok()) return Status::Ok();  // nothing ready
  SwapRecord rec;
  rec.version = event.version;
  rec.build_ms = event.build_ms;
  rec.sha256 = event.sha256;
  if (swapped) {
    rec.applied_before_run = run;
  } else {
    rec.error = failure.message();
    info_.warnings.push_back("hot swap failed: " + failure.message());
  }
  swaps_.push_back(rec);
  NotifySwap(rec);
  return Status::Ok();
}

Status SegmentationRunner::PrepareSwap(std::vector<uint8_t> new_model_bytes) {
  if (!engine_) return Status::Error("PrepareSwap before the engine was initialised");
  return engine_->PrepareSwap(std::move(new_model_bytes));
}

Status SegmentationRunner::BeforeRun(int64_t run, FrameRecord* record) {
  if (updates_) {  // only ever between two frames; the update manager owns the swaps then
    for (; schedule_next_ < schedule_.size() && schedule_[schedule_next_].frame <= run;
         ++schedule_next_) {
      IncomingPacket p;
      p.source = "schedule";
      p.name = schedule_[schedule_next_].path;
      p.bytes = schedule_[schedule_next_].bytes;
      updates_->Submit(std::move(p));
    }
    CollectUpdates(run, params_.update_blocking);
  } else {
    MD_RETURN_IF_ERROR(ApplySwapIfReady(run));
  }
  slot_ = &engine_->active();
  current_ = slot_->runner(run_signature_);
  record->model_version = slot_->version();
  record->frame_index = (frame_offset_ + run) % frames_.count();
  return frames_.Read(record->frame_index, &frame_);
}

Status SegmentationRunner::Preprocess() {
  MD_RETURN_IF_ERROR(WriteFrameInput(current_, frame_input_));
  if (queue_) {
    for (size_t c = 0; c < manifest_.memory.carry.size(); ++c) {
      TfLiteTensor* t =
          api_.RunnerGetInputTensor(current_, manifest_.memory.carry[c].second.c_str());
      queue_->Assemble(c, static_cast<uint8_t*>(api_.TensorData(t)));
    }
  }
  return Status::Ok();
}

Status SegmentationRunner::RunImpl() {
  if (api_.RunnerInvoke(current_) != kTfLiteOk) {
    return Status::Error("invoke of '" + run_signature_ + "' failed");
  }
  return Status::Ok();
}

Status SegmentationRunner::Postprocess() {
  const TfLiteTensor* logits = api_.RunnerGetOutputTensor(current_, manifest_.output_name.c_str());
  const float* p = static_cast<const float*>(api_.TensorData(logits));
  const int32_t nd = api_.TensorNumDims(logits);
  const int32_t classes = api_.TensorDim(logits, nd - 1);
  const size_t pixels = api_.TensorByteSize(logits) / sizeof(float) / size_t(classes);
  mask_.resize(pixels);
  for (size_t i = 0; i < pixels; ++i, p += classes) {  // argmax over the class axis (NHWC)
    int32_t best = 0;
    for (int32_t c = 1; c < classes; ++c) if (p[c] > p[best]) best = c;
    mask_[i] = uint8_t(best);
  }
  if (queue_) {
    MemoryQueue::Entry entry;
    for (const auto& carry : manifest_.memory.carry) {
      const TfLiteTensor* out = api_.RunnerGetOutputTensor(current_, carry.first.c_str());
      const uint8_t* d = static_cast<const uint8_t*>(api_.TensorData(out));
      entry.emplace_back(d, d + api_.TensorByteSize(out));
    }
    queue_->Push(std::move(entry));
  }
  return Status::Ok();
}

Status SegmentationRunner::AfterRun(int64_t run) {
  if (masks_out_) {
    std::fwrite(mask_.data(), 1, mask_.size(), masks_out_);
    std::fflush(masks_out_);
  }
  if (logits_out_) {
    const TfLiteTensor* t = api_.RunnerGetOutputTensor(current_, manifest_.output_name.c_str());
    std::fwrite(api_.TensorData(t), 1, api_.TensorByteSize(t), logits_out_);
    std::fflush(logits_out_);
  }
  if (!params_.swap_graph.empty() && run == params_.swap_after_run) {
    std::vector<uint8_t> bytes;
    MD_RETURN_IF_ERROR(ReadFileBytes(params_.swap_graph, &bytes));
    MD_RETURN_IF_ERROR(engine_->PrepareSwap(std::move(bytes)));
  }
  return Status::Ok();
}

}  // namespace mobdistill
