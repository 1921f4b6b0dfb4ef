#include "app_segmenter.h"

#include <chrono>
#include <cstring>
#include <utility>

namespace mobdistill {

Status AppSegmenter::Open(const Params& params, UpdateSecurity security) {
  MD_RETURN_IF_ERROR(model_.Load(params, &info_));
  processor_.reset(new FrameProcessor(&model_, params.init_mask));
  if (!model_.manifest().parameters.empty()) {
    updates_.reset(new UpdateSession(&model_.engine(), nullptr));
    MD_RETURN_IF_ERROR(updates_->Start(model_.manifest(), model_.engine().active().bytes(),
                                       std::move(security)));
  }
  needs_init_ = true;
  return Status::Ok();
}

void AppSegmenter::ResetVideo() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  needs_init_ = true;
}

int64_t AppSegmenter::model_version() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  return processor_ ? model_.engine().active().version() : 0;
}

int AppSegmenter::keyframe_interval() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  const KeyframeSchedule* schedule = processor_ ? processor_->schedule() : nullptr;
  return schedule ? schedule->interval() : 0;
}

Status AppSegmenter::SetKeyframeInterval(int interval) {
  std::lock_guard<std::mutex> lock(frame_mu_);  // between frames
  if (!processor_) return Status::Error("the engine is not open");
  return processor_->SetKeyframeInterval(interval);
}

int AppSegmenter::last_frame_keyframe() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  const KeyframeSchedule* schedule = processor_ ? processor_->schedule() : nullptr;
  if (!schedule || frames_processed_ == 0) return -1;
  return schedule->last_was_keyframe() ? 1 : 0;
}

UpdateTotals AppSegmenter::update_totals() {
  std::lock_guard<std::mutex> lock(frame_mu_);  // between frames by construction
  if (!updates_) return UpdateTotals();
  updates_->BetweenFrames(frames_processed_, false);
  return updates_->totals();
}

Status AppSegmenter::CheckFrameArgs(const uint8_t* rgb, int32_t row_stride,
                                    const uint8_t* mask) const {
  const size_t w = size_t(model_.manifest().width);
  if (rgb == nullptr || mask == nullptr || row_stride < 0 || size_t(row_stride) < w * 3) {
    return Status::Error("frame rows must hold " + std::to_string(w) + " RGB pixels (" +
                         std::to_string(w * 3) + " bytes); resize the frame to the model input");
  }
  return Status::Ok();
}

// The caller's rows may be padded (camera buffers); the model wants them packed.
void AppSegmenter::CopyFrame(const uint8_t* rgb, int32_t row_stride) {
  const size_t h = size_t(model_.manifest().height), w = size_t(model_.manifest().width);
  std::vector<uint8_t>* frame = processor_->frame();
  frame->resize(h * w * 3);
  for (size_t y = 0; y < h; ++y) {
    std::memcpy(frame->data() + y * w * 3, rgb + y * size_t(row_stride), w * 3);
  }
}

Status AppSegmenter::ProcessFrame(const uint8_t* rgb, int32_t row_stride, uint8_t* mask,
                                  FrameRecord* record) {
  std::lock_guard<std::mutex> lock(frame_mu_);
  if (!processor_) return Status::Error("the engine is not open");
  MD_RETURN_IF_ERROR(CheckFrameArgs(rgb, row_stride, mask));
  return RunFrame([&] {
    CopyFrame(rgb, row_stride);
    return Status::Ok();
  }, mask, record);
}

Status AppSegmenter::ProcessCameraImage(const CameraImage& image, uint8_t* mask,
                                        FrameRecord* record) {
  std::lock_guard<std::mutex> lock(frame_mu_);
  if (!processor_) return Status::Error("the engine is not open");
  if (mask == nullptr) return Status::Error("the mask buffer is null");
  MD_RETURN_IF_ERROR(CheckCameraImage(image));
  const Manifest& m = model_.manifest();
  return RunFrame([&] {
    std::vector<uint8_t>* frame = processor_->frame();
    frame->resize(size_t(m.height) * size_t(m.width) * 3);
    return converter_.Convert(image, m.width, m.height, frame->data());
  }, mask, record);
}

Status AppSegmenter::RunFrame(const std::function<Status()>& fill, uint8_t* mask,
                              FrameRecord* record) {
  const auto started = std::chrono::steady_clock::now();
  MD_RETURN_IF_ERROR(fill());
  const double fill_us = std::chrono::duration<double, std::micro>(
                             std::chrono::steady_clock::now() - started).count();
  if (updates_) updates_->BetweenFrames(frames_processed_, false);
  if (needs_init_) {
    if (processor_->stateful()) MD_RETURN_IF_ERROR(processor_->StartVideo(nullptr, &info_.init_ms));
    processor_->RestartSchedule();
    needs_init_ = false;
  }
  record->run = frames_processed_;
  record->frame_index = frames_processed_;
  record->phase = Phase::kMeasure;
  record->model_version = processor_->UseActiveModel();
  processor_->RecordSchedule(record);
  {
    const FrameScope frame(&model_.engine());  // update stages wait for the gap after it
    MD_RETURN_IF_ERROR(RunTimedStages(processor_.get(), record));
  }
  record->preprocess_us += fill_us;  // the frame's conversion is part of its preprocessing
  const std::vector<uint8_t>& labels = processor_->mask();
  std::memcpy(mask, labels.data(), labels.size());
  ++frames_processed_;
  return Status::Ok();
}

Status AppSegmenter::ApplyUpdateNow(std::vector<uint8_t> packet, UpdateRecord* record) {
  if (!updates_) {
    return Status::Error("this model cannot take updates: its manifest has no parameter_map; "
                         "re-export it with mobdistill export");
  }
  int64_t frame = 0;
  {
    std::lock_guard<std::mutex> lock(frame_mu_);
    updates_->BetweenFrames(frames_processed_, false);  // adopt an earlier prepared update first
    frame = frames_processed_;
  }
  *record = updates_->ApplyNow(std::move(packet), frame);
  return Status::Ok();
}

}  // namespace mobdistill
