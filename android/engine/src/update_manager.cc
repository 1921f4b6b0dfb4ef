#include "update_manager.h"

#include <chrono>
#include <utility>

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
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

}  // namespace

UpdateManager::UpdateManager(Engine* engine, UpdateConfig config)
    : engine_(engine), config_(std::move(config)), current_(config_.base) {}

UpdateManager::~UpdateManager() {
  std::vector<UpdateRecord> ignored;
  Stop(&ignored);
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
  const auto t0 = Clock::now();
  update::Status s = update::DecodeUpdatePacket(
      p->bytes.data(), p->bytes.size(), config_.base_sha256.data(),
      config_.hmac_key.empty() ? nullptr : config_.hmac_key.data(), config_.hmac_key.size(),
      last_sequence_, &packet);
  const auto t1 = Clock::now();
  r.decode_us = Us(t0, t1);
  if (!s.ok()) {
    r.reason = update::StatusCodeName(s.code);
    r.message = s.message;
    if (s.code == update::StatusCode::kReplay && p->bytes.size() >= 48) {
      // CRC, HMAC and base already passed: the header's sequence (bytes 40..47) is genuine.
      r.has_sequence = true;
      for (int k = 7; k >= 0; --k) r.sequence = (r.sequence << 8) | p->bytes[40 + size_t(k)];
    }
    return r;
  }
  r.has_sequence = true;
  r.sequence = packet.sequence;
  r.mode = packet.mode == update::Mode::kCumulative ? "cumulative" : "base_relative";
  for (const update::TensorPatch& t : packet.tensors) r.num_values += t.values.size();
  // Base-relative values replace elements of the pristine base; cumulative ones build on the
  // currently deployed bytes (docs/wire-format.md, "Modes").
  std::vector<uint8_t> next =
      packet.mode == update::Mode::kCumulative ? current_ : config_.base;
  s = update::ApplyPatches(&next, config_.table, packet);
  r.patch_us = Us(t1, Clock::now());
  if (!s.ok()) {
    r.reason = update::StatusCodeName(s.code);
    r.message = s.message;
    return r;
  }
  std::vector<uint8_t> keep = next;  // the deployed bytes if this build succeeds (untimed)
  SwapEvent event;
  Status built = engine_->BuildPending(std::move(next), static_cast<int64_t>(packet.sequence),
                                       &event);
  r.build_us = event.create_us;
  r.warm_us = event.warm_us;
  if (!built.ok()) {
    r.reason = "build_failed";
    r.message = built.message();
    return r;
  }
  r.applied = true;  // provisional: final when the frame thread adopts the slot
  last_sequence_ = packet.sequence;
  current_ = std::move(keep);
  return r;
}

void UpdateManager::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || (!queue_.empty() && !awaiting_); });
    if (stopping_) return;
    IncomingPacket p = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    UpdateRecord r = Process(&p);
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
    while (true) {
      if (awaiting_) {
        SwapEvent event;
        Status failure;
        if (engine_->ApplyPendingSwap(&event, &failure)) {
          in_flight_record_.swapped_frame = run;
          finished_.push_back(in_flight_record_);
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
