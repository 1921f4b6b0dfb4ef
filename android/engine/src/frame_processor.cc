#include "frame_processor.h"

#include <chrono>
#include <cstring>

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

FrameProcessor::FrameProcessor(SegmentationModel* model, std::string init_mask)
    : model_(model),
      api_(model->api()),
      manifest_(model->manifest()),
      init_mask_(std::move(init_mask)),
      frame_input_(manifest_.Signature(model->frame_signature())->InputWithRole("frame")->name) {
  if (manifest_.has_memory) queue_.reset(new MemoryQueue(manifest_.memory.queue_length));
  if (manifest_.has_schedule) {
    schedule_.reset(new KeyframeSchedule(model->keyframe_interval()));
    keyframe_input_ =
        manifest_.Signature(manifest_.schedule.keyframe_signature)->InputWithRole("frame")->name;
  }
}

void FrameProcessor::RestartSchedule() {
  if (schedule_) schedule_->Restart();
}

Status FrameProcessor::SetKeyframeInterval(int interval) {
  if (!schedule_) {
    return Status::Error("the keyframe interval applies to delta-distilled models only; " +
                         manifest_.path + " has no keyframe schedule");
  }
  if (interval < 1) {
    return Status::Error("the keyframe interval must be >= 1, not " + std::to_string(interval));
  }
  schedule_->SetInterval(interval);
  return Status::Ok();
}

Status FrameProcessor::WriteFrameInput(TfLiteSignatureRunner* r, const std::string& name) {
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

Status FrameProcessor::InitLabels(std::vector<uint8_t>* labels) const {
  const int h = manifest_.height, w = manifest_.width;
  labels->assign(size_t(h) * size_t(w), 0);
  if (!init_mask_.empty()) {
    MD_RETURN_IF_ERROR(ReadFileBytes(init_mask_, labels));
    if (labels->size() != size_t(h) * size_t(w)) {
      return Status::Error("--init_mask " + init_mask_ + " has " +
                           std::to_string(labels->size()) + " bytes; expected one " +
                           std::to_string(h) + "x" + std::to_string(w) + " uint8 label map");
    }
    return Status::Ok();
  }
  // No annotation: object 1 = the centre half of the frame.
  for (int y = h / 4; y < h - h / 4; ++y)
    for (int x = w / 4; x < w - w / 4; ++x) (*labels)[size_t(y) * size_t(w) + size_t(x)] = 1;
  return Status::Ok();
}

MemoryQueue::Entry FrameProcessor::CarryOutputs(TfLiteSignatureRunner* r) const {
  MemoryQueue::Entry entry;
  for (const auto& carry : manifest_.memory.carry) {
    const TfLiteTensor* out = api_.RunnerGetOutputTensor(r, carry.first.c_str());
    const uint8_t* d = static_cast<const uint8_t*>(api_.TensorData(out));
    entry.emplace_back(d, d + api_.TensorByteSize(out));
  }
  return entry;
}

Status FrameProcessor::StartVideo(
    const std::function<Status(std::vector<uint8_t>*)>& read_first_frame, double* init_ms) {
  const SignatureSpec* sig = manifest_.Signature(manifest_.memory.init_signature);
  const TensorSpec* mask_spec = sig->InputWithRole("mask");
  const int64_t channels = mask_spec->shape.back();
  std::vector<uint8_t> labels;
  MD_RETURN_IF_ERROR(InitLabels(&labels));
  const auto t0 = Clock::now();
  TfLiteSignatureRunner* r = model_->engine().active().runner(manifest_.memory.init_signature);
  if (read_first_frame) MD_RETURN_IF_ERROR(read_first_frame(&frame_));
  MD_RETURN_IF_ERROR(WriteFrameInput(r, sig->InputWithRole("frame")->name));
  TfLiteTensor* mt = api_.RunnerGetInputTensor(r, mask_spec->name.c_str());
  float* m = static_cast<float*>(api_.TensorData(mt));
  for (size_t p = 0; p < labels.size(); ++p)
    for (int64_t c = 0; c < channels; ++c) m[p * channels + c] = labels[p] == c + 1 ? 1.f : 0.f;
  if (api_.RunnerInvoke(r) != kTfLiteOk) return Status::Error("invoke of 'init' failed");
  queue_->Reset(CarryOutputs(r));
  *init_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return Status::Ok();
}

int64_t FrameProcessor::UseActiveModel() {
  slot_ = &model_->engine().active();
  if (schedule_ && schedule_->Decide(slot_->version())) {
    current_ = slot_->runner(manifest_.schedule.keyframe_signature);
    current_input_ = &keyframe_input_;
  } else {
    current_ = slot_->runner(model_->frame_signature());
    current_input_ = &frame_input_;
  }
  return slot_->version();
}

void FrameProcessor::RecordSchedule(FrameRecord* record) const {
  record->scheduled = schedule_ != nullptr;
  if (!schedule_) return;
  record->keyframe = schedule_->last_was_keyframe();
  record->keyframe_reason = KeyframeReasonName(schedule_->last_reason());
}

Status FrameProcessor::Preprocess() {
  MD_RETURN_IF_ERROR(WriteFrameInput(current_, *current_input_));
  if (queue_) {
    for (size_t c = 0; c < manifest_.memory.carry.size(); ++c) {
      TfLiteTensor* t =
          api_.RunnerGetInputTensor(current_, manifest_.memory.carry[c].second.c_str());
      queue_->Assemble(c, static_cast<uint8_t*>(api_.TensorData(t)));
    }
  }
  return Status::Ok();
}

Status FrameProcessor::RunImpl() {
  if (api_.RunnerInvoke(current_) != kTfLiteOk) {
    return Status::Error("invoke of '" + model_->frame_signature() + "' failed");
  }
  return Status::Ok();
}

Status FrameProcessor::Postprocess() {
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
  if (queue_) queue_->Push(CarryOutputs(current_));
  if (schedule_ && schedule_->NextIsDelta()) CarryDeltaState();
  return Status::Ok();
}

// This frame's carried outputs (keyframe or delta alike) into the delta signature's inputs of
// the same slot: a new slot starts with a keyframe, so the state never crosses models. Sizes
// match: the manifest pairs equal sizes and every slot's tensors are checked against it.
void FrameProcessor::CarryDeltaState() {
  TfLiteSignatureRunner* delta = slot_->runner(manifest_.schedule.delta_signature);
  for (const auto& carry : manifest_.schedule.carry) {
    const TfLiteTensor* out = api_.RunnerGetOutputTensor(current_, carry.first.c_str());
    TfLiteTensor* in = api_.RunnerGetInputTensor(delta, carry.second.c_str());
    // memmove: a graph may hand an input straight back as the output tensor.
    std::memmove(api_.TensorData(in), api_.TensorData(out), api_.TensorByteSize(out));
  }
  schedule_->MarkStateReady();
}

const void* FrameProcessor::logits_data() const {
  return api_.TensorData(api_.RunnerGetOutputTensor(current_, manifest_.output_name.c_str()));
}

size_t FrameProcessor::logits_bytes() const {
  return api_.TensorByteSize(api_.RunnerGetOutputTensor(current_, manifest_.output_name.c_str()));
}

}  // namespace mobdistill
