// Engine::WaitForFrameGap: update stages start between frames, never under one, and never wait
// for frames that stopped coming.
#include <atomic>
#include <chrono>
#include <thread>

#include "check.h"
#include "model_slot.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

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
  // No frame yet (an update before the camera starts): no waiting.
  CHECK(WaitMs(&engine) < 5);

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

  // Frames stopped (camera paused): a stage waits at most kFramesStoppedMs, then not at all.
  std::this_thread::sleep_for(milliseconds(mobdistill::Engine::kFramesStoppedMs + 50));
  CHECK(WaitMs(&engine) < 5);
  TEST_MAIN_RETURN();
}
