#include "keyframe_schedule.h"

namespace mobdistill {

const char* KeyframeReasonName(KeyframeReason reason) {
  switch (reason) {
    case KeyframeReason::kNone: return "none";
    case KeyframeReason::kInterval: return "interval";
    case KeyframeReason::kVideoStart: return "video_start";
    case KeyframeReason::kModelChanged: return "model_changed";
    case KeyframeReason::kStateMissing: return "state_missing";
  }
  return "none";
}

KeyframeSchedule::KeyframeSchedule(int interval) : interval_(interval < 1 ? 1 : interval) {}

bool KeyframeSchedule::Decide(int64_t model_version) {
  KeyframeReason reason = KeyframeReason::kNone;
  if (!started_) {
    reason = KeyframeReason::kVideoStart;
  } else if (model_version != model_version_) {
    reason = KeyframeReason::kModelChanged;
  } else if (position_ + 1 >= interval_) {
    reason = KeyframeReason::kInterval;
  } else if (!state_ready_) {
    reason = KeyframeReason::kStateMissing;
  }
  started_ = true;
  state_ready_ = false;
  model_version_ = model_version;
  last_reason_ = reason;
  position_ = reason == KeyframeReason::kNone ? position_ + 1 : 0;
  return reason != KeyframeReason::kNone;
}

void KeyframeSchedule::Restart() {
  started_ = false;
  state_ready_ = false;
  position_ = 0;
}

}  // namespace mobdistill
