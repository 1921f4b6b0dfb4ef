// FrameProcessor: one frame through the model, shared by the benchmark loop and the app facade.
// Preprocess writes the uint8 RGB frame (scaled to the manifest's input range) and, for a
// stateful model, the memory queue's carried tensors; RunImpl is the Invoke alone; Postprocess
// takes the argmax mask and pushes this frame's carry outputs onto the queue.
// A delta-distilled model runs `keyframe` or `delta` per frame as its KeyframeSchedule says;
// Postprocess writes the frame's carried state straight into the delta signature's inputs when
// the next frame is a delta frame (one copy, no staging buffer).
#ifndef MOBDISTILL_ENGINE_FRAME_PROCESSOR_H_
#define MOBDISTILL_ENGINE_FRAME_PROCESSOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keyframe_schedule.h"
#include "memory_queue.h"
#include "runner.h"
#include "segmentation_model.h"
#include "status.h"

namespace mobdistill {

class FrameProcessor : public FrameStages {
 public:
  // `init_mask`: a HxW uint8 label file for a stateful model's first frame; empty: object 1 is
  // the centre half of the frame.
  FrameProcessor(SegmentationModel* model, std::string init_mask);

  // The uint8 RGB HxWx3 frame the next stages (or StartVideo) read; callers fill it.
  std::vector<uint8_t>* frame() { return &frame_; }
  bool stateful() const { return queue_ != nullptr; }
  // Delta-distilled models: the keyframe schedule (null for other models).
  const KeyframeSchedule* schedule() const { return schedule_.get(); }
  // A new video: the next frame of a delta-distilled model is a keyframe.
  void RestartSchedule();
  // Delta-distilled models: a new keyframe interval T (>= 1) from the next frame on.
  Status SetKeyframeInterval(int interval);
  // Stateful models: runs `init` on the first frame of a video and seeds the memory queue.
  // `read_first_frame` (optional) fills frame() first, inside the timed init; returns its time.
  Status StartVideo(const std::function<Status(std::vector<uint8_t>*)>& read_first_frame,
                    double* init_ms);
  // Picks the active model slot for the next frame (and, for a delta-distilled model, its
  // signature); the frame runs entirely on it. Returns its version.
  int64_t UseActiveModel();
  // The frame's schedule fields (keyframe or delta, and why) for its record.
  void RecordSchedule(FrameRecord* record) const;

  Status Preprocess() override;
  Status RunImpl() override;
  Status Postprocess() override;

  const std::vector<uint8_t>& mask() const { return mask_; }  // class id per pixel
  // The raw float32 logits of the last frame (for --output_logits).
  const void* logits_data() const;
  size_t logits_bytes() const;

 private:
  Status WriteFrameInput(TfLiteSignatureRunner* r, const std::string& name);
  Status InitLabels(std::vector<uint8_t>* labels) const;
  MemoryQueue::Entry CarryOutputs(TfLiteSignatureRunner* r) const;
  void CarryDeltaState();

  SegmentationModel* model_;
  const TfLiteApi& api_;
  const Manifest& manifest_;
  std::string init_mask_;
  std::string frame_input_;  // frame input name of the per-frame signature
  std::string keyframe_input_;  // delta-distilled: frame input name of the keyframe signature
  std::unique_ptr<MemoryQueue> queue_;  // stateful models only
  std::unique_ptr<KeyframeSchedule> schedule_;  // delta-distilled models only
  std::vector<uint8_t> frame_, mask_;
  // Fixed from UseActiveModel to Postprocess: the slot, the signature and its frame input.
  ModelSlot* slot_ = nullptr;
  TfLiteSignatureRunner* current_ = nullptr;
  const std::string* current_input_ = &frame_input_;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_FRAME_PROCESSOR_H_
