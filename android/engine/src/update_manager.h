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
  std::vector<uint8_t> hmac_key;                   // empty: the deployment has no key
  update::TensorTable table;                       // manifest parameter_map
};

class UpdateManager {
 public:
  UpdateManager(Engine* engine, UpdateConfig config);
  ~UpdateManager();
  UpdateManager(const UpdateManager&) = delete;
  UpdateManager& operator=(const UpdateManager&) = delete;

  void Start();
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

 private:
  void WorkerLoop();
  UpdateRecord Process(IncomingPacket* packet);  // worker: decode, patch, build
  void Finalize(IncomingPacket* packet, UpdateRecord record);  // lock held by caller: no

  Engine* engine_;
  UpdateConfig config_;
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
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_UPDATE_MANAGER_H_
