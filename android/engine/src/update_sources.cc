#include "update_sources.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

// A name a sender has finished: `*.mdup`, not a dot-file (dot-files and `*.part` are names
// still being written; `*.mdup.part` does not end in `.mdup`).
bool IsPacketName(const std::string& name) {
  return name[0] != '.' && EndsWith(name, ".mdup");
}

int64_t MtimeNs(const struct stat& st) {
  return int64_t(st.st_mtim.tv_sec) * 1000000000 + int64_t(st.st_mtim.tv_nsec);
}

int64_t NowNs() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t(now.tv_sec) * 1000000000 + int64_t(now.tv_nsec);
}

UpdateRecord Refusal(const std::string& source, const std::string& name, uint64_t bytes,
                     const std::string& reason, const std::string& message) {
  UpdateRecord r;
  r.source = source;
  r.name = name;
  r.packet_bytes = bytes;
  r.reason = reason;
  r.message = message;
  return r;
}

}  // namespace

// ---------------------------------------------------------------- DirUpdateWatcher

Status DirUpdateWatcher::Start(const std::string& dir, UpdateManager* manager,
                               uint64_t max_packet_bytes, int poll_ms) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::Error("--update_dir " + dir + " is not a folder; create it first");
  }
  dir_ = dir;
  manager_ = manager;
  max_packet_bytes_ = max_packet_bytes;
  poll_ms_ = poll_ms;
  // Packets already waiting count from the first frame on: two scans one poll apart satisfy
  // the settle check for files that are not being written.
  Scan();
  if (!last_seen_.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms_));
    Scan();
  }
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void DirUpdateWatcher::StopScanning() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DirUpdateWatcher::Stop() {
  StopScanning();
  if (!dir_.empty()) FinishOutcomes();
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

void DirUpdateWatcher::Remember(std::set<std::string>* names, const std::string& name) {
  if (names->size() < kMaxRememberedNames) {
    names->insert(name);
  } else if (names->size() == kMaxRememberedNames) {
    std::fprintf(stderr, "mobdistill-engine: warning: --update_dir %s: %zu files cannot be "
                 "removed; later ones are ignored after their outcome. Fix the folder's "
                 "permissions\n", dir_.c_str(), names->size());
    names->insert(name);  // one past the cap: the warning is printed once
  }
}

void DirUpdateWatcher::Consume(const std::string& name, const UpdateRecord& record) {
  const std::string path = dir_ + "/" + name;
  if (record.reason == "run_ended") return;  // not processed: left for the next run
  const auto read = reading_.find(name);
  const Seen seen = read == reading_.end() ? Seen() : read->second;
  if (read != reading_.end()) reading_.erase(read);
  if (record.reason == "truncated" && NowNs() - seen.mtime_ns < kWriteGraceNs &&
      truncated_.size() < kMaxRememberedNames) {
    truncated_[name] = Truncated{seen, record};  // perhaps a writer's first half: wait
    return;
  }
  truncated_.erase(name);
  // The receipt is the record, never the packet: nothing here can be fed back as an update.
  const std::string receipt = path + (record.applied ? ".applied" : ".rejected");
  const std::string tmp = dir_ + "/." + name + ".receipt";
  if (std::FILE* f = std::fopen(tmp.c_str(), "wb")) {
    const std::string line = record.ToJson() + "\n";
    const bool written = std::fwrite(line.data(), 1, line.size(), f) == line.size();
    if (std::fclose(f) == 0 && written) std::rename(tmp.c_str(), receipt.c_str());
    std::remove(tmp.c_str());  // a no-op after the rename
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) Remember(&unremovable_, name);
}

void DirUpdateWatcher::Refuse(const std::string& name, const UpdateRecord& record) {
  manager_->Report(record);
  Consume(name, record);
}

void DirUpdateWatcher::FinishOutcomes() {
  std::deque<Outcome> outcomes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes.swap(outcomes_);
  }
  for (const Outcome& o : outcomes) Consume(o.name, o.record);
}

void DirUpdateWatcher::Scan() {
  FinishOutcomes();
  if (unremovable_.size() > kMaxRememberedNames) return;  // jammed: warned once
  // The first kMaxRememberedNames candidates in name order: a folder of a million names costs
  // one readdir per scan, not a million entries of memory.
  std::set<std::string> names;
  if (DIR* d = opendir(dir_.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (!IsPacketName(name) || reading_.count(name) || unremovable_.count(name)) continue;
      names.insert(name);
      if (names.size() > kMaxRememberedNames) names.erase(std::prev(names.end()));
    }
    closedir(d);
  }
  for (auto it = last_seen_.begin(); it != last_seen_.end();) {  // forget vanished names
    it = names.count(it->first) ? std::next(it) : last_seen_.erase(it);
  }
  for (auto it = truncated_.begin(); it != truncated_.end();) {
    it = names.count(it->first) ? std::next(it) : truncated_.erase(it);
  }
  for (const std::string& name : names) TakeIfSettled(name);
}

void DirUpdateWatcher::TakeIfSettled(const std::string& name) {
  const std::string path = dir_ + "/" + name;
  // O_NOFOLLOW: a symlink (to /dev/zero, say) is refused, not followed; O_NONBLOCK: opening a
  // FIFO returns at once instead of waiting for a writer. Neither is read.
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  std::string refused;
  if (fd < 0) {
    if (errno == ENOENT) return;  // renamed away meanwhile
    refused = errno == ELOOP ? "a symbolic link" : std::string("unreadable: ") + std::strerror(errno);
  } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    refused = "not a regular file (a FIFO, device, socket or folder)";
  }
  if (!refused.empty()) {
    if (fd >= 0) close(fd);
    last_seen_.erase(name);
    Refuse(name, Refusal("dir", name, 0, "unreadable",
                         refused + "; write packets as regular files and rename them into place"));
    return;
  }
  const Seen now{st.st_size, MtimeNs(st)};
  const auto truncated = truncated_.find(name);
  if (truncated != truncated_.end()) {
    close(fd);
    if (!(truncated->second.seen == now)) {
      truncated_.erase(truncated);  // it changed: read again once it settles
      last_seen_[name] = now;
    } else if (NowNs() - now.mtime_ns >= kWriteGraceNs) {
      const UpdateRecord record = truncated->second.record;
      Consume(name, record);  // unchanged for the grace: it really is truncated
    }
    return;
  }
  const auto seen = last_seen_.find(name);
  if (seen == last_seen_.end() || !(seen->second == now)) {  // new or still changing
    last_seen_[name] = now;
    close(fd);
    return;
  }
  last_seen_.erase(seen);
  if (uint64_t(st.st_size) > max_packet_bytes_) {
    close(fd);
    Refuse(name, Refusal("dir", name, uint64_t(st.st_size), "too_large",
                          std::to_string(st.st_size) + " bytes, more than the " +
                              std::to_string(max_packet_bytes_) +
                              " a packet for this model can need"));
    return;
  }
  IncomingPacket p;
  p.source = "dir";
  p.name = name;
  p.bytes.resize(size_t(st.st_size) + 1);  // one more: a file that grew is noticed
  size_t got = 0;
  while (got < p.bytes.size()) {
    const ssize_t n = read(fd, p.bytes.data() + got, p.bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  struct stat after;
  const bool changed = fstat(fd, &after) != 0 || !(Seen{after.st_size, MtimeNs(after)} == now) ||
                       got != size_t(st.st_size);
  close(fd);
  if (changed) return;  // written while read: settles again first
  p.bytes.resize(got);
  reading_[name] = now;
  p.on_done = [this, name](const UpdateRecord& r) {
    std::lock_guard<std::mutex> lock(mu_);
    outcomes_.push_back(Outcome{name, r});
  };
  manager_->Submit(std::move(p));
}

// ---------------------------------------------------------------- TcpUpdateListener

TcpLimits TcpLimits::For(uint64_t max_message_bytes) {
  TcpLimits limits;
  limits.max_message_bytes = max_message_bytes;
  limits.max_outstanding_bytes = std::max<uint64_t>(2 * max_message_bytes, 4ull << 20);
  return limits;
}

Status TcpUpdateListener::Start(int port, UpdateManager* manager, TcpLimits limits) {
  manager_ = manager;
  limits_ = limits;
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return Status::Error("--update_port: socket() failed: " + std::string(std::strerror(errno)));
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 16) != 0) {
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

void TcpUpdateListener::Release(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  outstanding_bytes_ -= bytes;
  --outstanding_packets_;
}

void TcpUpdateListener::Refuse(Client* c, const std::string& reason, const std::string& message) {
  const UpdateRecord r = Refusal("tcp", "tcp:" + std::to_string(++message_count_),
                                 c->length, reason, message);
  c->out += r.ToJson() + "\n";
  manager_->Report(r);
  if (c->reserved > 0) Release(c->reserved);
  c->reserved = 0;
  c->body = std::vector<uint8_t>();
  c->header_got = 0;
  c->length = 0;
  c->reading = false;  // the stream cannot be resynchronised: hang up after the ack
}

void TcpUpdateListener::OnHeader(Client* c) {
  c->length = (uint64_t(c->header[0]) << 24) | (uint64_t(c->header[1]) << 16) |
              (uint64_t(c->header[2]) << 8) | uint64_t(c->header[3]);
  if (c->length > limits_.max_message_bytes) {
    Refuse(c, "too_large", std::to_string(c->length) + " bytes, more than the " +
                               std::to_string(limits_.max_message_bytes) +
                               " a packet for this model can need");
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (outstanding_packets_ < limits_.max_outstanding_packets &&
        outstanding_bytes_ + c->length <= limits_.max_outstanding_bytes) {
      ++outstanding_packets_;
      outstanding_bytes_ += c->length;
      c->reserved = c->length;
    }
  }
  if (c->reserved != c->length || c->length == 0) {
    if (c->length == 0) {
      Refuse(c, "truncated", "an empty message; send a 4-byte length and then the packet");
    } else {
      Refuse(c, "busy", "too many packets or bytes waiting to be applied; resend after the "
                        "outstanding acks arrive");
    }
    return;
  }
  c->body.reserve(size_t(c->length));  // counted in outstanding_bytes_ already
}

void TcpUpdateListener::SubmitMessage(Client* c) {
  IncomingPacket p;
  p.source = "tcp";
  p.name = "tcp:" + std::to_string(++message_count_);
  p.bytes = std::move(c->body);
  const uint64_t id = c->id, bytes = c->reserved;
  p.on_done = [this, id, bytes](const UpdateRecord& r) {
    std::lock_guard<std::mutex> lock(mu_);
    acks_.emplace_back(id, r.ToJson() + "\n");
    outstanding_bytes_ -= bytes;
    --outstanding_packets_;
  };
  ++c->in_flight;
  c->body = std::vector<uint8_t>();
  c->reserved = 0;
  c->header_got = 0;
  c->length = 0;
  manager_->Submit(std::move(p));
}

void TcpUpdateListener::Read(Client* c) {
  uint8_t chunk[1 << 16];
  const ssize_t n = recv(c->fd, chunk, sizeof(chunk), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {  // the client finished sending; keep the socket for its acks
    if (c->header_got > 0) Refuse(c, "truncated", "the connection ended inside a message");
    c->reading = false;
    return;
  }
  c->last_progress = Clock::now();
  size_t at = 0;
  while (at < size_t(n) && c->reading) {
    if (c->header_got < 4) {
      c->header[c->header_got++] = chunk[at++];
      if (c->header_got == 4) OnHeader(c);
    } else {
      const size_t take = std::min<size_t>(size_t(n) - at, size_t(c->length) - c->body.size());
      c->body.insert(c->body.end(), chunk + at, chunk + at + take);
      at += take;
    }
    if (c->reading && c->header_got == 4 && c->body.size() == c->length) SubmitMessage(c);
  }
}

void TcpUpdateListener::Accept() {
  const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  if (clients_.size() >= size_t(limits_.max_clients)) {
    // Make room by closing the longest-idle client that has nothing in flight: idle clients
    // can never lock others out. If every client is busy, refuse the newcomer.
    auto idle = clients_.end();
    for (auto it = clients_.begin(); it != clients_.end(); ++it) {
      const Client& c = **it;
      if (c.header_got == 0 && c.in_flight == 0 && c.out.empty() &&
          (idle == clients_.end() || c.last_progress < (*idle)->last_progress)) {
        idle = it;
      }
    }
    if (idle == clients_.end()) {
      const std::string line =
          Refusal("tcp", "tcp:connection", 0, "busy",
                  std::to_string(limits_.max_clients) + " clients are sending; retry later")
              .ToJson() + "\n";
      (void)!send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      close(fd);
      return;
    }
    close((*idle)->fd);
    clients_.erase(idle);
  }
  std::unique_ptr<Client> c(new Client());
  c->fd = fd;
  c->id = ++next_id_;
  c->last_progress = Clock::now();
  clients_.push_back(std::move(c));
}

void TcpUpdateListener::TakeAcks() {
  std::deque<std::pair<uint64_t, std::string>> acks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    acks.swap(acks_);
  }
  for (auto& ack : acks) {
    for (auto& c : clients_) {
      if (c->id != ack.first) continue;
      c->out += ack.second;
      --c->in_flight;
    }
  }
}

void TcpUpdateListener::Write(Client* c) {
  while (!c->out.empty()) {
    const ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) return;
    c->out.erase(0, size_t(n));
    c->last_progress = Clock::now();
  }
}

bool TcpUpdateListener::Finished(const Client& c) const {
  return !c.reading && c.in_flight == 0 && c.out.empty();
}

void TcpUpdateListener::Expire(Clock::time_point now) {
  const auto stall = std::chrono::milliseconds(limits_.stall_timeout_ms);
  for (auto it = clients_.begin(); it != clients_.end();) {
    Client& c = **it;
    const auto quiet = now - c.last_progress;
    if (c.reading && c.header_got > 0 && quiet > stall) {
      Refuse(&c, "timeout", "no byte for " + std::to_string(limits_.stall_timeout_ms) +
                                " ms inside a message; the connection was closed");
      Write(&c);
    }
    const bool stuck_writer = !c.out.empty() && quiet > stall;  // the client reads no acks
    const bool idle = c.reading && c.header_got == 0 && c.in_flight == 0 && c.out.empty() &&
                      quiet > std::chrono::milliseconds(limits_.idle_timeout_ms);
    if (Finished(c) || stuck_writer || idle) {
      close(c.fd);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void TcpUpdateListener::Loop() {
  std::vector<pollfd> fds;
  while (!stop_.load()) {
    TakeAcks();
    const bool reading = reading_.load();
    fds.assign(1, pollfd{listen_fd_, short(reading ? POLLIN : 0), 0});
    for (const auto& c : clients_) {
      short events = 0;
      if (c->reading && reading) events |= POLLIN;
      if (!c->out.empty()) events |= POLLOUT;
      fds.push_back(pollfd{c->fd, events, 0});
    }
    if (poll(fds.data(), nfds_t(fds.size()), 20) > 0) {
      // Clients first: Accept may close one, which would shift the indices.
      for (size_t i = 0; i < clients_.size(); ++i) {
        Client* c = clients_[i].get();
        const short got = fds[i + 1].revents;
        if (got & (POLLIN | POLLHUP | POLLERR)) {
          if (c->reading && reading) Read(c);
        }
        if (got & POLLOUT) Write(c);
      }
      if (fds[0].revents & POLLIN) Accept();
    }
    Expire(Clock::now());
  }
  // The final records (run_ended included) of every client that still waits for them.
  TakeAcks();
  const auto deadline = Clock::now() + std::chrono::milliseconds(200);
  for (auto& c : clients_) {
    while (!c->out.empty() && Clock::now() < deadline) {
      Write(c.get());
      if (!c->out.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    close(c->fd);
  }
  clients_.clear();
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
