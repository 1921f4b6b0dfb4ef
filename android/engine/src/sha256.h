// SHA-256 (FIPS 180-4), self-written: Debian ships no maintained header-only C++ SHA-256
// (no picosha2 package), and OpenSSL's libcrypto is not part of the Android NDK, so a
// ~100-line implementation checked against the FIPS/NIST test vectors (tests/sha256_test.cc)
// keeps the engine dependency-free. Used only to check artifacts against the manifest.
#ifndef MOBDISTILL_ENGINE_SHA256_H_
#define MOBDISTILL_ENGINE_SHA256_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace mobdistill {

class Sha256 {
 public:
  Sha256();
  void Update(const uint8_t* data, size_t size);
  std::string HexDigest();  // finalises; call once

 private:
  void Block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string Sha256Hex(const uint8_t* data, size_t size);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_SHA256_H_
