// UpdateManager: applies streamed sparse-update packets (wire format MDUP v1, the `update/`
// library) to the running model through the Engine's double buffer.
//
// Threads: any thread may Submit() a packet into the inbox. The frame thread calls
// BetweenFrames(run) before every frame: it stamps inbox packets with that run index
// (`received_frame`), hands them to the worker, adopts a slot the worker has finished
// (ApplyPendingSwap, so the swap happens between two frames and never under an Invoke) and
// returns the finished records for the listeners. The worker thread decodes + verifies each
// packet (base sha256, HMAC, sequence guard), patches a copy of the pristine base
// (base-relative) or of the currently deployed bytes (cumulative), builds and warms a new slot,
// and waits until the frame thread has adopted it before taking the next packet. A rejected
// packet never touches the active slot.
#ifndef MOBDISTILL_ENGINE_UPDATE_MANAGER_H_
#define MOBDISTILL_ENGINE_UPDATE_MANAGER_H_

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string>
#include <thread>
#include <vector>

#include "mobdistill_update/update.h"
#include "model_slot.h"
#include "status.h"
#include "update_record.h"

namespace mobdistill {

struct IncomingPacket {
  std::string source;  // "dir" | "schedule" | "tcp" | "api"
  std::string name;
  std::vector<uint8_t> bytes;
  int64_t received_frame = -1;  // set by BetweenFrames (or by SubmitNow)
  std::string forced_reason;    // non-empty: reject without decoding (e.g. too_large)
  // Called once with the final record (applied at the swap, or rejected), on whichever thread
  // made it final. Must be quick (rename a file, queue an ack).
  std::function<void(const UpdateRecord&)> on_done;
  // Called once when the worker is done with the packet: slot built and pending (applied=true,
  // swapped_frame still -1) or rejected. Used by the facade's synchronous apply.
  std::function<void(const UpdateRecord&)> on_ready;
};

struct UpdateConfig {
  std::vector<uint8_t> base;                       // pristine deployed .tflite bytes
  std::array<uint8_t, 32> base_sha256{};           // the manifest's artifact sha256
  std::vector<uint8_t> hmac_key;                   // empty: no key (refused unless insecure)
  std::array<uint8_t, update::kDeviceIdBytes> device_id{};  // --update_device_id
  bool insecure = false;                           // --insecure_updates: explicit opt-out
  update::TensorTable table;                       // manifest parameter_map
  // The largest packet (TCP message, watched-folder file) this model can need:
  // DecodeLimits::ForTable(table).MaxPacketBytes(). Larger ones are refused unread.
  uint64_t max_packet_bytes = 0;
  // --update_state_file: the last applied sequence survives restarts (empty: memory only).
  std::string state_file;
  // The worker (decode, patch, build, warm) runs as SCHED_IDLE where the process can give the
  // new slot's threads normal priority back (IdleBuildsRestorable); false keeps it normal.
  bool build_in_background = true;
  // A background build still running when this many frames have started since its packet
  // arrived is raised to the frame thread's priority (other work on the device may leave an
  // idle thread no CPU time at all), so the swap still lands a few frames later.
  int64_t raise_build_after_frames = kRaiseIdleBuildAfterFrames;
  // ... and one still waiting for gaps between frames this many frames after it stops waiting.
  int64_t unpace_build_after_frames = kUnpaceBuildAfterFrames;
};

// The persisted high-water mark: one JSON line {"base_sha256": hex, "last_sequence": N},
// replaced atomically (temporary file, fsync, rename, fsync of the folder).
struct UpdateState {
  std::string base_sha256_hex;
  uint64_t last_sequence = 0;
};
// A missing file is a first start (*state zeroed, Ok); an unreadable or corrupt one is an error.
Status ReadUpdateState(const std::string& path, UpdateState* state);
Status WriteUpdateState(const std::string& path, const UpdateState& state);

class UpdateManager {
 public:
  UpdateManager(Engine* engine, UpdateConfig config);
  ~UpdateManager();
  UpdateManager(const UpdateManager&) = delete;
  UpdateManager& operator=(const UpdateManager&) = delete;

  // Reads config.state_file (if any); call before Start. After a restart with a persisted
  // sequence N the deployed model is the base again, so cumulative packets (which build on
  // model N) are refused as `resync_needed` until a base-relative packet re-bases the chain.
  Status LoadState();
  void Start();
  // Any thread: a packet a source refused before it reached the manager (too_large, busy,
  // timeout, unreadable) becomes a record at the next BetweenFrames. At most kMaxWaitingRecords
  // wait; beyond that they are only counted (dropped_records), so a flood stays bounded.
  void Report(UpdateRecord record);
  static constexpr size_t kMaxWaitingRecords = 1024;
  uint64_t dropped_records();
  // Any thread: the packet becomes visible at the next BetweenFrames.
  void Submit(IncomingPacket packet);
  // Any thread: the packet is handed to the worker at once with `received_frame`.
  void SubmitNow(IncomingPacket packet, int64_t received_frame);
  // Frame thread, between frames; `run` is the frame about to start. With `wait`, blocks until
  // every packet handed over so far is final, so frame `run` already runs on the result.
  void BetweenFrames(int64_t run, bool wait, std::vector<UpdateRecord>* finished);
  // End of the run: stops the worker after its current packet; whatever is not final becomes
  // a rejected record with reason run_ended (a built but never adopted slot included).
  void Stop(std::vector<UpdateRecord>* finished);
  uint64_t last_sequence();
  uint64_t max_packet_bytes() const { return config_.max_packet_bytes; }

 private:
  void WorkerLoop();
  UpdateRecord Process(IncomingPacket* packet);  // worker: decode, patch, build
  void PersistAdopted();  // worker: writes the state file for the last adopted sequence
  // Worker, at start: maps staged_ and spare_ (copies of the base), so the first update does
  // not pay their page faults under frames; stops as soon as a packet waits.
  void WarmBuffers();
  // Worker, before a packet: whether the gaps of `gap_us` (Engine::FrameGapUs) before
  // unpace_build_after_frames, less one, hold as much work as the last applied update took
  // (its work_cpu_us; before the first, the build Engine::Load timed over
  // kBuildShareOfUpdate). If not, pacing would only delay the update until it stops waiting
  // anyway and then pile the rest onto one frame: it runs beside the frames from the start
  // (`pacing: "no_room"`).
  bool GapsHoldWork(double gap_us) const;
  // The build's share of an update's CPU time, for the first update's estimate (measured:
  // 10-13 of 18-38 ms, DeepLab 256x512, γ 1-20 %; benchmarks/update_apply.py).
  static constexpr double kBuildShareOfUpdate = 0.5;

  Engine* engine_;
  UpdateConfig config_;
  const update::DecodeLimits limits_;  // from config_.table: one deployed model, fixed
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<IncomingPacket> inbox_, queue_;
  bool busy_ = false;        // worker is processing a packet
  bool awaiting_ = false;    // a built slot waits for adoption
  bool stopping_ = false;
  IncomingPacket in_flight_;  // the packet whose slot awaits adoption
  UpdateRecord in_flight_record_;
  std::vector<UpdateRecord> finished_;
  // Worker state (committed when a slot is built): sequence guard and deployed bytes.
  uint64_t last_sequence_ = 0;
  std::vector<uint8_t> current_;
  // Buffers kept between updates so their pages stay mapped (a 9 MB model is ~2300 page faults,
  // milliseconds): the next copy of current_, and the model bytes of the last retired slot.
  std::vector<uint8_t> staged_, spare_;
  bool needs_rebase_ = false;      // restarted after a persisted sequence: base-relative first
  uint64_t adopted_sequence_ = 0;  // last sequence a frame adopted ...
  bool persist_pending_ = false;   // ... not yet written to config_.state_file
  uint64_t dropped_records_ = 0;
  bool release_retired_ = false;   // a frame adopted a slot: the worker frees the old one
  pid_t worker_tid_ = 0;
  std::vector<pid_t> threads_at_worker_start_;  // never raised: not the worker's creations
  int64_t processing_received_frame_ = -1;  // the packet the worker is on (-1: none)
  bool raised_ = false;                     // ... was raised to frame priority
  bool unpaced_ = false;                    // ... no longer waits for gaps between frames
  double last_work_us_ = 0;  // the worker's CPU time for the last applied update (worker only)
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_UPDATE_MANAGER_H_
