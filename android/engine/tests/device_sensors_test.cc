#include "device_sensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "check.h"
#include "params.h"

using mobdistill::DeviceSensors;
using mobdistill::ParseSysfsInt;
using mobdistill::SensorSample;

namespace {

bool Parse(const std::string& text, int64_t* v) { return ParseSysfsInt(text.data(), text.size(), v); }

void MakeDirs(const std::string& path) {
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    mkdir(partial.c_str(), 0755);
  }
}

void Write(const std::string& path, const std::string& text) {
  MakeDirs(path.substr(0, path.rfind('/')));
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return;
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

}  // namespace

int main() {
  {
    int64_t v = 0;
    CHECK(Parse("1804800\n", &v));
    CHECK_EQ(v, 1804800);
    CHECK(Parse("  -4500 \n", &v));
    CHECK_EQ(v, -4500);
    CHECK(Parse("0", &v));
    CHECK_EQ(v, 0);
    CHECK(!Parse("", &v));
    CHECK(!Parse("\n", &v));
    CHECK(!Parse("abc\n", &v));
    CHECK(!Parse("12 34\n", &v));
    CHECK(!Parse("45.5\n", &v));
    CHECK(!Parse("99999999999999999999999\n", &v));
  }
  {
    // A fake sysfs tree: cpu0 and cpu2 readable, cpu1 without cpufreq (offline), "cpufreq" and
    // "cpu3x" are not CPUs; zones 0 and 1 share a type, zone 2 has no type, zone 3 is garbage.
    char tmpl[] = "/tmp/md_sensors_XXXXXX";
    const char* dir = mkdtemp(tmpl);
    CHECK(dir != nullptr);
    if (dir == nullptr) return TEST_MAIN_RETURN();
    const std::string root = dir;
    const std::string cpu = root + "/devices/system/cpu/";
    Write(cpu + "cpu0/cpufreq/scaling_cur_freq", "1804800\n");
    MakeDirs(cpu + "cpu1");
    Write(cpu + "cpu2/cpufreq/scaling_cur_freq", "998400\n");
    Write(cpu + "cpufreq/scaling_cur_freq", "1\n");
    Write(cpu + "cpu3x/cpufreq/scaling_cur_freq", "1\n");
    const std::string th = root + "/class/thermal/";
    Write(th + "thermal_zone0/temp", "41500\n");
    Write(th + "thermal_zone0/type", "cpu-0\n");
    Write(th + "thermal_zone1/temp", "52000\n");
    Write(th + "thermal_zone1/type", "cpu-0\n");
    Write(th + "thermal_zone2/temp", "-2000\n");
    Write(th + "thermal_zone3/temp", "n/a\n");
    Write(th + "thermal_zone3/type", "bad\n");

    DeviceSensors sensors;
    sensors.Discover(root + "/");
    CHECK(sensors.any());
    CHECK_EQ(sensors.cpus().size(), 2u);
    CHECK_EQ(sensors.zones().size(), 3u);
    SensorSample s;
    sensors.Sample(&s);
    CHECK_EQ(s.cpu_freq_khz.size(), 3u);
    if (s.cpu_freq_khz.size() == 3) {
      CHECK_EQ(s.cpu_freq_khz[0], 1804800);
      CHECK_EQ(s.cpu_freq_khz[1], -1);
      CHECK_EQ(s.cpu_freq_khz[2], 998400);
    }
    CHECK_EQ(s.thermal_c.size(), 3u);
    if (s.thermal_c.size() == 3) {
      CHECK_EQ(s.thermal_c[0].first, "cpu-0");
      CHECK_EQ(s.thermal_c[0].second, 41.5);
      CHECK_EQ(s.thermal_c[1].first, "thermal_zone1");  // duplicate type
      CHECK_EQ(s.thermal_c[1].second, 52.0);
      CHECK_EQ(s.thermal_c[2].first, "thermal_zone2");  // no type
      CHECK_EQ(s.thermal_c[2].second, -2.0);
    }
    // Values are re-read every sample (pread at offset 0 on the kept descriptor).
    Write(cpu + "cpu0/cpufreq/scaling_cur_freq", "300000\n");
    sensors.Sample(&s);
    CHECK_EQ(s.cpu_freq_khz[0], 300000);
    // A source that stops reading (offline core, removed node) is left out, not an error.
    Write(th + "thermal_zone2/temp", "");
    sensors.Sample(&s);
    CHECK_EQ(s.thermal_c.size(), 2u);

    DeviceSensors none;
    none.Discover(root + "/missing");
    CHECK(!none.any());
    none.Sample(&s);
    CHECK(s.cpu_freq_khz.empty());
    CHECK(s.thermal_c.empty());
    std::string cmd = "rm -rf '" + root + "'";
    CHECK_EQ(std::system(cmd.c_str()), 0);
  }
  {
    mobdistill::Params p;
    const char* argv[] = {"e", "--record_sensors=true", "--sysfs_root=/tmp/x"};
    CHECK(mobdistill::ParseFlags(3, argv, &p).ok());
    CHECK(p.record_sensors);
    CHECK_EQ(p.sysfs_root, "/tmp/x");
    mobdistill::Params d;
    CHECK_EQ(d.sysfs_root, "/sys");
#ifdef __ANDROID__
    CHECK(d.record_sensors);
#else
    CHECK(!d.record_sensors);
#endif
  }
  return TEST_MAIN_RETURN();
}
