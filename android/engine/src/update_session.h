// UpdateSession: streamed sparse updates for one loaded model. Wires the update manager (decode,
// verify, patch, build and warm off the frame thread) to the model's parameter map and to its
// sources (folder, TCP port, schedule, direct calls), adopts prepared models between frames and
// keeps the log of outcomes. Shared by the benchmark and the app facade.
#ifndef MOBDISTILL_ENGINE_UPDATE_SESSION_H_
#define MOBDISTILL_ENGINE_UPDATE_SESSION_H_

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "manifest.h"
#include "model_slot.h"
#include "params.h"
#include "status.h"
#include "update_manager.h"
#include "update_record.h"
#include "update_sources.h"

namespace mobdistill {

// How streamed updates are authenticated, remembered and built: from the flags
// (UpdateSecurityFromFlags) or from the facade's options.
struct UpdateSecurity {
  std::vector<uint8_t> hmac_key;  // empty: no key, so every packet is refused unless insecure
  std::array<uint8_t, update::kDeviceIdBytes> device_id{};
  bool insecure = false;          // explicit opt-out: unauthenticated packets are accepted
  std::string state_file;         // empty: the high-water sequence lives in memory only
  bool build_in_background = true;  // --update_build_priority=idle (UpdateConfig's meaning)
};

// Reads --update_key_file and parses --update_device_id.
Status UpdateSecurityFromFlags(const Params& params, UpdateSecurity* security);

// What the app's stats need of the update log: totals and the last record, not the ring.
struct UpdateTotals {
  uint64_t received = 0, applied = 0, rejected = 0;
  std::map<std::string, uint64_t> rejected_by_reason;
  bool has_last = false;
  UpdateRecord last;
};

class UpdateSession {
 public:
  // `on_record` (optional) sees every outcome as it is logged, on the frame thread.
  UpdateSession(Engine* engine, std::function<void(const UpdateRecord&)> on_record);
  UpdateSession(const UpdateSession&) = delete;
  UpdateSession& operator=(const UpdateSession&) = delete;
  ~UpdateSession();

  // Starts the update worker for `manifest`'s parameter map; `base` is the pristine model that
  // base-relative packets patch.
  Status Start(const Manifest& manifest, std::vector<uint8_t> base, UpdateSecurity security);
  // Starts taking packets from a folder (empty: none) and a localhost port (< 0: none).
  Status Listen(const std::string& dir, int port);
  // --update_schedule: packets submitted when their frame comes (SubmitDue).
  void SetSchedule(std::vector<ScheduledPacket> schedule) { schedule_ = std::move(schedule); }
  void SubmitDue(int64_t frame);

  // Frame thread, between two frames only: adopts a prepared model and logs finished outcomes;
  // `wait` first lets every submitted packet finish (--update_blocking).
  void BetweenFrames(int64_t frame, bool wait);
  // Prepares `packet` on the calling thread (never the frame thread) and returns its outcome;
  // the model is adopted at the next BetweenFrames. No frame may run BetweenFrames meanwhile.
  UpdateRecord ApplyNow(std::vector<uint8_t> packet, int64_t frame);
  // After the last frame: stops sources and worker, logs what is left (scheduled packets that
  // never came due: run_ended) and adds a warning if refused packets were only counted.
  void Finish(std::vector<std::string>* warnings);

  const UpdateLog& log() const { return log_; }
  UpdateTotals totals() const;

 private:
  void Log(const std::vector<UpdateRecord>& records);

  Engine* engine_;
  std::function<void(const UpdateRecord&)> on_record_;
  std::unique_ptr<UpdateManager> manager_;
  DirUpdateWatcher dir_watcher_;
  TcpUpdateListener tcp_listener_;
  std::vector<ScheduledPacket> schedule_;
  size_t schedule_next_ = 0;
  UpdateLog log_;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_UPDATE_SESSION_H_
