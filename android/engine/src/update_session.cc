#include "update_session.h"

#include <cstdio>
#include <future>

namespace mobdistill {
namespace {

bool HexToBytes(const std::string& hex, uint8_t* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else return false;
    }
    out[i] = uint8_t(v);
  }
  return true;
}

}  // namespace

Status UpdateSecurityFromFlags(const Params& params, UpdateSecurity* security) {
  if (!params.update_key_file.empty()) {
    if (!ReadFileBytes(params.update_key_file, &security->hmac_key).ok() ||
        security->hmac_key.empty()) {
      return Status::Error("cannot read --update_key_file " + params.update_key_file +
                           " (raw key bytes, not empty)");
    }
  }
  if (!params.update_device_id.empty() &&
      !HexToBytes(params.update_device_id, security->device_id.data(),
                  security->device_id.size())) {
    return Status::Error("--update_device_id must be 32 hex digits (16 bytes), not '" +
                         params.update_device_id + "'");
  }
  security->insecure = params.insecure_updates;
  security->state_file = params.update_state_file;
  security->build_in_background = params.update_build_priority == "idle";
  return Status::Ok();
}

UpdateSession::UpdateSession(Engine* engine, std::function<void(const UpdateRecord&)> on_record)
    : engine_(engine), on_record_(std::move(on_record)) {}

UpdateSession::~UpdateSession() {
  // Sources stop taking packets, then the update worker (whose last outcomes still reach the
  // sources' queues), then the sources finish.
  tcp_listener_.StopReading();
  dir_watcher_.StopScanning();
  manager_.reset();
  tcp_listener_.Stop();
  dir_watcher_.Stop();
}

Status UpdateSession::Start(const Manifest& manifest, std::vector<uint8_t> base,
                            UpdateSecurity security) {
  if (manifest.parameters.empty()) {
    return Status::Error("manifest " + manifest.path + " has no parameter_map entries, so no "
                         "tensor can be updated; re-export the model with mobdistill export");
  }
  UpdateConfig config;
  config.base = std::move(base);
  config.hmac_key = std::move(security.hmac_key);
  config.device_id = security.device_id;
  config.insecure = security.insecure;
  config.state_file = std::move(security.state_file);
  config.build_in_background = security.build_in_background;
  if (!HexToBytes(manifest.tflite_sha256, config.base_sha256.data(), 32)) {
    return Status::Error("manifest: tflite sha256 is not 64 hex digits");
  }
  for (const ParameterEntry& e : manifest.parameters) {
    update::TensorLocation loc;
    loc.buffer_offset = e.buffer_offset;
    loc.buffer_size = e.buffer_size;
    loc.dtype = update::DTypeFromName(e.dtype);  // float16 weights are patched too
    config.table[e.tensor_index] = loc;
  }
  config.max_packet_bytes = update::DecodeLimits::ForTable(config.table).MaxPacketBytes();
  if (config.insecure) {
    std::fprintf(stderr, "mobdistill-engine: WARNING: updates are NOT authenticated "
                 "(insecure): anyone who can reach the update port or folder can rewrite the "
                 "model. Use a per-device key (--update_key_file) outside experiments.\n");
  }
  manager_.reset(new UpdateManager(engine_, std::move(config)));
  MD_RETURN_IF_ERROR(manager_->LoadState());
  manager_->Start();
  return Status::Ok();
}

Status UpdateSession::Listen(const std::string& dir, int port) {
  if (!dir.empty()) {
    MD_RETURN_IF_ERROR(dir_watcher_.Start(dir, manager_.get(), manager_->max_packet_bytes()));
  }
  if (port >= 0) {
    const TcpLimits limits = TcpLimits::For(manager_->max_packet_bytes());
    MD_RETURN_IF_ERROR(tcp_listener_.Start(port, manager_.get(), limits));
    std::fprintf(stderr, "mobdistill-engine: update listener on 127.0.0.1:%d (messages up to "
                 "%llu bytes, %d clients, %llu bytes outstanding)\n", tcp_listener_.port(),
                 static_cast<unsigned long long>(limits.max_message_bytes), limits.max_clients,
                 static_cast<unsigned long long>(limits.max_outstanding_bytes));
  }
  return Status::Ok();
}

void UpdateSession::SubmitDue(int64_t frame) {
  for (; schedule_next_ < schedule_.size() && schedule_[schedule_next_].frame <= frame;
       ++schedule_next_) {
    IncomingPacket p;
    p.source = "schedule";
    p.name = schedule_[schedule_next_].path;
    p.bytes = schedule_[schedule_next_].bytes;
    manager_->Submit(std::move(p));
  }
}

void UpdateSession::Log(const std::vector<UpdateRecord>& records) {
  for (const UpdateRecord& r : records) {
    log_.Add(r);
    if (on_record_) on_record_(r);
  }
}

void UpdateSession::BetweenFrames(int64_t frame, bool wait) {
  std::vector<UpdateRecord> records;
  manager_->BetweenFrames(frame, wait, &records);
  Log(records);
}

UpdateRecord UpdateSession::ApplyNow(std::vector<uint8_t> packet, int64_t frame) {
  std::promise<UpdateRecord> ready;
  std::future<UpdateRecord> outcome = ready.get_future();
  IncomingPacket p;
  p.source = "api";
  p.name = "api";
  p.bytes = std::move(packet);
  p.on_ready = [&ready](const UpdateRecord& r) { ready.set_value(r); };
  // No frame can adopt a build while we wait, so this returns only because the worker hands the
  // outcome over after recording it; the facade has no other update source that could hold the
  // worker with a build awaiting adoption.
  manager_->SubmitNow(std::move(p), frame);
  return outcome.get();
}

void UpdateSession::Finish(std::vector<std::string>* warnings) {
  tcp_listener_.StopReading();
  dir_watcher_.StopScanning();
  std::vector<UpdateRecord> records;
  manager_->Stop(&records);
  dir_watcher_.Stop();  // deletes + receipts for the outcomes the worker reported last
  if (const uint64_t dropped = manager_->dropped_records()) {
    warnings->push_back(std::to_string(dropped) + " refused update messages arrived "
                        "faster than frames ran and were not recorded one by one");
  }
  for (; schedule_next_ < schedule_.size(); ++schedule_next_) {  // due after the last run
    UpdateRecord r;
    r.source = "schedule";
    r.name = schedule_[schedule_next_].path;
    r.packet_bytes = schedule_[schedule_next_].bytes.size();
    r.reason = "run_ended";
    r.message = "scheduled for frame " + std::to_string(schedule_[schedule_next_].frame) +
                ", after the last run";
    records.push_back(r);
  }
  tcp_listener_.Stop();  // after Stop(): the final acks go out
  Log(records);
}

UpdateTotals UpdateSession::totals() const {
  UpdateTotals totals;
  totals.received = log_.received();
  totals.applied = log_.applied();
  totals.rejected = log_.rejected();
  totals.rejected_by_reason = log_.rejected_by_reason();
  totals.has_last = !log_.recent().empty();
  if (totals.has_last) totals.last = log_.recent().back();
  return totals;
}

}  // namespace mobdistill
