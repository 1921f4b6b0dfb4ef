// UpdateRecord: the outcome of one streamed sparse-update packet, as written to the JSONL
// (`{"event":"update",...}`), sent as the TCP ack line and counted in the summary.
#ifndef MOBDISTILL_ENGINE_UPDATE_RECORD_H_
#define MOBDISTILL_ENGINE_UPDATE_RECORD_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>

namespace mobdistill {

struct UpdateRecord {
  std::string source;          // "dir" | "schedule" | "tcp" | "api"
  std::string name;            // file name, schedule path, "tcp:<n>" or "api:<n>"
  bool has_sequence = false;   // false when the packet could not be decoded
  uint64_t sequence = 0;
  std::string mode;            // "base_relative" | "cumulative" | "" (not decoded)
  bool applied = false;
  std::string reason;          // rejected: a wire status name (bad_magic, replay, ...) or
                               // run_ended / build_failed / resync_needed, or a source's
                               // refusal: too_large / busy / timeout / unreadable
  std::string message;         // rejected: the decoder's text (what to fix)
  int64_t received_frame = -1; // run index before which the engine picked the packet up
  int64_t swapped_frame = -1;  // applied: first run index on the new model
  // Stage times in microseconds; < 0: the stage was not reached (JSON null).
  double decode_us = -1, patch_us = -1, build_us = -1, warm_us = -1;
  uint64_t packet_bytes = 0;
  uint64_t num_values = 0;     // patched elements
  // How the new model was built: the building thread's priority ("idle": SCHED_IDLE, so it
  // only uses CPU time frames leave; "raised": started idle, raised to frame priority because
  // it ran past UpdateConfig::raise_build_after_frames; "normal") and the threads the new
  // model runs frames with.
  std::string build_priority;  // "" when no build was reached (JSON null)
  int32_t build_threads = 0;
  // Background updates (Engine::SetPacing): "gaps" (the work waited for gaps between frames
  // until done), "stopped" (it stopped waiting after unpace_build_after_frames frames),
  // "no_room" (the gaps could not hold it: it ran beside the frames from the start); "" for
  // normal-priority updates, which are not paced (JSON null).
  std::string pacing;
  // The update worker's CPU time for this packet (decode to build: the work, not its waits),
  // and the moving-average idle time between frames when it started (< 0: no frames running,
  // JSON null). Pacing needs unpace_build_after_frames such gaps to hold the work.
  double work_cpu_us = -1, frame_gap_us = -1;

  // One JSON object, no newline: {"event":"update","sequence":...,"status":...,...}
  std::string ToJson() const;
};

// Every outcome of a run or an app session, in bounded memory: running totals over all records
// and the last kKept records themselves (for the summary's stage-time statistics and the
// facade's `last`). An engine that takes an update every second for days stays the same size.
class UpdateLog {
 public:
  static constexpr size_t kKept = 256;
  void Add(const UpdateRecord& record) {
    ++received_;
    if (record.applied) {
      ++applied_;
    } else {
      ++rejected_by_reason_[record.reason];
    }
    recent_.push_back(record);
    if (recent_.size() > kKept) recent_.pop_front();
  }
  uint64_t received() const { return received_; }
  uint64_t applied() const { return applied_; }
  uint64_t rejected() const { return received_ - applied_; }
  const std::map<std::string, uint64_t>& rejected_by_reason() const { return rejected_by_reason_; }
  const std::deque<UpdateRecord>& recent() const { return recent_; }  // oldest first

 private:
  uint64_t received_ = 0, applied_ = 0;
  std::map<std::string, uint64_t> rejected_by_reason_;  // keys: the fixed reason names
  std::deque<UpdateRecord> recent_;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_UPDATE_RECORD_H_
