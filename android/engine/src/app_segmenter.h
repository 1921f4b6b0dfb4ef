// AppSegmenter: frame-at-a-time segmentation for apps (the C facade, hence JNI and camera apps),
// without the benchmark loop. The caller's frames run through the same FrameProcessor as the
// benchmark's, and updates handed over by the app go through an UpdateSession.
// Thread-safe: one frame at a time; updates are adopted between frames.
#ifndef MOBDISTILL_ENGINE_APP_SEGMENTER_H_
#define MOBDISTILL_ENGINE_APP_SEGMENTER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "frame_processor.h"
#include "image_convert.h"
#include "params.h"
#include "runner.h"
#include "segmentation_model.h"
#include "update_session.h"

namespace mobdistill {

class AppSegmenter {
 public:
  AppSegmenter() = default;
  AppSegmenter(const AppSegmenter&) = delete;
  AppSegmenter& operator=(const AppSegmenter&) = delete;

  // Loads runtime + manifest + model and, if the manifest has a parameter_map, the update
  // pipeline with `security`. Only the runtime, model and delegate fields of `params` apply.
  Status Open(const Params& params, UpdateSecurity security);
  // One caller frame (uint8 RGB, rows `row_stride` bytes apart) -> class ids in `mask`.
  // Adopts a prepared update first (between frames). Stateful models run `init` on the first
  // frame after Open/ResetVideo (default mask: object 1 = the centre half), then `step` on it.
  Status ProcessFrame(const uint8_t* rgb, int32_t row_stride, uint8_t* mask,
                      FrameRecord* record);
  // One camera frame (RGBA or YUV planes, any size, rotated by the sensor): converted, rotated
  // upright and resized to the model input in one pass, timed as part of preprocessing. The
  // mask is the upright model-sized one (MaskToPreview maps it onto the preview).
  Status ProcessCameraImage(const CameraImage& image, uint8_t* mask, FrameRecord* record);
  void ResetVideo();
  // Decodes, verifies, patches, builds and warms on the calling thread (never the frame
  // thread); the new model is adopted before the next ProcessFrame. *record says the outcome
  // (applied = prepared; swapped_frame is filled when a frame adopts it).
  Status ApplyUpdateNow(std::vector<uint8_t> packet, UpdateRecord* record);

  const Manifest& manifest() const { return model_.manifest(); }
  const std::string& delegate_used() const { return info_.delegate_used; }
  int64_t model_version();
  // Delta-distilled models: the keyframe interval T in use (0 for other models), a new one from
  // the next frame on, and whether the last frame ran the keyframe signature (1), a delta frame
  // (0), or neither (-1: no frame yet, or not a delta-distilled model).
  int keyframe_interval();
  Status SetKeyframeInterval(int interval);
  int last_frame_keyframe();
  UpdateTotals update_totals();

 private:
  Status CheckFrameArgs(const uint8_t* rgb, int32_t row_stride, const uint8_t* mask) const;
  void CopyFrame(const uint8_t* rgb, int32_t row_stride);
  // `fill` writes the model-sized RGB frame; its time counts as preprocessing.
  Status RunFrame(const std::function<Status()>& fill, uint8_t* mask, FrameRecord* record);

  // Declared in teardown order, last first: updates stop before the model's slots go away.
  SegmentationModel model_;
  RunInfo info_;
  std::unique_ptr<FrameProcessor> processor_;
  std::unique_ptr<UpdateSession> updates_;  // null: the model cannot take updates
  CameraImageConverter converter_;  // used under frame_mu_
  std::mutex frame_mu_;  // one frame at a time; updates are adopted under it, between frames
  int64_t frames_processed_ = 0;
  bool needs_init_ = true;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_APP_SEGMENTER_H_
