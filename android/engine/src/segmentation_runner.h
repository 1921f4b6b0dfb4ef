// The concrete Runner: a segmentation student from a mobdistill manifest, stateless
// (serving_default per frame) or stateful (init once, then step with the memory queue).
#ifndef MOBDISTILL_ENGINE_SEGMENTATION_RUNNER_H_
#define MOBDISTILL_ENGINE_SEGMENTATION_RUNNER_H_

#include <array>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "manifest.h"
#include "memory_queue.h"
#include "model_slot.h"
#include "params.h"
#include "runner.h"
#include "tflite_c_api.h"
#include "update_manager.h"
#include "update_sources.h"

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

// How streamed updates are authenticated and remembered: from the flags (Init) or from the
// facade's options (Open).
struct UpdateSecurity {
  std::vector<uint8_t> hmac_key;  // empty: no key, so every packet is refused unless insecure
  std::array<uint8_t, update::kDeviceIdBytes> device_id{};
  bool insecure = false;          // explicit opt-out: unauthenticated packets are accepted
  std::string state_file;         // empty: the high-water sequence lives in memory only
};

// What the app's stats need of the update log: totals and the last record, not the ring.
struct UpdateTotals {
  uint64_t received = 0, applied = 0, rejected = 0;
  std::map<std::string, uint64_t> rejected_by_reason;
  bool has_last = false;
  UpdateRecord last;
};

class SegmentationRunner : public Runner {
 public:
  explicit SegmentationRunner(Params params);
  ~SegmentationRunner() override;

  // Hot swap from the outside: see Engine::PrepareSwap.
  Status PrepareSwap(std::vector<uint8_t> new_model_bytes);
  const std::vector<uint8_t>& last_mask() const { return mask_; }

  // ---- Frame-by-frame use without the benchmark loop (the JNI facade, camera apps).
  // Loads runtime + manifest + model (Init) and, if the manifest has a parameter_map, the
  // update pipeline with `security`.
  Status Open(UpdateSecurity security);
  // One caller frame (uint8 RGB, rows `row_stride` bytes apart) -> class ids in `mask`.
  // Adopts a prepared update first (between frames). Stateful models run `init` on the first
  // frame after Open/ResetVideo (default mask: object 1 = the centre half), then `step` on it.
  Status ProcessFrame(const uint8_t* rgb, int32_t row_stride, uint8_t* mask,
                      FrameRecord* record);
  void ResetVideo();
  // Decodes, verifies, patches, builds and warms on the calling thread (never the frame
  // thread); the new model is adopted before the next ProcessFrame. *record says the outcome
  // (applied = prepared; swapped_frame is filled when a frame adopts it).
  Status ApplyUpdateNow(std::vector<uint8_t> packet, UpdateRecord* record);
  const Manifest& manifest() const { return manifest_; }
  std::string delegate_used() const { return info_.delegate_used; }
  int64_t model_version();
  int64_t frames_processed() const { return frames_processed_; }
  UpdateTotals update_totals();

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
  UpdateLog Updates() const override { return update_log_; }
  Status Finish(int64_t runs) override;

 private:
  Status WriteFrameInput(TfLiteSignatureRunner* r, const std::string& name);
  Status RunInit(bool read_source_frame);
  Status ApplySwapIfReady(int64_t run);
  Status SetUpUpdates(std::vector<uint8_t> base, UpdateSecurity security);
  Status StartUpdateSources();
  void CollectUpdates(int64_t run, bool wait);  // between frames: adopt + report
  void Report(std::vector<UpdateRecord>* records);

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
  // Streamed updates.
  std::unique_ptr<UpdateManager> updates_;
  DirUpdateWatcher dir_watcher_;
  TcpUpdateListener tcp_listener_;
  std::vector<ScheduledPacket> schedule_;
  size_t schedule_next_ = 0;
  UpdateLog update_log_;
  // Frame-by-frame use (facade): one frame at a time; ApplyUpdateNow adopts between frames.
  std::mutex frame_mu_;
  int64_t frames_processed_ = 0;
  bool needs_init_ = true;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_SEGMENTATION_RUNNER_H_
