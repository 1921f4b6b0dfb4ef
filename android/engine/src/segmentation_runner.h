// The concrete Runner: a segmentation student from a mobdistill manifest, stateless
// (serving_default per frame) or stateful (init once, then step with the memory queue).
#ifndef MOBDISTILL_ENGINE_SEGMENTATION_RUNNER_H_
#define MOBDISTILL_ENGINE_SEGMENTATION_RUNNER_H_

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "manifest.h"
#include "memory_queue.h"
#include "model_slot.h"
#include "params.h"
#include "runner.h"
#include "tflite_c_api.h"

namespace mobdistill {

// Frames: a raw uint8 RGB file (HxWx3 per frame, cycled) or deterministic random frames.
class FrameSource {
 public:
  ~FrameSource();
  Status OpenFile(const std::string& path, int height, int width);
  void UseRandom(int height, int width, int count, uint32_t seed);
  Status Read(int64_t index, std::vector<uint8_t>* frame);  // index is taken modulo count()
  int64_t count() const { return count_; }

 private:
  std::FILE* file_ = nullptr;
  std::vector<uint8_t> random_;  // count_ frames back to back
  size_t frame_bytes_ = 0;
  int64_t count_ = 0;
};

class SegmentationRunner : public Runner {
 public:
  explicit SegmentationRunner(Params params);
  ~SegmentationRunner() override;

  // Hot swap from the outside (JNI, the future update decoder): see Engine::PrepareSwap.
  Status PrepareSwap(std::vector<uint8_t> new_model_bytes);
  const std::vector<uint8_t>& last_mask() const { return mask_; }

 protected:
  Status Init() override;
  Status PrepareInputs() override;
  Status BeforeRun(int64_t run, FrameRecord* record) override;
  Status Preprocess() override;
  Status RunImpl() override;
  Status Postprocess() override;
  Status AfterRun(int64_t run) override;
  RunInfo Info() const override { return info_; }
  std::vector<SwapRecord> Swaps() const override { return swaps_; }

 private:
  Status WriteFrameInput(TfLiteSignatureRunner* r, const std::string& name);
  Status RunInit();
  Status ApplySwapIfReady(int64_t run);

  Params params_;
  Manifest manifest_;
  TfLiteApi api_;
  std::unique_ptr<Engine> engine_;
  FrameSource frames_;
  std::unique_ptr<MemoryQueue> queue_;
  RunInfo info_;
  std::vector<SwapRecord> swaps_;
  std::string frame_input_;   // frame input name of the per-frame signature
  std::string run_signature_; // serving_default or step
  int64_t frame_offset_ = 0;  // stateful: frame 0 feeds init
  std::vector<uint8_t> frame_, mask_;
  ModelSlot* slot_ = nullptr;  // the slot this frame runs on (fixed from Preprocess to Postprocess)
  TfLiteSignatureRunner* current_ = nullptr;
  std::FILE* masks_out_ = nullptr;
  std::FILE* logits_out_ = nullptr;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_SEGMENTATION_RUNNER_H_
