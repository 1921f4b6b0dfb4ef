// Engine::WaitForFrameGap, YieldToFrames and WaitForRoom: update work starts between frames,
// pauses under them, starts a stage that cannot pause only where it fits, and never waits for
// frames that stopped coming or that leave no gap.
#include <atomic>
#include <chrono>
#include <thread>

#include "check.h"
#include "model_slot.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double Ms(Clock::time_point began) {
  return std::chrono::duration<double, std::milli>(Clock::now() - began).count();
}

double WaitMs(mobdistill::Engine* engine) {
  const auto began = Clock::now();
  engine->WaitForFrameGap();
  return std::chrono::duration<double, std::milli>(Clock::now() - began).count();
}

// Frames of `busy` every `period`, `count` times, on their own thread.
std::thread PacedFrames(mobdistill::Engine* engine, milliseconds period, milliseconds busy,
                        int count) {
  return std::thread([=] {
    auto next = Clock::now();
    for (int i = 0; i < count; ++i) {
      std::this_thread::sleep_until(next);
      mobdistill::FrameScope frame(engine);
      std::this_thread::sleep_for(busy);
      next += period;
    }
  });
}

}  // namespace

int main() {
  mobdistill::Engine engine(nullptr, mobdistill::SlotConfig());
  // No frame yet (an update before the camera starts): no waiting, and no gap to judge by.
  CHECK(WaitMs(&engine) < 5);
  CHECK(engine.FrameGapUs() < 0);

  // A stage asked for during a frame starts only when that frame ends.
  std::atomic<bool> started{false};
  std::thread stage;
  {
    mobdistill::FrameScope frame(&engine);
    stage = std::thread([&] {
      engine.WaitForFrameGap();
      started = true;
    });
    std::this_thread::sleep_for(milliseconds(60));
    CHECK(!started.load());
  }
  stage.join();
  CHECK(started.load());

  // Paced frames (40 ms period, 20 ms each): waits end right after a frame, and a stage asked
  // for late in a gap waits for the next frame's end rather than starting under it.
  std::thread frames = PacedFrames(&engine, milliseconds(40), milliseconds(20), 12);
  std::this_thread::sleep_for(milliseconds(170));  // 4 frames in: averages settled
  int late_waits = 0;
  for (int i = 0; i < 4; ++i) {
    engine.WaitForFrameGap();  // returns inside a gap, early in it
    std::this_thread::sleep_for(milliseconds(15));  // now late in that gap (20 ms long)
    const double waited = WaitMs(&engine);
    late_waits += waited > 10 ? 1 : 0;  // waited for the next frame to end (~25 ms)
    CHECK(waited < 60);
  }
  CHECK(late_waits >= 3);
  frames.join();

  // Paced update work (YieldToFrames) runs between frames: a slice asked for under a frame waits
  // for its end; between frames it goes on at once.
  {
    std::thread paced = PacedFrames(&engine, milliseconds(40), milliseconds(20), 10);
    std::this_thread::sleep_for(milliseconds(130));  // averages settled: 20 ms gaps
    CHECK(engine.FrameGapUs() > 12000 && engine.FrameGapUs() < 25000);
    int waited_under_frames = 0, immediate_between = 0;
    for (int i = 0; i < 5; ++i) {
      engine.WaitForFrameGap();  // early in a gap
      const auto began = Clock::now();
      engine.YieldToFrames();
      immediate_between += Ms(began) < 2 ? 1 : 0;
      std::this_thread::sleep_for(milliseconds(25));  // now under the next frame
      const auto under = Clock::now();
      engine.YieldToFrames();
      waited_under_frames += Ms(under) > 3 ? 1 : 0;
    }
    CHECK(immediate_between >= 4);
    CHECK(waited_under_frames >= 4);
    paced.join();
  }

  // WaitForRoom: work that fits what is left of the gap starts at once; work that does not
  // waits for the next gap; work longer than any gap starts at a gap's start.
  {
    std::thread paced = PacedFrames(&engine, milliseconds(40), milliseconds(20), 14);
    std::this_thread::sleep_for(milliseconds(130));
    int fits = 0, deferred = 0, at_start = 0;
    for (int i = 0; i < 3; ++i) {
      engine.WaitForFrameGap();
      auto began = Clock::now();
      engine.WaitForRoom(5000);  // 5 ms of a ~20 ms gap
      fits += Ms(began) < 2 ? 1 : 0;
      std::this_thread::sleep_for(milliseconds(12));  // ~8 ms of the gap left
      began = Clock::now();
      engine.WaitForRoom(15000);
      deferred += Ms(began) > 10 ? 1 : 0;  // after the next frame (~28 ms)
      began = Clock::now();
      engine.WaitForRoom(1e6);  // no gap holds it: the start of the next one
      at_start += Ms(began) > 10 && Ms(began) < 60 ? 1 : 0;
    }
    CHECK(fits >= 2);
    CHECK(deferred >= 2);
    CHECK(at_start >= 2);
    paced.join();
  }

  // Back-to-back frames leave no gap: neither YieldToFrames nor WaitForRoom waits (the work
  // would never end, or a stage would wait for a gap that never comes).
  {
    std::thread busy = PacedFrames(&engine, milliseconds(20), milliseconds(20), 40);
    std::this_thread::sleep_for(milliseconds(400));  // the averages forget the 40 ms period
    CHECK(engine.FrameGapUs() >= 0 && engine.FrameGapUs() < mobdistill::Engine::kMinPacedGapUs);
    int waited = 0;
    for (int i = 0; i < 5; ++i) {
      auto began = Clock::now();
      engine.YieldToFrames();
      waited += Ms(began) > 3 ? 1 : 0;
      std::this_thread::sleep_for(milliseconds(7));
      began = Clock::now();
      engine.WaitForRoom(5000);
      waited += Ms(began) > 3 ? 1 : 0;
    }
    CHECK(waited <= 2);
    busy.join();
  }

  // Pacing off (a build raised after too many frames): nothing waits, even under a frame.
  {
    std::thread paced = PacedFrames(&engine, milliseconds(40), milliseconds(20), 8);
    std::this_thread::sleep_for(milliseconds(130));
    engine.SetPacing(false);
    int waited = 0;
    for (int i = 0; i < 4; ++i) {
      engine.WaitForFrameGap();
      std::this_thread::sleep_for(milliseconds(25));  // under the next frame
      auto began = Clock::now();
      engine.YieldToFrames();
      engine.WaitForRoom(15000);
      waited += Ms(began) > 3 ? 1 : 0;
    }
    CHECK(waited == 0);
    engine.SetPacing(true);
    paced.join();
  }

  // Frames stopped (camera paused): a stage waits at most kFramesStoppedMs, then not at all.
  std::this_thread::sleep_for(milliseconds(mobdistill::Engine::kFramesStoppedMs + 50));
  CHECK(WaitMs(&engine) < 5);
  CHECK(engine.FrameGapUs() < 0);
  return TEST_MAIN_RETURN();
}
