// Where update packets come from (all optional, any combination; see docs/engine.md "Sparse
// updates" for the rules a sender must follow):
//  * DirUpdateWatcher: a watched folder (what `adb push` feeds on a phone). Regular `*.mdup`
//    files whose size and mtime held still for one scan, taken in name order; dot-files and
//    `*.part` are names still being written. After the outcome the packet is deleted and a
//    receipt (the update record as JSON, never the packet) is left as `<file>.applied` or
//    `<file>.rejected`, so nothing replayable stays behind.
//  * TcpUpdateListener: 127.0.0.1:PORT, messages = 4-byte big-endian length + packet; one JSON
//    ack line (the update record) per message. Several clients at once, read deadlines, a
//    per-message size cap from the model, and back-pressure on packets/bytes outstanding.
//  * LoadUpdateSchedule: `{"frame": K, "packet": "PATH"}` lines; the runner submits a packet
//    when run K starts (deterministic replay).
#ifndef MOBDISTILL_ENGINE_UPDATE_SOURCES_H_
#define MOBDISTILL_ENGINE_UPDATE_SOURCES_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "status.h"
#include "update_manager.h"

namespace mobdistill {

class DirUpdateWatcher {
 public:
  // Names remembered as unremovable (or waiting for a change after `truncated`) at most; more
  // would let a folder of junk grow the engine's memory.
  static constexpr size_t kMaxRememberedNames = 4096;
  ~DirUpdateWatcher() { Stop(); }
  // max_packet_bytes: the same cap as TCP messages (UpdateConfig::max_packet_bytes).
  Status Start(const std::string& dir, UpdateManager* manager, uint64_t max_packet_bytes,
               int poll_ms = 20);
  void StopScanning();  // joins the scanner thread (bounded by poll_ms); outcomes still land
  void Stop();          // StopScanning + deletes/receipts for the outcomes reported so far

 private:
  struct Seen {  // what the last scan saw of a name
    off_t size = -1;
    int64_t mtime_ns = -1;
    bool operator==(const Seen& o) const { return size == o.size && mtime_ns == o.mtime_ns; }
  };
  struct Outcome {
    std::string name;
    UpdateRecord record;
  };
  struct Truncated {  // refused as truncated while recently written: perhaps still being written
    Seen seen;
    UpdateRecord record;
  };
  // A truncated file younger than this may be a writer's first half: kept and re-read when it
  // changes; older (or unchanged this long) it is consumed as rejected.
  static constexpr int64_t kWriteGraceNs = 1000000000;
  void Loop();
  void Scan();
  void TakeIfSettled(const std::string& name);
  void FinishOutcomes();
  void Consume(const std::string& name, const UpdateRecord& record);
  void Refuse(const std::string& name, const UpdateRecord& record);  // record + Consume
  void Remember(std::set<std::string>* names, const std::string& name);

  std::string dir_;
  UpdateManager* manager_ = nullptr;
  uint64_t max_packet_bytes_ = 0;
  int poll_ms_ = 20;
  std::thread thread_;
  std::mutex mu_;  // guards stop_ and outcomes_ (the rest belongs to the scanner)
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<Outcome> outcomes_;           // reported by the manager, handled by the scanner
  std::map<std::string, Seen> last_seen_;  // settle check: unchanged across two scans
  std::map<std::string, Seen> reading_;     // handed over: the state that was read
  std::map<std::string, Truncated> truncated_;
  std::set<std::string> unremovable_;      // could not be deleted: never read again
};

struct TcpLimits {
  uint64_t max_message_bytes = 0;      // per message (the model's packet cap)
  uint64_t max_outstanding_bytes = 0;  // received or being received, outcome not final
  int max_outstanding_packets = 8;
  int max_clients = 8;
  int stall_timeout_ms = 2000;  // a message in progress with no byte for this long: dropped
  int idle_timeout_ms = 60000;  // a connection with nothing in flight: closed
  // Defaults for a per-message cap: room for two full messages, at least 4 MiB.
  static TcpLimits For(uint64_t max_message_bytes);
};

class TcpUpdateListener {
 public:
  ~TcpUpdateListener() { Stop(); }
  // Binds 127.0.0.1:port (0: any free port, see port()) and starts the listener thread.
  Status Start(int port, UpdateManager* manager, TcpLimits limits);
  int port() const { return port_; }
  void StopReading() { reading_.store(false); }  // no new packets; acks still go out
  void Stop();  // sends the queued acks, closes the sockets, joins (bounded)

 private:
  using Clock = std::chrono::steady_clock;
  struct Client {
    int fd = -1;
    uint64_t id = 0;
    uint8_t header[4] = {0, 0, 0, 0};
    size_t header_got = 0;
    uint64_t length = 0;          // of the message being received (header complete)
    std::vector<uint8_t> body;    // grows as bytes arrive, never reserved from the header
    uint64_t reserved = 0;        // bytes of this message counted in outstanding_bytes_
    int in_flight = 0;            // submitted messages without an ack yet
    std::string out;              // ack lines not yet sent
    bool reading = true;          // false: the peer finished, or the engine hung up on it
    Clock::time_point last_progress;
  };
  void Loop();
  void Accept();
  void Read(Client* c);
  void OnHeader(Client* c);
  void SubmitMessage(Client* c);
  // A refusal by the listener itself (too_large, busy, timeout): an ack, a record, hang up.
  void Refuse(Client* c, const std::string& reason, const std::string& message);
  void TakeAcks();
  void Write(Client* c);
  void Expire(Clock::time_point now);
  void Release(uint64_t bytes);
  bool Finished(const Client& c) const;

  UpdateManager* manager_ = nullptr;
  TcpLimits limits_;
  int port_ = 0;
  int listen_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> reading_{true}, stop_{false};
  std::vector<std::unique_ptr<Client>> clients_;  // listener thread only
  uint64_t next_id_ = 0, message_count_ = 0;
  std::mutex mu_;  // guards acks_, outstanding_*: callbacks run on the worker/frame thread
  std::deque<std::pair<uint64_t, std::string>> acks_;  // (client id, line)
  uint64_t outstanding_bytes_ = 0;
  int outstanding_packets_ = 0;
};

struct ScheduledPacket {
  int64_t frame = 0;     // run index at whose start the packet becomes visible
  std::string path;
  std::vector<uint8_t> bytes;
};

// Reads the schedule and every packet it names (relative paths: from the schedule's folder),
// sorted by frame (stable). Errors name the line.
Status LoadUpdateSchedule(const std::string& path, std::vector<ScheduledPacket>* out);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_UPDATE_SOURCES_H_
