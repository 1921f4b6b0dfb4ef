#include "model_slot.h"

#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "digest.h"

namespace mobdistill {
namespace {

pid_t ThisThreadId() { return static_cast<pid_t>(syscall(SYS_gettid)); }

}  // namespace

pid_t CurrentThreadId() { return ThisThreadId(); }

std::vector<pid_t> ProcessThreadIds() {
  std::vector<pid_t> ids;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return ids;
  while (const dirent* entry = readdir(dir)) {
    const long id = std::strtol(entry->d_name, nullptr, 10);
    if (id > 0) ids.push_back(static_cast<pid_t>(id));
  }
  closedir(dir);
  std::sort(ids.begin(), ids.end());
  return ids;
}

namespace {

ThreadScheduling SchedulingOf(pid_t tid) {
  ThreadScheduling s;
  s.policy = sched_getscheduler(tid);
  errno = 0;
  s.nice = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  return s;
}

bool SetScheduling(pid_t tid, const ThreadScheduling& s) {
  sched_param param{};
  if (sched_setscheduler(tid, s.policy, &param) != 0) return false;
  return s.policy == SCHED_IDLE || setpriority(PRIO_PROCESS, static_cast<id_t>(tid), s.nice) == 0;
}

// Threads that appeared since `before` and run as SCHED_IDLE: they were created by the idle
// building thread (another thread's creations keep their creator's policy).
std::vector<pid_t> NewIdleThreads(const std::vector<pid_t>& before) {
  std::vector<pid_t> found;
  for (pid_t id : ProcessThreadIds()) {
    if (!std::binary_search(before.begin(), before.end(), id) && id != ThisThreadId() &&
        sched_getscheduler(id) == SCHED_IDLE) {
      found.push_back(id);
    }
  }
  return found;
}

}  // namespace

ThreadScheduling CurrentThreadScheduling() { return SchedulingOf(ThisThreadId()); }

const char* ThreadPriorityName() {
  return sched_getscheduler(0) == SCHED_IDLE ? "idle" : "normal";
}

bool IdleBuildsRestorable() {
  static const bool restorable = [] {
    bool ok = false;
    std::thread probe([&ok] {
      const ThreadScheduling normal = CurrentThreadScheduling();
      ThreadScheduling idle;
      idle.policy = SCHED_IDLE;
      ok = SetScheduling(0, idle) && SetScheduling(0, normal);
    });
    probe.join();
    return ok;
  }();
  return restorable;
}

void RaiseIdleThreads(pid_t tid, const std::vector<pid_t>& spared) {
  const ThreadScheduling frame = CurrentThreadScheduling();
  SetScheduling(tid, frame);
  for (pid_t id : ProcessThreadIds()) {
    if (!std::binary_search(spared.begin(), spared.end(), id) &&
        sched_getscheduler(id) == SCHED_IDLE) {
      SetScheduling(id, frame);
    }
  }
}

std::string BuildInBackground() {
  if (IdleBuildsRestorable()) {
    ThreadScheduling idle;
    idle.policy = SCHED_IDLE;
    SetScheduling(0, idle);
  }
  return ThreadPriorityName();
}

void ModelSlot::Report(void* self, const char* format, va_list args) {
  char buf[1024];
  std::vsnprintf(buf, sizeof(buf), format, args);
  auto* slot = static_cast<ModelSlot*>(self);
  std::lock_guard<std::mutex> lock(slot->errors_mu_);
  if (!slot->errors_.empty()) slot->errors_ += "; ";
  slot->errors_ += buf;
}

std::string ModelSlot::TakeErrors() {
  std::lock_guard<std::mutex> lock(errors_mu_);
  std::string e;
  e.swap(errors_);
  return e.empty() ? "" : " (TFLite: " + e + ")";
}

Status ModelSlot::Create(const TfLiteApi* api, const SlotConfig& config,
                         std::vector<uint8_t> bytes, int64_t version,
                         std::unique_ptr<ModelSlot>* out, const Pace& before_stage) {
  std::unique_ptr<ModelSlot> slot(new ModelSlot(api));
  slot->bytes_ = std::move(bytes);
  slot->version_ = version;
  MD_RETURN_IF_ERROR(slot->Build(config, before_stage));
  *out = std::move(slot);
  return Status::Ok();
}

void ModelSlot::DestroyInterpreter() {
  for (auto& kv : runners_) api_->RunnerDelete(kv.second);
  runners_.clear();
  if (interpreter_) api_->InterpreterDelete(interpreter_);
  interpreter_ = nullptr;
  if (options_) api_->OptionsDelete(options_);
  options_ = nullptr;
}

ModelSlot::~ModelSlot() { Dismantle(); }

std::vector<uint8_t> ModelSlot::Dismantle() {
  DestroyInterpreter();  // interpreter before the delegate it uses
  if (delegate_ && delegate_delete_) delegate_delete_(delegate_);
  delegate_ = nullptr;
  if (model_) api_->ModelDelete(model_);  // the model before the bytes it reads
  model_ = nullptr;
  return std::move(bytes_);
}

Status ModelSlot::BuildInterpreter(const SlotConfig& config, TfLiteDelegate* delegate,
                                   bool* delegated, const Pace& before_stage) {
  const auto stage = [&before_stage] {
    if (before_stage) before_stage();
  };
  options_ = api_->OptionsCreate();
  if (!options_) return Status::Error("TfLiteInterpreterOptionsCreate failed");
  api_->OptionsSetNumThreads(options_, config.num_threads);
  api_->OptionsSetErrorReporter(options_, &ModelSlot::Report, this);
  if (config.use_nnapi && api_->OptionsSetUseNNAPI) api_->OptionsSetUseNNAPI(options_, true);
  stage();
  interpreter_ = api_->InterpreterCreate(model_, options_);
  if (!interpreter_) return Status::Error("TfLiteInterpreterCreate failed" + TakeErrors());
  *delegated = false;
  if (delegate != nullptr) {
    stage();  // XNNPACK packs the weights here
    *delegated = api_->InterpreterModifyGraphWithDelegate(interpreter_, delegate) == kTfLiteOk;
  }
  for (const std::string& sig : config.signatures) {
    TfLiteSignatureRunner* r = api_->InterpreterGetSignatureRunner(interpreter_, sig.c_str());
    if (!r) {
      std::string have;
      const int32_t n = api_->InterpreterGetSignatureCount(interpreter_);
      for (int32_t i = 0; i < n; ++i) {
        have += (i ? ", " : "") + std::string(api_->InterpreterGetSignatureKey(interpreter_, i));
      }
      return Status::Error("model has no signature '" + sig + "' (it has: " + have + ")");
    }
    runners_[sig] = r;
    stage();  // the arena and XNNPACK's workspace
    if (api_->RunnerAllocateTensors(r) != kTfLiteOk) {
      return Status::Error("AllocateTensors failed for signature '" + sig + "'" + TakeErrors());
    }
  }
  signature_order_ = config.signatures;
  input_refs_ = config.inputs;
  output_refs_ = config.outputs;
  io_sizes_.clear();
  for (const auto& ref : config.inputs) {
    TfLiteSignatureRunner* r = runner(ref.first);
    const TfLiteTensor* t = r ? api_->RunnerGetInputTensor(r, ref.second.c_str()) : nullptr;
    if (!t) return Status::Error("signature '" + ref.first + "' has no input '" + ref.second +
                                 "' (the manifest names it)");
    if (api_->TensorType(t) != kTfLiteFloat32) {
      return Status::Error("input " + ref.first + "." + ref.second + " is not float32");
    }
    io_sizes_.push_back(api_->TensorByteSize(t));
  }
  for (const auto& ref : config.outputs) {
    TfLiteSignatureRunner* r = runner(ref.first);
    const TfLiteTensor* t = r ? api_->RunnerGetOutputTensor(r, ref.second.c_str()) : nullptr;
    if (!t) return Status::Error("signature '" + ref.first + "' has no output '" + ref.second +
                                 "' (the manifest names it)");
    if (api_->TensorType(t) != kTfLiteFloat32) {
      return Status::Error("output " + ref.first + "." + ref.second + " is not float32");
    }
    io_sizes_.push_back(api_->TensorByteSize(t));
  }
  return Status::Ok();
}

Status ModelSlot::Build(const SlotConfig& config, const Pace& before_stage) {
  model_ = api_->ModelCreate(bytes_.data(), bytes_.size());
  if (!model_) {
    return Status::Error("TfLiteModelCreate rejected the model (" +
                         std::to_string(bytes_.size()) +
                         " bytes): not a valid .tflite flatbuffer? Re-export it");
  }
  std::string requested = "cpu";
  if (config.use_gpu) {
    requested = "gpu";
    if (api_->GpuCreate) {
      delegate_ = api_->GpuCreate(nullptr);
      delegate_delete_ = api_->GpuDelete;
    }
    if (!delegate_) warnings_.push_back("GPU delegate unavailable (pass --delegate_lib with "
                                        "TfLiteGpuDelegateV2Create); running on CPU");
  } else if (config.use_xnnpack) {
    requested = "xnnpack";
    if (api_->XNNPackCreate && api_->XNNPackOptionsDefault && api_->XNNPackOptionsLayoutSafe()) {
      TfLiteXNNPackDelegateOptions opts = api_->XNNPackOptionsDefault();
      // Same rule as TFLite's own default XNNPACK: no thread pool for a single thread.
      opts.num_threads = config.num_threads > 1 ? config.num_threads : 0;
      delegate_ = api_->XNNPackCreate(&opts);
      delegate_delete_ = api_->XNNPackDelete;
    }
    if (!delegate_) warnings_.push_back("XNNPACK delegate could not be created; running on CPU");
  } else if (config.use_nnapi) {
    requested = "nnapi";
  }
  bool delegated = false;
  MD_RETURN_IF_ERROR(BuildInterpreter(config, delegate_, &delegated, before_stage));
  if (delegate_ && !delegated) {
    warnings_.push_back(requested + " delegate refused the graph" + TakeErrors() +
                        "; fell back to CPU");
    DestroyInterpreter();  // a failed ModifyGraph may leave the interpreter unusable: rebuild
    MD_RETURN_IF_ERROR(BuildInterpreter(config, nullptr, &delegated, before_stage));
  }
  if (delegated) {
    delegate_used_ = requested;
  } else if (requested == "nnapi") {
    delegate_used_ = "nnapi";  // requested through options; the runtime decides per op
  } else {
    delegate_used_ = "cpu";
  }
  return Status::Ok();
}

TfLiteSignatureRunner* ModelSlot::runner(const std::string& signature) const {
  auto it = runners_.find(signature);
  return it == runners_.end() ? nullptr : it->second;
}

Status ModelSlot::Warm() {
  for (const auto& ref : input_refs_) {  // defined inputs: zeros
    const TfLiteTensor* t = api_->RunnerGetInputTensor(runners_.at(ref.first), ref.second.c_str());
    if (t && api_->TensorData(t)) std::memset(api_->TensorData(t), 0, api_->TensorByteSize(t));
  }
  for (const std::string& sig : signature_order_) {
    TfLiteSignatureRunner* r = runners_.at(sig);
    if (api_->RunnerInvoke(r) != kTfLiteOk) {
      return Status::Error("warm-up invoke of '" + sig + "' failed" + TakeErrors());
    }
  }
  return Status::Ok();
}

namespace {
constexpr size_t kTouchSlice = 1 << 20;  // bytes zeroed between two calls of `pace`
}  // namespace

void ModelSlot::TouchTensors(const Pace& pace) {
  for (const std::string& sig : signature_order_) {
    TfLiteSignatureRunner* r = runners_.at(sig);
    const auto touch = [this, &pace](const TfLiteTensor* t) {
      if (!t || !api_->TensorData(t)) return;
      auto* data = static_cast<uint8_t*>(api_->TensorData(t));
      const size_t size = api_->TensorByteSize(t);
      for (size_t done = 0; done < size; done += kTouchSlice) {
        if (pace) pace();
        std::memset(data + done, 0, std::min(kTouchSlice, size - done));
      }
    };
    for (const auto& ref : input_refs_) {
      if (ref.first == sig) touch(api_->RunnerGetInputTensor(r, ref.second.c_str()));
    }
    for (const auto& ref : output_refs_) {
      if (ref.first == sig) touch(api_->RunnerGetOutputTensor(r, ref.second.c_str()));
    }
  }
}

Engine::~Engine() { WaitForBuilder(); }

namespace {
constexpr double kFrameAverageWeight = 0.2;  // of the newest frame in the moving averages

double MovingAverage(double average, double sample) {
  return average == 0 ? sample : average + kFrameAverageWeight * (sample - average);
}
}  // namespace

void Engine::BeginFrame() {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(frame_mu_);
  if (frames_ended_ > 0) {
    period_us_ = MovingAverage(
        period_us_, std::chrono::duration<double, std::micro>(now - frame_began_).count());
  }
  frame_began_ = now;
  in_frame_ = true;
}

void Engine::EndFrame() {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(frame_mu_);
    busy_us_ = MovingAverage(
        busy_us_, std::chrono::duration<double, std::micro>(now - frame_began_).count());
    frame_ended_ = now;
    in_frame_ = false;
    ++frames_ended_;
  }
  frame_cv_.notify_all();
}

bool Engine::FramesRunning(std::chrono::steady_clock::time_point now) const {
  return in_frame_ ||
         (frames_ended_ > 0 && now - frame_ended_ <= std::chrono::milliseconds(kFramesStoppedMs));
}

void Engine::WaitForFrameGap() {
  const auto stopped = std::chrono::milliseconds(kFramesStoppedMs);
  std::unique_lock<std::mutex> lock(frame_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (!FramesRunning(now)) return;
  if (!in_frame_) {
    // Early in the gap: at most half of the expected idle time between two frames has passed.
    const double gap_us = GapUs();
    const double idle_us = std::chrono::duration<double, std::micro>(now - frame_ended_).count();
    if (gap_us > 0 && idle_us <= gap_us / 2) return;
  }
  const uint64_t ended = frames_ended_;
  frame_cv_.wait_for(lock, stopped, [this, ended] { return frames_ended_ != ended; });
}

double Engine::FrameGapUs() {
  std::lock_guard<std::mutex> lock(frame_mu_);
  return FramesRunning(std::chrono::steady_clock::now()) ? std::max(0.0, GapUs()) : -1;
}

Engine::StageClock::StageClock(Engine* waits, std::vector<double>* stage_us)
    : waits_(waits), stage_us_(stage_us) {}

Pace Engine::StageClock::before_stage() {
  return [this] {
    End();
    if (waits_) waits_->WaitForRoom(stage_ < stage_us_->size() ? (*stage_us_)[stage_]
                                                               : kUnknownStageUs);
    began_ = std::chrono::steady_clock::now();
    ++stage_;
  };
}

void Engine::StageClock::End() {
  if (stage_ == 0) return;
  if (stage_us_->size() < stage_) stage_us_->resize(stage_);
  (*stage_us_)[stage_ - 1] =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began_)
          .count();
}

double Engine::LastBuildUs() const {
  double total = 0;
  for (double us : stage_us_) total += us;
  return total;
}

void Engine::SetPacing(bool on) {
  {
    std::lock_guard<std::mutex> lock(frame_mu_);
    pacing_ = on;
  }
  frame_cv_.notify_all();  // a paced wait in progress ends now
}

void Engine::WaitForRoom(double need_us) {
  const auto stopped = std::chrono::milliseconds(kFramesStoppedMs);
  std::unique_lock<std::mutex> lock(frame_mu_);
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    if (!pacing_ || !FramesRunning(now) || !GapWorthWaitingFor()) return;
    const double gap_us = GapUs();
    if (!in_frame_) {
      const double idle_us = std::chrono::duration<double, std::micro>(now - frame_ended_).count();
      if (gap_us - idle_us >= need_us) return;
    }
    const uint64_t ended = frames_ended_;
    if (!frame_cv_.wait_for(lock, stopped,
                            [this, ended] { return frames_ended_ != ended || !pacing_; })) {
      return;  // frames stopped
    }
    if (!pacing_) return;
    if (need_us >= gap_us) return;  // no gap holds it: the start of one is the best there is
  }
}

void Engine::YieldToFrames() {
  std::unique_lock<std::mutex> lock(frame_mu_);
  if (!pacing_ || !in_frame_ || !GapWorthWaitingFor()) return;
  const uint64_t ended = frames_ended_;
  frame_cv_.wait_for(lock, std::chrono::milliseconds(kFramesStoppedMs),
                     [this, ended] { return frames_ended_ != ended || !pacing_; });
}

void Engine::WaitForBuilder() {
  if (builder_.joinable()) builder_.join();
}

std::vector<uint8_t> Engine::ReleaseRetired() {
  std::unique_ptr<ModelSlot> retired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    retired = std::move(retired_);
  }
  return retired ? retired->Dismantle() : std::vector<uint8_t>();  // outside the lock
}

Status Engine::Load(std::vector<uint8_t> bytes, int64_t version) {
  StageClock clock(nullptr, &stage_us_);  // how long each stage takes, for paced builds
  MD_RETURN_IF_ERROR(ModelSlot::Create(api_, config_, std::move(bytes), version, &active_,
                                       clock.before_stage()));
  clock.End();
  io_sizes_ = active_->IoByteSizes();
  return Status::Ok();
}

Status Engine::BuildSlot(std::vector<uint8_t> bytes, int64_t version, bool hash,
                         FirstRun first_run, bool paced, std::unique_ptr<ModelSlot>* slot,
                         SwapEvent* event) {
  using Clock = std::chrono::steady_clock;
  WaitForFrameGap();
  const auto t0 = Clock::now();
  event->version = version;
  event->priority = ThreadPriorityName();
  event->threads = config_.num_threads;
  const bool idle = sched_getscheduler(0) == SCHED_IDLE;
  const std::vector<pid_t> threads_before = idle ? ProcessThreadIds() : std::vector<pid_t>();
  if (hash) event->sha256 = Sha256Hex(bytes.data(), bytes.size());
  const auto t1 = Clock::now();
  // A stage cannot pause: it starts where what is left of a gap holds it, as long as it took
  // last time (Load timed the first build).
  StageClock clock(this, &stage_us_);  // unpaced builds do not call it: not timed either
  Status s = ModelSlot::Create(api_, config_, std::move(bytes), version, slot,
                               paced ? clock.before_stage() : Pace());
  clock.End();
  const auto t2 = Clock::now();
  auto t3 = t2;
  if (s.ok() && first_run == FirstRun::kInvoke) {
    s = (*slot)->Warm();
    t3 = Clock::now();
  } else if (s.ok()) {
    (*slot)->TouchTensors(paced ? Pace([this] { YieldToFrames(); }) : Pace());
    t3 = Clock::now();
  }
  if (s.ok() && idle) (*slot)->build_threads_ = NewIdleThreads(threads_before);
  if (s.ok() && (*slot)->IoByteSizes() != io_sizes_) {
    s = Status::Error("swapped-in model has different signatures than the running one");
  }
  event->create_us = std::chrono::duration<double, std::micro>(t2 - t1).count();
  event->warm_us = std::chrono::duration<double, std::micro>(t3 - t2).count();
  event->build_ms = std::chrono::duration<double, std::milli>(t3 - t0).count();
  return s;
}

Status Engine::PrepareSwap(std::vector<uint8_t> new_model_bytes) {
  if (building_.load()) return Status::Error("a model swap is already being prepared");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_ready_) return Status::Error("a prepared model swap has not been applied yet");
  }
  WaitForBuilder();  // a finished thread may still be joinable
  const int64_t version = active_->version() + 1;
  threads_before_builder_ = ProcessThreadIds();
  builder_tid_.store(0);
  swap_builder_raised_.store(false);
  building_.store(true);
  builder_ = std::thread([this, version, bytes = std::move(new_model_bytes)]() mutable {
    BuildInBackground();
    builder_tid_.store(CurrentThreadId());
    SwapEvent event;
    std::unique_ptr<ModelSlot> slot;
    // --swap_graph may bring any graph: one zero-input Invoke proves it runs before a frame does.
    Status s = BuildSlot(std::move(bytes), version, /*hash=*/true, FirstRun::kInvoke,
                         /*paced=*/false, &slot, &event);
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_status_ = s;
      if (s.ok()) pending_ = std::move(slot);
      pending_event_ = event;
      pending_ready_ = true;
    }
    building_.store(false);
  });
  return Status::Ok();
}

void Engine::RaiseSwapBuilder() {
  const pid_t tid = builder_tid_.exchange(0);
  if (tid == 0 || !building_.load()) return;
  RaiseIdleThreads(tid, threads_before_builder_);
  swap_builder_raised_.store(true);
}

Status Engine::BuildPending(std::vector<uint8_t> new_model_bytes, int64_t version,
                            SwapEvent* event, bool paced) {
  if (building_.load() || pending()) {
    return Status::Error("a model swap is already pending; apply it between frames first");
  }
  std::unique_ptr<ModelSlot> slot;
  MD_RETURN_IF_ERROR(BuildSlot(std::move(new_model_bytes), version, /*hash=*/false,
                               FirstRun::kTouch, paced, &slot, event));
  std::lock_guard<std::mutex> lock(mu_);
  pending_status_ = Status::Ok();
  pending_ = std::move(slot);
  pending_event_ = *event;
  pending_ready_ = true;
  return Status::Ok();
}

bool Engine::ApplyPendingSwap(SwapEvent* event, Status* failure) {
  std::unique_ptr<ModelSlot> older;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!pending_ready_) return false;
    pending_ready_ = false;
    *failure = pending_status_;
    *event = pending_event_;
    if (!pending_status_.ok()) return false;
    older = std::move(retired_);  // never released (no update worker): at most one is kept
    retired_ = std::move(active_);
    active_ = std::move(pending_);
  }
  // The new slot's threads were created at the builder's idle priority: frames must not run
  // on them so. A thread that cannot be raised (it exited) has nothing left to run.
  const ThreadScheduling frame = CurrentThreadScheduling();
  for (pid_t tid : active_->build_threads()) SetScheduling(tid, frame);
  return true;
}

}  // namespace mobdistill
