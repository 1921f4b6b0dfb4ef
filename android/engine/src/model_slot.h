// ModelSlot: one loaded model (its bytes, TFLite model, delegate, interpreter and signature
// runners) and Engine: the double buffer that hot-swaps slots between frames.
//
// Why a second slot instead of patching in place: XNNPACK packs weights when the interpreter is
// built/first invoked, so changing the flatbuffer under a live interpreter changes nothing. An
// update therefore goes into new bytes; PrepareSwap builds and warms a new slot on a builder
// thread while frames keep running on the old one, and the frame thread adopts it between two
// frames (ApplyPendingSwap). A frame therefore always runs entirely on one slot.
//
// Build priority: a background build competes with frames for the same cores. The thread that
// builds (update worker, --swap_graph builder) can run as SCHED_IDLE (BuildInBackground), so it
// only gets CPU time the frame path leaves. XNNPACK's thread pool is created by the building
// thread and inherits its policy: the slot remembers those threads and the frame thread gives
// them its own scheduling when it adopts the slot, so frames never run on idle-priority threads.
#ifndef MOBDISTILL_ENGINE_MODEL_SLOT_H_
#define MOBDISTILL_ENGINE_MODEL_SLOT_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "status.h"
#include "tflite_c_api.h"

namespace mobdistill {

// A thread's CPU scheduling: policy (SCHED_OTHER, SCHED_IDLE, ...) and nice value.
struct ThreadScheduling {
  int policy = 0;
  int nice = 0;
};
ThreadScheduling CurrentThreadScheduling();
// "idle" when the calling thread runs as SCHED_IDLE, else "normal".
const char* ThreadPriorityName();
// Whether this process may move a SCHED_IDLE thread back to the frame thread's scheduling
// (root, CAP_SYS_NICE, or RLIMIT_NICE allowing it, as Android grants apps). Probed once on a
// throwaway thread; without it builds stay at normal priority.
bool IdleBuildsRestorable();
// Makes the calling thread SCHED_IDLE if IdleBuildsRestorable(); returns the priority the
// calling thread now has ("idle" or "normal").
std::string BuildInBackground();
// Gives `tid` and every SCHED_IDLE thread of this process not in `spared` (sorted) the calling
// thread's scheduling: a background build that waited too long finishes at frame priority.
void RaiseIdleThreads(pid_t tid, const std::vector<pid_t>& spared);
// Frames a background build (an update, or --swap_graph) may run idle, counted from the first
// frame that could have adopted it, before RaiseIdleThreads moves it to frame priority.
constexpr int64_t kRaiseIdleBuildAfterFrames = 3;
// A paced update (Engine::YieldToFrames) still running this many frames after its packet arrived
// stops waiting for gaps: frames left it too few (a slow or busy device), and the swap matters
// more than one frame (measured, DeepLab 256x512 at 30 fps on 2 threads: paced γ = 20 % updates
// need 3-4 gaps, so 3 would unpace most of them).
constexpr int64_t kUnpaceBuildAfterFrames = 4;
pid_t CurrentThreadId();
std::vector<pid_t> ProcessThreadIds();  // sorted

struct SlotConfig {
  int32_t num_threads = 1;
  bool use_xnnpack = true;
  bool use_gpu = false;
  bool use_nnapi = false;
  std::vector<std::string> signatures;  // must all exist in the model
  // (signature, tensor name) the engine reads or writes; each must exist. Their byte sizes
  // fingerprint the I/O contract a swapped-in model has to keep.
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
};

// Called before each stage of a build (interpreter, delegate, tensor allocation) and between
// slices of work: the update worker waits there for a gap between frames. Empty: never called.
using Pace = std::function<void()>;

class ModelSlot {
 public:
  static Status Create(const TfLiteApi* api, const SlotConfig& config,
                       std::vector<uint8_t> bytes, int64_t version,
                       std::unique_ptr<ModelSlot>* out, const Pace& before_stage = {});
  ~ModelSlot();
  ModelSlot(const ModelSlot&) = delete;
  ModelSlot& operator=(const ModelSlot&) = delete;

  TfLiteSignatureRunner* runner(const std::string& signature) const;
  // Invokes every signature once with zeroed inputs (first-run costs of an arbitrary new graph,
  // and proof that it runs).
  Status Warm();
  // Writes zeros over every input and output tensor of every signature, so their pages are
  // mapped before the first frame. Measured (DeepLab 256x512, 2 threads): these page faults
  // (~2800, the 11 MB logits) are what made a new interpreter's first Invoke slower than the
  // next; XNNPACK maps its workspace when the interpreter is built. A patched model has the
  // graph of one that already ran, so an update needs no zero-input Invoke (a full frame of CPU).
  void TouchTensors(const Pace& pace = {});
  // Byte sizes of SlotConfig's inputs then outputs, in order.
  std::vector<size_t> IoByteSizes() const { return io_sizes_; }

  int64_t version() const { return version_; }
  const std::string& delegate_used() const { return delegate_used_; }
  const std::vector<std::string>& warnings() const { return warnings_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  // Tears the interpreter down and hands the model bytes back (the slot is then unusable).
  std::vector<uint8_t> Dismantle();
  // Threads created while this slot was built at idle priority (XNNPACK's pool, kernels' pools):
  // given the frame thread's scheduling when the slot is adopted.
  const std::vector<pid_t>& build_threads() const { return build_threads_; }

 private:
  friend class Engine;
  explicit ModelSlot(const TfLiteApi* api) : api_(api) {}
  Status Build(const SlotConfig& config, const Pace& before_stage);
  Status BuildInterpreter(const SlotConfig& config, TfLiteDelegate* delegate, bool* delegated,
                          const Pace& before_stage);
  void DestroyInterpreter();
  std::string TakeErrors();
  static void Report(void* self, const char* format, va_list args);

  const TfLiteApi* api_;
  std::vector<uint8_t> bytes_;  // TfLiteModelCreate does not copy: must outlive model_
  int64_t version_ = 0;
  TfLiteModel* model_ = nullptr;
  TfLiteInterpreterOptions* options_ = nullptr;
  TfLiteInterpreter* interpreter_ = nullptr;
  TfLiteDelegate* delegate_ = nullptr;
  void (*delegate_delete_)(TfLiteDelegate*) = nullptr;
  std::map<std::string, TfLiteSignatureRunner*> runners_;
  std::vector<std::string> signature_order_;
  std::vector<size_t> io_sizes_;
  std::vector<std::pair<std::string, std::string>> input_refs_, output_refs_;
  std::string delegate_used_ = "cpu";
  std::vector<std::string> warnings_;
  std::mutex errors_mu_;
  std::string errors_;  // text from the TFLite error reporter
  std::vector<pid_t> build_threads_;
};

struct SwapEvent {
  int64_t version = 0;
  double build_ms = 0;     // builder thread: create + allocate + warm
  double create_us = 0;    // model + delegate + interpreter + AllocateTensors
  double warm_us = 0;      // first-run setup: Warm (--swap_graph) or TouchTensors (updates)
  std::string sha256;      // of the new bytes (empty for streamed updates: not computed)
  std::string priority;    // the building thread's: "idle" or "normal"
  int32_t threads = 0;     // threads the new slot runs frames with (SlotConfig::num_threads)
};

class Engine {
 public:
  Engine(const TfLiteApi* api, SlotConfig config) : api_(api), config_(std::move(config)) {}
  ~Engine();

  Status Load(std::vector<uint8_t> bytes, int64_t version);  // synchronous, first slot
  ModelSlot& active() { return *active_; }

  // Builds and warms a slot from `new_model_bytes` on a builder thread; returns at once.
  // Fails if another swap is still being prepared. The new slot gets version active+1.
  Status PrepareSwap(std::vector<uint8_t> new_model_bytes);
  // Synchronous variant for a caller that is already off the frame thread (the update worker):
  // builds a slot with `version` on the calling thread, started between two frames
  // (WaitForFrameGap), maps its tensors (TouchTensors: the bytes are a patched copy of the
  // running graph) and, on success, leaves it pending for ApplyPendingSwap. Fails (nothing
  // pending) if a swap is already pending.
  // With `paced`, each build stage waits for room in a gap (WaitForRoom) and mapping the
  // tensors pauses while a frame runs (YieldToFrames).
  Status BuildPending(std::vector<uint8_t> new_model_bytes, int64_t version, SwapEvent* event,
                      bool paced = false);
  bool pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_ready_;
  }
  // Called by the frame thread between frames: adopts a ready slot. Returns true if swapped.
  // A failed build is reported through `*failure` (and the old slot stays active). The slot's
  // build threads get the calling thread's scheduling; the old slot is kept for
  // ReleaseRetired, so the frame thread never pays for tearing an interpreter down.
  bool ApplyPendingSwap(SwapEvent* event, Status* failure);
  // Destroys the slot the last swap retired (off the frame thread: the update worker) and
  // returns its model bytes, for the next update to patch into: their pages are mapped already.
  std::vector<uint8_t> ReleaseRetired();
  // Blocks until the builder thread (if any) is done.
  void WaitForBuilder();
  bool swap_in_flight() const { return building_.load(); }
  // Frame thread: gives the PrepareSwap builder (and what it created) the calling thread's
  // scheduling, so other work on the device cannot starve a swap forever (once per swap).
  void RaiseSwapBuilder();
  // Whether RaiseSwapBuilder raised the last PrepareSwap's builder.
  bool swap_builder_raised() const { return swap_builder_raised_.load(); }

  // Frame thread: a frame's timed stages begin / end (FrameScope).
  void BeginFrame();
  void EndFrame();
  // Build stages (decode, patch, build, map) run between frames: even a SCHED_IDLE build slows
  // a 2-thread frame it overlaps (measured: invoke p99 1.35x with an idle spinner beside paced
  // frames, none with 1 frame thread: the pool's wake-ups). Returns at once while early in a
  // gap between frames, when no frame has run for kFramesStoppedMs, or before any frame; else
  // waits for the running or next frame to end (at most kFramesStoppedMs).
  void WaitForFrameGap();
  // For work that cannot pause: returns once what is left of the expected gap between frames
  // holds `need_us`, or at the start of a gap when none would (then it overlaps the next frame
  // least); at once before any frame, when frames stopped and when they leave no gap worth
  // waiting for (as YieldToFrames).
  void WaitForRoom(double need_us);
  // Whether WaitForRoom and YieldToFrames wait at all (on at first). The update worker turns it
  // off for an update that frames have left too few gaps to finish (kUnpaceBuildAfterFrames):
  // it then finishes beside them rather than frames late.
  void SetPacing(bool on);
  // Between slices of update work (each well under a millisecond): while a frame runs, waits for
  // it to end (at most kFramesStoppedMs), so a stage that outlasts its gap pauses under the next
  // frame instead of competing with it. Returns at once between frames, and when frames leave
  // no gap worth waiting for (back to back: the work would never finish).
  void YieldToFrames();
  // The moving-average idle time between two frames, in microseconds; negative while no frames
  // run (none yet, or none for kFramesStoppedMs): then nothing waits for them.
  double FrameGapUs();
  // How long the stages of the last timed build took together (Load's, then the last paced
  // build's); 0 before Load. Not thread-safe against a paced build: the update worker's.
  double LastBuildUs() const;
  static constexpr int64_t kFramesStoppedMs = 500;
  static constexpr double kMinPacedGapUs = 2000;
  // A paced build stage not timed yet: start it at the start of a gap.
  static constexpr double kUnknownStageUs = 1e9;

 private:
  // Create + Warm + I/O check of a new slot (no locks held). Fills the event's timings.
  enum class FirstRun { kInvoke, kTouch };
  Status BuildSlot(std::vector<uint8_t> bytes, int64_t version, bool hash, FirstRun first_run,
                   bool paced, std::unique_ptr<ModelSlot>* slot, SwapEvent* event);

  const TfLiteApi* api_;
  SlotConfig config_;
  std::unique_ptr<ModelSlot> active_;
  std::vector<size_t> io_sizes_;
  std::vector<std::pair<std::string, std::string>> input_refs_;
  std::thread builder_;
  std::atomic<bool> building_{false};
  std::atomic<pid_t> builder_tid_{0};
  std::atomic<bool> swap_builder_raised_{false};
  std::vector<pid_t> threads_before_builder_;  // sorted; never raised: not the builder's
  std::mutex mu_;  // guards pending_*
  std::unique_ptr<ModelSlot> pending_;
  std::unique_ptr<ModelSlot> retired_;
  Status pending_status_;
  bool pending_ready_ = false;
  SwapEvent pending_event_;
  // Frame timing for WaitForFrameGap (guarded by frame_mu_).
  std::mutex frame_mu_;
  std::condition_variable frame_cv_;
  bool in_frame_ = false;
  bool pacing_ = true;
  uint64_t frames_ended_ = 0;
  std::chrono::steady_clock::time_point frame_began_, frame_ended_;
  double period_us_ = 0, busy_us_ = 0;  // moving averages: frame start to start, frame length
  // Under frame_mu_: whether a frame runs or one ended within kFramesStoppedMs of `now` (else
  // nothing waits for frames); the expected idle time between two frames; whether it is worth
  // waiting for (kMinPacedGapUs).
  bool FramesRunning(std::chrono::steady_clock::time_point now) const;
  double GapUs() const { return period_us_ - busy_us_; }
  bool GapWorthWaitingFor() const { return GapUs() >= kMinPacedGapUs; }
  // How long each stage of the last build took (Load, then the update worker's paced builds).
  std::vector<double> stage_us_;
  // Times a build's stages (ModelSlot::Create calls before_stage() before each) into *stage_us;
  // with `waits`, each first waits there for room in a gap as long as it took last time.
  class StageClock {
   public:
    StageClock(Engine* waits, std::vector<double>* stage_us);
    Pace before_stage();
    void End();  // after the last stage

   private:
    Engine* waits_;
    std::vector<double>* stage_us_;
    size_t stage_ = 0;
    std::chrono::steady_clock::time_point began_;
  };
};

// RAII: marks one frame's timed stages for Engine::WaitForFrameGap.
class FrameScope {
 public:
  explicit FrameScope(Engine* engine) : engine_(engine) { engine_->BeginFrame(); }
  ~FrameScope() { engine_->EndFrame(); }
  FrameScope(const FrameScope&) = delete;
  FrameScope& operator=(const FrameScope&) = delete;

 private:
  Engine* engine_;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_MODEL_SLOT_H_
