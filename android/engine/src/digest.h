// SHA-256 in hex for the engine (artifact checks against the manifest, swap records, the update
// state file). The engine's one SHA-256 is the update library's `update::Sha256` (FIPS 180-4,
// checked against the NIST vectors in tests/sha256_test.cc): no second implementation.
#ifndef MOBDISTILL_ENGINE_DIGEST_H_
#define MOBDISTILL_ENGINE_DIGEST_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "mobdistill_update/update.h"

namespace mobdistill {

inline std::string Hex(const uint8_t* bytes, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * size);
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
  return out;
}

inline std::string Sha256Hex(const uint8_t* data, size_t size) {
  const auto digest = update::Sha256(data, size);
  return Hex(digest.data(), digest.size());
}

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_DIGEST_H_
