// Algorithm 2's schedule: keyframes at 0, T, 2T, ... with the carried state in place, and the
// keyframes a new video, a new model version or missing state force (counting restarts there).
#include <string>

#include "check.h"
#include "keyframe_schedule.h"

using mobdistill::KeyframeReason;
using mobdistill::KeyframeReasonName;
using mobdistill::KeyframeSchedule;

// Runs `frames` frames on `version`, carrying state after each one the schedule asks for;
// returns "K" per keyframe and "d" per delta frame.
static std::string Pattern(KeyframeSchedule* s, int frames, int64_t version = 1) {
  std::string out;
  for (int i = 0; i < frames; ++i) {
    out += s->Decide(version) ? "K" : "d";
    if (s->NextIsDelta()) s->MarkStateReady();
  }
  return out;
}

int main() {
  KeyframeSchedule four(4);
  CHECK_EQ(four.interval(), 4);
  CHECK(!four.last_was_keyframe());  // nothing decided yet
  CHECK_EQ(Pattern(&four, 10), std::string("KdddKdddKd"));

  KeyframeSchedule one(1);  // T = 1: the original model on every frame
  CHECK_EQ(Pattern(&one, 4), std::string("KKKK"));
  CHECK(!one.NextIsDelta());
  KeyframeSchedule two(2);
  CHECK_EQ(Pattern(&two, 5), std::string("KdKdK"));

  // Reasons: the first frame starts the video, then the interval.
  KeyframeSchedule s(3);
  CHECK(s.Decide(7));
  CHECK(s.last_reason() == KeyframeReason::kVideoStart);
  CHECK(s.last_was_keyframe());
  CHECK(s.NextIsDelta());
  s.MarkStateReady();
  CHECK(!s.Decide(7));
  CHECK(s.last_reason() == KeyframeReason::kNone);
  CHECK(!s.last_was_keyframe());
  s.MarkStateReady();
  CHECK(!s.Decide(7));
  CHECK(!s.NextIsDelta());  // the next frame completes the period
  CHECK(s.Decide(7));
  CHECK(s.last_reason() == KeyframeReason::kInterval);

  // A new model version mid-period forces a keyframe and restarts the count there.
  s.MarkStateReady();
  CHECK(!s.Decide(7));
  s.MarkStateReady();
  CHECK(s.Decide(8));
  CHECK(s.last_reason() == KeyframeReason::kModelChanged);
  s.MarkStateReady();
  CHECK_EQ(Pattern(&s, 5, 8), std::string("ddKdd"));

  // State not carried (the frame failed after Decide): the next frame is a keyframe.
  KeyframeSchedule lost(4);
  CHECK(lost.Decide(1));
  CHECK(lost.Decide(1));  // no MarkStateReady
  CHECK(lost.last_reason() == KeyframeReason::kStateMissing);
  lost.MarkStateReady();
  CHECK(!lost.Decide(1));

  // Restart (a new video) forces a keyframe even mid-period.
  lost.Restart();
  CHECK(!lost.last_was_keyframe());
  CHECK(lost.Decide(1));
  CHECK(lost.last_reason() == KeyframeReason::kVideoStart);

  // A new T takes effect at once, counted from the last keyframe.
  KeyframeSchedule adapt(8);
  CHECK_EQ(Pattern(&adapt, 3), std::string("Kdd"));
  adapt.SetInterval(2);
  CHECK_EQ(adapt.interval(), 2);
  CHECK_EQ(Pattern(&adapt, 3), std::string("KdK"));
  adapt.SetInterval(3);
  CHECK_EQ(Pattern(&adapt, 4), std::string("ddKd"));

  CHECK_EQ(std::string(KeyframeReasonName(KeyframeReason::kModelChanged)),
           std::string("model_changed"));
  CHECK_EQ(std::string(KeyframeReasonName(KeyframeReason::kStateMissing)),
           std::string("state_missing"));
  return TEST_MAIN_RETURN();
}
