// Per-frame device state from sysfs: current CPU frequencies and thermal-zone temperatures.
//
// Discover() runs once, before the first frame: it walks <root>/devices/system/cpu/cpuN/cpufreq/
// scaling_cur_freq (kHz) and <root>/class/thermal/thermal_zoneN/temp (millidegrees C, with the
// zone's `type`), and keeps an open descriptor for every file that reads back as an integer.
// Sample() then costs one pread() per source (sysfs re-generates a node's text on every read
// at offset 0), so it can run every frame; the runner calls it outside the timed region.
// Nothing here fails a run: an unreadable root just yields no sources.
//
// Linux and Android alike. Android's PowerManager thermal *status* is not readable from a
// native process; the harness app adds it (docs/engine.md "Device sensors").
#ifndef MOBDISTILL_ENGINE_DEVICE_SENSORS_H_
#define MOBDISTILL_ENGINE_DEVICE_SENSORS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mobdistill {

// The integer in a sysfs node's text ("1804800\n"): surrounding whitespace is allowed, anything
// else is not. False for empty, non-numeric, trailing garbage or out-of-range text.
bool ParseSysfsInt(const char* text, size_t size, int64_t* value);

// One frame's readings.
struct SensorSample {
  // Indexed by CPU number (0 .. highest discovered CPU); -1 where the CPU has no readable
  // source or its read failed this frame (an offline core).
  std::vector<int64_t> cpu_freq_khz;
  // (zone key, degrees C) for every zone whose read succeeded this frame, in zone order.
  std::vector<std::pair<std::string, double>> thermal_c;
};

class DeviceSensors {
 public:
  struct Cpu {
    int index = 0;  // N of cpuN
    int fd = -1;
  };
  struct Zone {
    int index = 0;     // N of thermal_zoneN
    std::string type;  // contents of thermal_zoneN/type ("" if unreadable)
    std::string key;   // the JSON key: `type`, or "thermal_zoneN" if empty or already used
    int fd = -1;
  };

  DeviceSensors() = default;
  ~DeviceSensors();
  DeviceSensors(const DeviceSensors&) = delete;
  DeviceSensors& operator=(const DeviceSensors&) = delete;

  // Closes what an earlier call kept, then discovers the readable sources under `sysfs_root`.
  void Discover(const std::string& sysfs_root);
  void Close();
  bool any() const { return !cpus_.empty() || !zones_.empty(); }
  const std::string& root() const { return root_; }
  const std::vector<Cpu>& cpus() const { return cpus_; }
  const std::vector<Zone>& zones() const { return zones_; }
  // Reads every source once. `out` is overwritten (its buffers are reused).
  void Sample(SensorSample* out) const;

 private:
  std::string root_;
  std::vector<Cpu> cpus_;
  std::vector<Zone> zones_;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_DEVICE_SENSORS_H_
