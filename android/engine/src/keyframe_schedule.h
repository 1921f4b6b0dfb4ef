// KeyframeSchedule: which signature a delta-distilled model runs on each frame (the Delta
// Distillation supplement's Algorithm 2), independent of TFLite.
//
// Every T-th frame is a keyframe (the original blocks recompute the carried state); the frames
// between are delta frames (z_t = z_{t-1} + g(x_t, x_{t-1}) on the carried state). Counting
// restarts at every keyframe, so with nothing forcing one the keyframes are frames 0, T, 2T, ...
// exactly as in Algorithm 2. A keyframe is forced when
//   * a video starts (no state yet),
//   * the model version changed (a hot swap or sparse update: state made by the old weights is
//     never fed to the new ones; the new model recomputes it),
//   * the state for the delta frame is not in place (the previous frame failed part-way).
// So no frame is ever more than T-1 delta steps away from a keyframe of the model it runs on.
#ifndef MOBDISTILL_ENGINE_KEYFRAME_SCHEDULE_H_
#define MOBDISTILL_ENGINE_KEYFRAME_SCHEDULE_H_

#include <cstdint>

namespace mobdistill {

// Why a frame is a keyframe (or kNone for a delta frame); the per-frame JSONL names it.
enum class KeyframeReason { kNone, kInterval, kVideoStart, kModelChanged, kStateMissing };
const char* KeyframeReasonName(KeyframeReason reason);  // "interval", "video_start", ...

class KeyframeSchedule {
 public:
  explicit KeyframeSchedule(int interval);  // T >= 1 (T = 1: every frame is a keyframe)

  // Decides the frame about to run on model `model_version`: true = keyframe. Consumes the
  // carried state: the next frame is a delta frame only after MarkStateReady().
  bool Decide(int64_t model_version);
  // True when the frame after the one just decided is a delta frame unless a keyframe is
  // forced; the caller then carries this frame's state for it.
  bool NextIsDelta() const { return started_ && position_ + 1 < interval_; }
  // The state for the next delta frame is in place (this frame's outputs were carried).
  void MarkStateReady() { state_ready_ = true; }
  // A new video: the next frame is a keyframe.
  void Restart();
  // A new T (>= 1) from the next frame on; the count since the last keyframe is kept, so a
  // shorter T than the frames already run since it makes the next frame a keyframe.
  void SetInterval(int interval) { interval_ = interval < 1 ? 1 : interval; }

  int interval() const { return interval_; }
  bool last_was_keyframe() const { return position_ == 0 && started_; }
  KeyframeReason last_reason() const { return last_reason_; }

 private:
  int interval_;
  bool started_ = false;      // a frame was decided since construction or Restart()
  bool state_ready_ = false;
  int position_ = 0;          // of the last decided frame in its period: 0 = keyframe
  int64_t model_version_ = 0;
  KeyframeReason last_reason_ = KeyframeReason::kNone;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_KEYFRAME_SCHEDULE_H_
