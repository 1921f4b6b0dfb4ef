#include "device_sensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <set>

namespace mobdistill {
namespace {

// N if `name` is `prefix` followed by decimal digits only (and N fits an int), else -1.
int NumberedEntry(const char* name, const std::string& prefix) {
  const std::string s(name);
  if (s.size() <= prefix.size() || s.compare(0, prefix.size(), prefix) != 0) return -1;
  if (s.size() - prefix.size() > 6) return -1;
  int n = 0;
  for (size_t i = prefix.size(); i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return -1;
    n = n * 10 + (s[i] - '0');
  }
  return n;
}

std::vector<int> NumberedEntries(const std::string& dir, const std::string& prefix) {
  std::vector<int> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = readdir(d)) {
    const int n = NumberedEntry(e->d_name, prefix);
    if (n >= 0) out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Reads from offset 0 (sysfs re-generates the text there); -1 on error.
ssize_t ReadAt0(int fd, char* buf, size_t size) {
  ssize_t n;
  do {
    n = pread(fd, buf, size, 0);
  } while (n < 0 && errno == EINTR);
  return n;
}

bool ReadInt(int fd, int64_t* value) {
  char buf[64];
  const ssize_t n = ReadAt0(fd, buf, sizeof(buf));
  return n > 0 && ParseSysfsInt(buf, static_cast<size_t>(n), value);
}

// An open descriptor for `path` if it reads back as an integer now, else -1.
int OpenIntNode(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int64_t v = 0;
  if (!ReadInt(fd, &v)) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string ReadText(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[128];
  const ssize_t n = ReadAt0(fd, buf, sizeof(buf));
  close(fd);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  for (char& c : s) {  // a JSON key later: keep it printable ASCII
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) c = '?';
  }
  return s;
}

}  // namespace

bool ParseSysfsInt(const char* text, size_t size, int64_t* value) {
  size_t b = 0, e = size;
  while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
  if (b == e || e - b > 24) return false;
  const std::string digits(text + b, e - b);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(digits.c_str(), &end, 10);
  if (errno != 0 || end != digits.c_str() + digits.size()) return false;
  *value = static_cast<int64_t>(v);
  return true;
}

DeviceSensors::~DeviceSensors() { Close(); }

void DeviceSensors::Close() {
  for (const Cpu& c : cpus_) close(c.fd);
  for (const Zone& z : zones_) close(z.fd);
  cpus_.clear();
  zones_.clear();
}

void DeviceSensors::Discover(const std::string& sysfs_root) {
  Close();
  root_ = sysfs_root;
  std::string root = sysfs_root;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  const std::string cpu_dir = root + "/devices/system/cpu";
  for (int n : NumberedEntries(cpu_dir, "cpu")) {
    const int fd = OpenIntNode(cpu_dir + "/cpu" + std::to_string(n) + "/cpufreq/scaling_cur_freq");
    if (fd >= 0) cpus_.push_back(Cpu{n, fd});
  }
  const std::string thermal_dir = root + "/class/thermal";
  std::set<std::string> used;
  for (int n : NumberedEntries(thermal_dir, "thermal_zone")) {
    const std::string zone = thermal_dir + "/thermal_zone" + std::to_string(n);
    const int fd = OpenIntNode(zone + "/temp");
    if (fd < 0) continue;
    Zone z;
    z.index = n;
    z.fd = fd;
    z.type = ReadText(zone + "/type");
    z.key = z.type;
    if (z.key.empty() || used.count(z.key) != 0) z.key = "thermal_zone" + std::to_string(n);
    used.insert(z.key);
    zones_.push_back(std::move(z));
  }
}

void DeviceSensors::Sample(SensorSample* out) const {
  out->cpu_freq_khz.assign(cpus_.empty() ? 0 : size_t(cpus_.back().index) + 1, -1);
  for (const Cpu& c : cpus_) {
    int64_t khz = 0;
    if (ReadInt(c.fd, &khz)) out->cpu_freq_khz[size_t(c.index)] = khz;
  }
  out->thermal_c.clear();
  for (const Zone& z : zones_) {
    int64_t milli = 0;
    if (ReadInt(z.fd, &milli)) out->thermal_c.emplace_back(z.key, double(milli) / 1000.0);
  }
}

}  // namespace mobdistill
