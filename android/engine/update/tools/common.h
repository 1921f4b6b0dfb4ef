// File and hex helpers shared by the verify tool and the test (not part of the library API).
#ifndef MOBDISTILL_UPDATE_TOOLS_COMMON_H_
#define MOBDISTILL_UPDATE_TOOLS_COMMON_H_

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mobdistill_update/update.h"

namespace mobdistill {
namespace update {

// Reads a whole file of at most max_bytes (sized once, no growth); false if larger or unreadable.
inline bool ReadFile(const std::string& path, std::vector<uint8_t>* out,
                     uint64_t max_bytes = UINT64_MAX) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return false;
  const std::streamoff size = in.tellg();
  if (size < 0 || static_cast<uint64_t>(size) > max_bytes) return false;
  out->resize(static_cast<size_t>(size));
  in.seekg(0);
  return static_cast<bool>(in.read(reinterpret_cast<char*>(out->data()), size)) || size == 0;
}

inline uint64_t FileSize(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  return in ? static_cast<uint64_t>(in.tellg()) : 0;
}

inline bool WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

inline bool ParseHex(const std::string& hex, std::vector<uint8_t>* out) {
  out->clear();
  if (hex == "-") return true;
  if (hex.size() % 2) return false;
  for (size_t i = 0; i < hex.size(); i += 2) {
    unsigned value = 0;
    if (std::sscanf(hex.c_str() + i, "%2x", &value) != 1) return false;
    out->push_back(static_cast<uint8_t>(value));
  }
  return true;
}

inline std::string ToHex(const uint8_t* data, size_t size) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < size; ++i) { s += kDigits[data[i] >> 4]; s += kDigits[data[i] & 15]; }
  return s;
}

// Table file: one line per tensor, "tensor_index buffer_offset buffer_size dtype".
inline bool ReadTable(const std::string& path, TensorTable* table) {
  std::ifstream in(path);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    uint32_t index;
    TensorLocation loc;
    std::string dtype;
    if (!(fields >> index >> loc.buffer_offset >> loc.buffer_size >> dtype)) return false;
    loc.dtype = DTypeFromName(dtype);
    (*table)[index] = loc;
  }
  return true;
}

}  // namespace update
}  // namespace mobdistill

#endif  // MOBDISTILL_UPDATE_TOOLS_COMMON_H_
