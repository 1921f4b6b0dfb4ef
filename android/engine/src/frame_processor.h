// FrameProcessor: one frame through the model, shared by the benchmark loop and the app facade.
// Preprocess writes the uint8 RGB frame (scaled to the manifest's input range) and, for a
// stateful model, the memory queue's carried tensors; RunImpl is the Invoke alone; Postprocess
// takes the argmax mask and pushes this frame's carry outputs onto the queue.
#ifndef MOBDISTILL_ENGINE_FRAME_PROCESSOR_H_
#define MOBDISTILL_ENGINE_FRAME_PROCESSOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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
  // Stateful models: runs `init` on the first frame of a video and seeds the memory queue.
  // `read_first_frame` (optional) fills frame() first, inside the timed init; returns its time.
  Status StartVideo(const std::function<Status(std::vector<uint8_t>*)>& read_first_frame,
                    double* init_ms);
  // Picks the active model slot for the next frame; the frame runs entirely on it. Returns
  // its version.
  int64_t UseActiveModel();

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

  SegmentationModel* model_;
  const TfLiteApi& api_;
  const Manifest& manifest_;
  std::string init_mask_;
  std::string frame_input_;  // frame input name of the per-frame signature
  std::unique_ptr<MemoryQueue> queue_;  // stateful models only
  std::vector<uint8_t> frame_, mask_;
  TfLiteSignatureRunner* current_ = nullptr;  // fixed from Preprocess to Postprocess
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_FRAME_PROCESSOR_H_
