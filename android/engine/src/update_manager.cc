#include "update_manager.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "digest.h"
#include "manifest.h"

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the calling thread: an update's work, whatever it waited for or was preempted by.
double ThreadCpuUs() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e6 + double(t.tv_nsec) / 1e3;
}

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// The one boundary with the update library's own status type: the engine carries its failures
// as the engine's Status, with the library's stable status name as the reason.
Status FromUpdateLibrary(const update::Status& status) {
  if (status.ok()) return Status::Ok();
  return Status::Error(status.message, update::StatusCodeName(status.code));
}

UpdateRecord Pending(const IncomingPacket& p) {
  UpdateRecord r;
  r.source = p.source;
  r.name = p.name;
  r.received_frame = p.received_frame;
  r.packet_bytes = p.bytes.size();
  return r;
}

UpdateRecord RunEnded(const IncomingPacket& p) {
  UpdateRecord r = Pending(p);
  r.reason = "run_ended";
  r.message = "the run ended before this packet was applied; the model was not changed";
  return r;
}

// Copies `from` into *to (reusing its capacity) in slices, calling `pace` before each: a model
// is megabytes, milliseconds to copy. With `stop`, gives up before a slice when it says so
// (false: *to holds a prefix).
bool PacedCopy(const std::vector<uint8_t>& from, const Pace& pace, std::vector<uint8_t>* to,
               const std::function<bool()>& stop = {}) {
  constexpr size_t kSlice = 1 << 20;
  to->clear();
  to->reserve(from.size());
  for (size_t done = 0; done < from.size(); done += kSlice) {
    if (stop && stop()) return false;
    if (pace) pace();
    to->insert(to->end(), from.begin() + long(done),
               from.begin() + long(std::min(from.size(), done + kSlice)));
  }
  return true;
}

bool WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += size_t(n);
  }
  return true;
}

}  // namespace

Status ReadUpdateState(const std::string& path, UpdateState* state) {
  *state = UpdateState();
  if (access(path.c_str(), F_OK) != 0 && errno == ENOENT) return Status::Ok();  // first start
  std::vector<uint8_t> bytes;
  const std::string fix = "; delete it only if no packet older than the last applied one can "
                          "reach this engine";
  if (!ReadFileBytes(path, &bytes).ok()) {
    return Status::Error("cannot read --update_state_file " + path + fix);
  }
  const nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (!j.is_object() || !j.contains("base_sha256") || !j["base_sha256"].is_string() ||
      !j.contains("last_sequence") || !j["last_sequence"].is_number_unsigned()) {
    return Status::Error("--update_state_file " + path + " is not {\"base_sha256\": hex, "
                         "\"last_sequence\": N}" + fix);
  }
  state->base_sha256_hex = j["base_sha256"].get<std::string>();
  state->last_sequence = j["last_sequence"].get<uint64_t>();
  return Status::Ok();
}

Status WriteUpdateState(const std::string& path, const UpdateState& state) {
  const nlohmann::json j = {{"base_sha256", state.base_sha256_hex},
                            {"last_sequence", state.last_sequence}};
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::Error("cannot write " + tmp + ": " + std::strerror(errno));
  const bool ok = WriteAll(fd, j.dump() + "\n") && fsync(fd) == 0;
  if (close(fd) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return Status::Error("cannot replace --update_state_file " + path + ": " + why);
  }
  // The rename itself must survive a power cut: sync the folder that holds the name.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return Status::Ok();
}

UpdateManager::UpdateManager(Engine* engine, UpdateConfig config)
    : engine_(engine),
      config_(std::move(config)),
      limits_(update::DecodeLimits::ForTable(config_.table)),
      current_(config_.base) {}

UpdateManager::~UpdateManager() {
  std::vector<UpdateRecord> ignored;
  Stop(&ignored);
}

Status UpdateManager::LoadState() {
  if (config_.state_file.empty()) return Status::Ok();
  UpdateState state;
  MD_RETURN_IF_ERROR(ReadUpdateState(config_.state_file, &state));
  // A state written for another base model (a new deployment) does not constrain this one.
  if (state.base_sha256_hex != Hex(config_.base_sha256.data(), config_.base_sha256.size())) {
    return Status::Ok();
  }
  std::lock_guard<std::mutex> lock(mu_);
  last_sequence_ = adopted_sequence_ = state.last_sequence;
  needs_rebase_ = state.last_sequence > 0;
  return Status::Ok();
}

void UpdateManager::PersistAdopted() {
  UpdateState state;
  state.base_sha256_hex = Hex(config_.base_sha256.data(), config_.base_sha256.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!persist_pending_) return;
    persist_pending_ = false;
    state.last_sequence = adopted_sequence_;
  }
  const Status s = WriteUpdateState(config_.state_file, state);
  if (!s.ok()) std::fprintf(stderr, "mobdistill-engine: warning: %s\n", s.message().c_str());
}

void UpdateManager::Report(UpdateRecord record) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_.size() < kMaxWaitingRecords) {
    finished_.push_back(std::move(record));
  } else {
    ++dropped_records_;
  }
}

uint64_t UpdateManager::dropped_records() {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_records_;
}

void UpdateManager::Start() {
  if (!worker_.joinable()) worker_ = std::thread([this] { WorkerLoop(); });
}

void UpdateManager::Submit(IncomingPacket packet) {
  std::lock_guard<std::mutex> lock(mu_);
  inbox_.push_back(std::move(packet));
}

void UpdateManager::SubmitNow(IncomingPacket packet, int64_t received_frame) {
  std::lock_guard<std::mutex> lock(mu_);
  packet.received_frame = received_frame;
  queue_.push_back(std::move(packet));
  cv_.notify_all();
}

uint64_t UpdateManager::last_sequence() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_sequence_;
}

UpdateRecord UpdateManager::Process(IncomingPacket* p) {
  UpdateRecord r = Pending(*p);
  if (!p->forced_reason.empty()) {
    r.reason = p->forced_reason;
    r.message = "packet refused before decoding (" + p->forced_reason + ")";
    return r;
  }
  update::UpdatePacket packet;
  // In the background every stage runs in slices between frames, pausing under them (pace);
  // otherwise each stage starts between two frames.
  const bool paced = config_.build_in_background;
  const Pace pace = paced ? Pace([this] { engine_->YieldToFrames(); }) : Pace();
  if (paced) {
    engine_->YieldToFrames();
  } else {
    engine_->WaitForFrameGap();
  }
  const auto t0 = Clock::now();
  update::DecodeOptions options;
  options.expected_base_sha256 = config_.base_sha256.data();
  options.expected_device_id = config_.device_id.data();
  options.hmac_key = config_.hmac_key.empty() ? nullptr : config_.hmac_key.data();
  options.hmac_key_size = config_.hmac_key.size();
  options.allow_unauthenticated = config_.insecure;
  options.last_sequence = last_sequence_;
  options.limits = limits_;
  options.pace = pace;
  Status s = FromUpdateLibrary(
      update::DecodeUpdatePacket(p->bytes.data(), p->bytes.size(), options, &packet));
  const auto t1 = Clock::now();
  r.decode_us = Us(t0, t1);
  if (!s.ok()) {
    r.reason = s.reason();
    r.message = s.message();
    if (s.reason() == update::StatusCodeName(update::StatusCode::kReplay) &&
        p->bytes.size() >= 64) {
      // Every other check passed: the header's sequence (bytes 56..63) is genuine.
      r.has_sequence = true;
      for (int k = 7; k >= 0; --k) r.sequence = (r.sequence << 8) | p->bytes[56 + size_t(k)];
    }
    return r;
  }
  r.has_sequence = true;
  r.sequence = packet.sequence;
  r.mode = packet.mode == update::Mode::kCumulative ? "cumulative" : "base_relative";
  if (needs_rebase_ && packet.mode == update::Mode::kCumulative) {
    r.reason = "resync_needed";
    r.message = "the engine restarted on the base model after sequence " +
                std::to_string(last_sequence_) + " (--update_state_file); a cumulative packet "
                "would patch the wrong weights: send a base-relative packet with a higher "
                "sequence first";
    return r;
  }
  for (const update::TensorPatch& t : packet.tensors) r.num_values += t.values.size();
  // Base-relative values replace elements of the pristine base; cumulative ones build on the
  // currently deployed bytes (docs/wire-format.md, "Modes").
  if (!paced) engine_->WaitForFrameGap();  // a long decode may have used up this gap
  const auto patch_began = Clock::now();
  std::vector<uint8_t> next = std::move(spare_);
  PacedCopy(packet.mode == update::Mode::kCumulative ? current_ : config_.base, pace, &next);
  s = FromUpdateLibrary(update::ApplyPatches(&next, config_.table, packet, pace));
  r.patch_us = Us(patch_began, Clock::now());
  if (!s.ok()) {
    r.reason = s.reason();
    r.message = s.message();
    return r;
  }
  PacedCopy(next, pace, &staged_);  // the deployed bytes if this build succeeds (untimed)
  SwapEvent event;
  Status built = engine_->BuildPending(std::move(next), static_cast<int64_t>(packet.sequence),
                                       &event, paced);
  r.build_us = event.create_us;
  r.warm_us = event.warm_us;
  r.build_priority = event.priority;
  r.build_threads = event.threads;
  if (!built.ok()) {
    r.reason = "build_failed";
    r.message = built.message();
    return r;
  }
  r.applied = true;  // provisional: final when the frame thread adopts the slot
  last_sequence_ = packet.sequence;
  needs_rebase_ = false;
  std::swap(current_, staged_);
  return r;
}

bool UpdateManager::GapsHoldWork(double gap_us) const {
  if (gap_us < 0) return true;  // no frames: nothing to wait for
  const double work_us =
      last_work_us_ > 0 ? last_work_us_ : engine_->LastBuildUs() / kBuildShareOfUpdate;
  // One gap to spare: stages that cannot pause leave the ends of gaps unused.
  return gap_us * double(config_.unpace_build_after_frames - 1) >= work_us;
}

void UpdateManager::WarmBuffers() {
  const Pace yield = [this] { engine_->YieldToFrames(); };
  const auto packet_waits = [this] {  // a packet goes first
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_ || !queue_.empty() || !inbox_.empty();
  };
  for (std::vector<uint8_t>* buffer : {&staged_, &spare_}) {
    if (!PacedCopy(config_.base, yield, buffer, packet_waits)) return;
  }
}

void UpdateManager::WorkerLoop() {
  if (config_.build_in_background) IdleBuildsRestorable();  // its one-time probe: not under mu_
  WarmBuffers();
  std::unique_lock<std::mutex> lock(mu_);
  worker_tid_ = CurrentThreadId();
  threads_at_worker_start_ = ProcessThreadIds();
  while (true) {
    cv_.wait(lock, [this] {
      return stopping_ || persist_pending_ || release_retired_ || (!queue_.empty() && !awaiting_);
    });
    if (stopping_) return;
    if (release_retired_) {  // tearing down an interpreter takes milliseconds: not on frames
      release_retired_ = false;
      lock.unlock();
      if (config_.build_in_background) engine_->WaitForFrameGap();
      std::vector<uint8_t> bytes = engine_->ReleaseRetired();
      if (!bytes.empty()) spare_ = std::move(bytes);
      lock.lock();
      continue;
    }
    if (persist_pending_) {  // off the frame thread: fsync can take milliseconds
      lock.unlock();
      PersistAdopted();
      lock.lock();
      continue;
    }
    IncomingPacket p = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    processing_received_frame_ = p.received_frame;
    raised_ = false;
    unpaced_ = false;
    // Idle before unlocking: a raise (the frame thread, under mu_) must come after it, else the
    // worker would lower itself again and the sweep below would run at idle and raise nothing.
    const std::string priority = config_.build_in_background ? BuildInBackground() : "normal";
    const double gap_us = engine_->FrameGapUs();
    const bool paced = config_.build_in_background && GapsHoldWork(gap_us);
    engine_->SetPacing(paced);
    unpaced_ = !paced;
    lock.unlock();
    const double cpu_began = ThreadCpuUs();
    UpdateRecord r = Process(&p);
    r.work_cpu_us = ThreadCpuUs() - cpu_began;
    r.frame_gap_us = gap_us;
    if (r.applied) last_work_us_ = r.work_cpu_us;
    lock.lock();
    if (config_.build_in_background) {
      r.pacing = !paced ? "no_room" : unpaced_ ? "stopped" : "gaps";
    }
    processing_received_frame_ = -1;
    // A thread the worker was cloning while the frame thread raised it inherited SCHED_IDLE
    // after that sweep: sweep again now that the worker creates nothing more.
    if (raised_) RaiseIdleThreads(worker_tid_, threads_at_worker_start_);
    if (!r.build_priority.empty()) r.build_priority = raised_ ? "raised" : priority;
    lock.unlock();
    if (!r.applied && p.on_done) p.on_done(r);
    std::function<void(const UpdateRecord&)> on_ready = std::move(p.on_ready);
    lock.lock();
    busy_ = false;
    if (r.applied) {
      awaiting_ = true;
      in_flight_ = std::move(p);
      in_flight_record_ = r;
    } else {
      finished_.push_back(r);
    }
    // Only now: a synchronous caller woken here must find this outcome in its next stats().
    if (on_ready) on_ready(r);
    cv_.notify_all();
  }
}

void UpdateManager::BetweenFrames(int64_t run, bool wait, std::vector<UpdateRecord>* finished) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (IncomingPacket& p : inbox_) {
      p.received_frame = run;
      queue_.push_back(std::move(p));
    }
    inbox_.clear();
    cv_.notify_all();
    if (config_.build_in_background && processing_received_frame_ >= 0 && !raised_ &&
        run - processing_received_frame_ >= config_.raise_build_after_frames) {
      RaiseIdleThreads(worker_tid_, threads_at_worker_start_);
      raised_ = true;
    }
    if (config_.build_in_background && processing_received_frame_ >= 0 && !unpaced_ &&
        run - processing_received_frame_ >= config_.unpace_build_after_frames) {
      engine_->SetPacing(false);  // frames left too few gaps: finish beside them now
      unpaced_ = true;
    }
    while (true) {
      if (awaiting_) {
        SwapEvent event;
        Status failure;
        if (engine_->ApplyPendingSwap(&event, &failure)) {
          in_flight_record_.swapped_frame = run;
          release_retired_ = true;
          finished_.push_back(in_flight_record_);
          if (!config_.state_file.empty()) {
            adopted_sequence_ = in_flight_record_.sequence;
            persist_pending_ = true;
          }
          // Under the lock: the worker cannot finish the next packet first, so outcomes (TCP
          // acks, renames) come out in the order the packets were taken.
          if (in_flight_.on_done) in_flight_.on_done(in_flight_record_);
          in_flight_ = IncomingPacket();
          awaiting_ = false;
          cv_.notify_all();
        }
      }
      // With `wait`, drain everything handed over so far: several packets due at the same
      // frame are applied in order before it, and it runs on the last one.
      if (!wait || stopping_ || (queue_.empty() && !busy_ && !awaiting_)) break;
      cv_.wait(lock, [this] { return stopping_ || awaiting_ || (queue_.empty() && !busy_); });
    }
    finished->insert(finished->end(), finished_.begin(), finished_.end());
    finished_.clear();
  }
}

void UpdateManager::Stop(std::vector<UpdateRecord>* finished) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  PersistAdopted();  // an adoption the worker had no time to write
  std::vector<std::pair<std::function<void(const UpdateRecord&)>, UpdateRecord>> callbacks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (awaiting_) {
      UpdateRecord r = in_flight_record_;
      r.applied = false;
      r.reason = "run_ended";
      r.message = "built, but the run ended before the next frame; the model was not changed";
      callbacks.emplace_back(std::move(in_flight_.on_done), r);
      finished_.push_back(r);
      awaiting_ = false;
    }
    for (std::deque<IncomingPacket>* q : {&queue_, &inbox_}) {
      for (IncomingPacket& p : *q) {
        UpdateRecord r = RunEnded(p);
        if (p.on_ready) p.on_ready(r);  // a synchronous caller must not wait forever
        callbacks.emplace_back(std::move(p.on_done), r);
        finished_.push_back(r);
      }
      q->clear();
    }
    finished->insert(finished->end(), finished_.begin(), finished_.end());
    finished_.clear();
  }
  for (auto& cb : callbacks) {
    if (cb.first) cb.first(cb.second);
  }
}

}  // namespace mobdistill
