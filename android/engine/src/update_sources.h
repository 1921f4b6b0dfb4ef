// Where update packets come from (all optional, any combination; see docs/engine.md):
//  * DirUpdateWatcher: a watched folder (what `adb push` feeds on a phone). Complete `*.mdup`
//    files are taken in name order; a writer writes under another name and renames (atomic on
//    one filesystem). After the outcome the file is renamed to `<file>.applied` or
//    `<file>.rejected`; packets still pending when the run ends are left untouched.
//  * TcpUpdateListener: 127.0.0.1:PORT, messages = 4-byte big-endian length + packet; one JSON
//    ack line (the update record) per message, sent when its outcome is final.
//  * LoadUpdateSchedule: `{"frame": K, "packet": "PATH"}` lines; the runner submits a packet
//    when run K starts (deterministic replay).
#ifndef MOBDISTILL_ENGINE_UPDATE_SOURCES_H_
#define MOBDISTILL_ENGINE_UPDATE_SOURCES_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
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
  ~DirUpdateWatcher() { Stop(); }
  Status Start(const std::string& dir, UpdateManager* manager, int poll_ms = 20);
  void Stop();  // joins the scanner thread (bounded by poll_ms)

 private:
  void Loop();
  void Scan();
  std::string dir_;
  UpdateManager* manager_ = nullptr;
  int poll_ms_ = 20;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::set<std::string> seen_;  // submitted and not yet renamed
};

class TcpUpdateListener {
 public:
  static constexpr uint64_t kMaxMessageBytes = (64ull << 20) + 4096;
  ~TcpUpdateListener() { Stop(); }
  // Binds 127.0.0.1:port (0: any free port, see port()) and starts the listener thread.
  Status Start(int port, UpdateManager* manager);
  int port() const { return port_; }
  void StopReading() { reading_.store(false); }  // no new packets; acks still go out
  void Stop();  // sends the queued acks, closes the sockets, joins (bounded)

 private:
  void Loop();
  void ReadClient();
  void FlushAcks();
  void CloseClient();
  void EnqueueAck(uint64_t connection, const std::string& line);

  UpdateManager* manager_ = nullptr;
  int port_ = 0;
  int listen_fd_ = -1, client_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> reading_{true}, stop_{false};
  std::vector<uint8_t> buffer_;
  bool peer_done_ = false;
  uint64_t connection_ = 0, message_count_ = 0;
  std::mutex mu_;  // guards acks_ and outstanding_
  std::deque<std::pair<uint64_t, std::string>> acks_;
  int64_t outstanding_ = 0;  // messages of the current connection without an ack yet
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
