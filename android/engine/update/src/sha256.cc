// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104). The hashing is OpenSSL's where the build has
// it (MOBDISTILL_UPDATE_OPENSSL: the host; it uses the CPU's SHA instructions, ~10x faster), else
// written for this library, so the decoder needs nothing beyond zlib on Android. Round constants
// were generated from their definition (fractional parts of cube / square roots of the first
// primes).
#include <algorithm>
#include <cstring>

#include "mobdistill_update/update.h"

#ifdef MOBDISTILL_UPDATE_OPENSSL
#include <openssl/evp.h>
#endif

namespace mobdistill {
namespace update {
namespace {

#ifdef MOBDISTILL_UPDATE_OPENSSL
class Sha256Stream {
 public:
  Sha256Stream() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256Stream() { EVP_MD_CTX_free(ctx_); }
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(const uint8_t* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  std::array<uint8_t, kSha256Bytes> Finish() {
    std::array<uint8_t, kSha256Bytes> digest{};
    EVP_DigestFinal_ex(ctx_, digest.data(), nullptr);
    return digest;
  }

 private:
  EVP_MD_CTX* ctx_;
};
#else

constexpr uint32_t kRound[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u,
    0x923f82a4u, 0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u,
    0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u,
    0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au,
    0x5b9cca4fu, 0x682e6ff3u, 0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

constexpr uint32_t kInitial[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu,
    0x1f83d9abu, 0x5be0cd19u};

inline uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void Compress(uint32_t state[8], const uint8_t block[64]) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) {
    w[i] = (uint32_t{block[4 * i]} << 24) | (uint32_t{block[4 * i + 1]} << 16) |
           (uint32_t{block[4 * i + 2]} << 8) | uint32_t{block[4 * i + 3]};
  }
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
  uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                        kRound[i] + w[i];
    const uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  state[0] += a; state[1] += b; state[2] += c; state[3] += d;
  state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

class Sha256Stream {
 public:
  Sha256Stream() { std::memcpy(state_, kInitial, sizeof(state_)); }

  void Update(const uint8_t* data, size_t size) {
    total_bytes_ += size;
    while (size > 0) {
      const size_t n = std::min(size, sizeof(block_) - used_);
      std::memcpy(block_ + used_, data, n);
      used_ += n; data += n; size -= n;
      if (used_ == sizeof(block_)) { Compress(state_, block_); used_ = 0; }
    }
  }

  std::array<uint8_t, kSha256Bytes> Finish() {
    const uint64_t bits = total_bytes_ * 8;
    const uint8_t one = 0x80, zero = 0;
    Update(&one, 1);
    while (used_ != 56) Update(&zero, 1);
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    Update(length, 8);
    std::array<uint8_t, kSha256Bytes> digest{};
    for (int i = 0; i < 8; ++i) {
      for (int j = 0; j < 4; ++j) digest[4 * i + j] = static_cast<uint8_t>(state_[i] >> (24 - 8 * j));
    }
    return digest;
  }

 private:
  uint32_t state_[8];
  uint8_t block_[64];
  size_t used_ = 0;
  uint64_t total_bytes_ = 0;
};
#endif  // MOBDISTILL_UPDATE_OPENSSL

}  // namespace

std::array<uint8_t, kSha256Bytes> Sha256(const uint8_t* data, size_t size) {
  Sha256Stream stream;
  stream.Update(data, size);
  return stream.Finish();
}

std::array<uint8_t, kSha256Bytes> HmacSha256(const uint8_t* key, size_t key_size,
                                             const uint8_t* data, size_t size, const Pace& pace) {
  uint8_t block_key[64] = {0};
  if (key_size > sizeof(block_key)) {
    const auto hashed = Sha256(key, key_size);
    std::memcpy(block_key, hashed.data(), hashed.size());
  } else if (key_size > 0) {
    std::memcpy(block_key, key, key_size);
  }
  uint8_t pad[64];
  for (int i = 0; i < 64; ++i) pad[i] = block_key[i] ^ 0x36;
  Sha256Stream inner;
  inner.Update(pad, sizeof(pad));
  for (size_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size - done, kPaceBytes));
    inner.Update(data + done, n);
    done += n;
    if (pace && done < size) pace();
  }
  const auto inner_digest = inner.Finish();
  for (int i = 0; i < 64; ++i) pad[i] = block_key[i] ^ 0x5c;
  Sha256Stream outer;
  outer.Update(pad, sizeof(pad));
  outer.Update(inner_digest.data(), inner_digest.size());
  return outer.Finish();
}

}  // namespace update
}  // namespace mobdistill
