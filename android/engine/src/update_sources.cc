#include "update_sources.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "manifest.h"

namespace mobdistill {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---------------------------------------------------------------- DirUpdateWatcher

Status DirUpdateWatcher::Start(const std::string& dir, UpdateManager* manager, int poll_ms) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::Error("--update_dir " + dir + " is not a folder; create it first");
  }
  dir_ = dir;
  manager_ = manager;
  poll_ms_ = poll_ms;
  Scan();  // packets already waiting count from the first frame on
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void DirUpdateWatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DirUpdateWatcher::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(poll_ms_));
    if (stop_) break;
    lock.unlock();
    Scan();
    lock.lock();
  }
}

void DirUpdateWatcher::Scan() {
  std::vector<std::string> names;
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (EndsWith(name, ".mdup")) names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (seen_.count(name)) continue;
    }
    IncomingPacket p;
    p.source = "dir";
    p.name = name;
    const std::string path = dir_ + "/" + name;
    if (!ReadFileBytes(path, &p.bytes).ok()) continue;  // vanished or unreadable: next scan
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.insert(name);
    }
    p.on_done = [this, path, name](const UpdateRecord& r) {
      if (r.reason == "run_ended") return;  // not processed: leave it for the next run
      const std::string to = path + (r.applied ? ".applied" : ".rejected");
      std::rename(path.c_str(), to.c_str());
      std::lock_guard<std::mutex> lock(mu_);
      seen_.erase(name);
    };
    manager_->Submit(std::move(p));
  }
}

// ---------------------------------------------------------------- TcpUpdateListener

Status TcpUpdateListener::Start(int port, UpdateManager* manager) {
  manager_ = manager;
  listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) return Status::Error("--update_port: socket() failed: " + std::string(std::strerror(errno)));
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 4) != 0) {
    const std::string why = std::strerror(errno);
    close(listen_fd_);
    listen_fd_ = -1;
    return Status::Error("--update_port " + std::to_string(port) + ": cannot listen on 127.0.0.1 (" +
                         why + "); pick a free port");
  }
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void TcpUpdateListener::Stop() {
  reading_.store(false);
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  listen_fd_ = -1;
}

void TcpUpdateListener::EnqueueAck(uint64_t connection, const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  acks_.emplace_back(connection, line + "\n");
}

void TcpUpdateListener::CloseClient() {
  if (client_fd_ >= 0) close(client_fd_);
  client_fd_ = -1;
  buffer_.clear();
  peer_done_ = false;
  std::lock_guard<std::mutex> lock(mu_);
  outstanding_ = 0;
}

void TcpUpdateListener::FlushAcks() {
  std::deque<std::pair<uint64_t, std::string>> acks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    acks.swap(acks_);
  }
  for (const auto& ack : acks) {
    if (ack.first != connection_ || client_fd_ < 0) continue;  // that client is gone
    size_t sent = 0;
    while (sent < ack.second.size()) {
      const ssize_t n = send(client_fd_, ack.second.data() + sent, ack.second.size() - sent,
                             MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += size_t(n);
    }
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
  }
}

void TcpUpdateListener::ReadClient() {
  uint8_t chunk[1 << 16];
  const ssize_t n = recv(client_fd_, chunk, sizeof(chunk), 0);
  if (n <= 0) {
    peer_done_ = true;  // the client finished sending: keep the socket for its acks
    return;
  }
  buffer_.insert(buffer_.end(), chunk, chunk + n);
  while (buffer_.size() >= 4) {
    const uint64_t len = (uint64_t(buffer_[0]) << 24) | (uint64_t(buffer_[1]) << 16) |
                         (uint64_t(buffer_[2]) << 8) | uint64_t(buffer_[3]);
    IncomingPacket p;
    p.source = "tcp";
    p.name = "tcp:" + std::to_string(++message_count_);
    const uint64_t connection = connection_;
    p.on_done = [this, connection](const UpdateRecord& r) { EnqueueAck(connection, r.ToJson()); };
    if (len > kMaxMessageBytes) {  // cannot resynchronise the stream: refuse and hang up
      p.forced_reason = "too_large";
      buffer_.clear();
      peer_done_ = true;
    } else if (buffer_.size() < 4 + len) {
      break;
    } else {
      p.bytes.assign(buffer_.begin() + 4, buffer_.begin() + 4 + std::ptrdiff_t(len));
      buffer_.erase(buffer_.begin(), buffer_.begin() + 4 + std::ptrdiff_t(len));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++outstanding_;
    }
    manager_->Submit(std::move(p));
    if (peer_done_) break;
  }
}

void TcpUpdateListener::Loop() {
  while (!stop_.load()) {
    if (client_fd_ < 0) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 20) > 0 && (p.revents & POLLIN) && reading_.load()) {
        const int fd = accept(listen_fd_, nullptr, nullptr);
        if (fd >= 0) {
          client_fd_ = fd;
          ++connection_;
          timeval timeout{1, 0};  // a stalled client cannot hold the engine for long
          setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
        }
      }
      continue;
    }
    FlushAcks();
    bool idle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      idle = outstanding_ <= 0;
    }
    if (peer_done_ && idle) {
      CloseClient();
      continue;
    }
    pollfd p{client_fd_, POLLIN, 0};
    if (!peer_done_ && reading_.load() && poll(&p, 1, 10) > 0 &&
        (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      ReadClient();
    } else if (peer_done_ || !reading_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  FlushAcks();  // the final records (run_ended included) of the current client
  CloseClient();
}

// ---------------------------------------------------------------- schedule

Status LoadUpdateSchedule(const std::string& path, std::vector<ScheduledPacket>* out) {
  std::ifstream in(path);
  if (!in) return Status::Error("cannot read --update_schedule " + path);
  std::string dir;
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) dir = path.substr(0, slash + 1);
  std::string line;
  int line_no = 0;
  out->clear();
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "--update_schedule " + path + " line " + std::to_string(line_no);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("frame") || !j.contains("packet") ||
        !j["frame"].is_number_integer() || !j["packet"].is_string() ||
        j["frame"].get<int64_t>() < 0) {
      return Status::Error(where + ": expected {\"frame\": K >= 0, \"packet\": \"PATH\"}");
    }
    ScheduledPacket p;
    p.frame = j["frame"].get<int64_t>();
    p.path = j["packet"].get<std::string>();
    if (!p.path.empty() && p.path[0] != '/') p.path = dir + p.path;
    if (!ReadFileBytes(p.path, &p.bytes).ok()) {
      return Status::Error(where + ": cannot read packet " + p.path);
    }
    out->push_back(std::move(p));
  }
  std::stable_sort(out->begin(), out->end(),
                   [](const ScheduledPacket& a, const ScheduledPacket& b) { return a.frame < b.frame; });
  return Status::Ok();
}

}  // namespace mobdistill
