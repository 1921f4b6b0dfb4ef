#include "frame_processor.h"

#include <chrono>

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
  ModelSlot& slot = model_->engine().active();
  current_ = slot.runner(model_->frame_signature());
  return slot.version();
}

Status FrameProcessor::Preprocess() {
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
  return Status::Ok();
}

const void* FrameProcessor::logits_data() const {
  return api_.TensorData(api_.RunnerGetOutputTensor(current_, manifest_.output_name.c_str()));
}

size_t FrameProcessor::logits_bytes() const {
  return api_.TensorByteSize(api_.RunnerGetOutputTensor(current_, manifest_.output_name.c_str()));
}

}  // namespace mobdistill
