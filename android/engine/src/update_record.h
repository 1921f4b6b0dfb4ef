// UpdateRecord: the outcome of one streamed sparse-update packet, as written to the JSONL
// (`{"event":"update",...}`), sent as the TCP ack line and counted in the summary.
#ifndef MOBDISTILL_ENGINE_UPDATE_RECORD_H_
#define MOBDISTILL_ENGINE_UPDATE_RECORD_H_

#include <cstdint>
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
                               // run_ended / build_failed / too_large / unreadable
  std::string message;         // rejected: the decoder's text (what to fix)
  int64_t received_frame = -1; // run index before which the engine picked the packet up
  int64_t swapped_frame = -1;  // applied: first run index on the new model
  // Stage times in microseconds; < 0: the stage was not reached (JSON null).
  double decode_us = -1, patch_us = -1, build_us = -1, warm_us = -1;
  uint64_t packet_bytes = 0;
  uint64_t num_values = 0;     // patched elements

  // One JSON object, no newline: {"event":"update","sequence":...,"status":...,...}
  std::string ToJson() const;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_UPDATE_RECORD_H_
