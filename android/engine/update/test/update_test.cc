// CTest: the committed vectors in tests/vectors (made by tests/vectors/make_vectors.py from the
// Python reference decoder) must give the same status and the same patched bytes here.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <zlib.h>

#include "../tools/common.h"

namespace mu = mobdistill::update;

namespace {

int failures = 0;

void Expect(bool condition, const std::string& what) {
  if (!condition) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

void TestPrimitives() {
  const char* abc = "abc";
  const auto digest = mu::Sha256(reinterpret_cast<const uint8_t*>(abc), 3);
  Expect(mu::ToHex(digest.data(), 32) ==
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256(abc)");
  const std::string key = "Jefe", msg = "what do ya want for nothing?";  // RFC 4231 case 2
  const auto mac = mu::HmacSha256(reinterpret_cast<const uint8_t*>(key.data()), key.size(),
                                  reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  Expect(mu::ToHex(mac.data(), 32) ==
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "hmac rfc4231");
  Expect(mu::HalfToFloat(0x3C00) == 1.0f && mu::HalfToFloat(0xC000) == -2.0f, "half normal");
  Expect(mu::HalfToFloat(0x0001) == std::ldexp(1.0f, -24), "half subnormal");
  Expect(std::isinf(mu::HalfToFloat(0x7C00)) && std::isnan(mu::HalfToFloat(0x7E00)), "half inf/nan");
  // Round to nearest even, as numpy's float32 -> float16 (the vectors pin more cases).
  Expect(mu::FloatToHalf(1.0f + std::ldexp(1.0f, -11)) == 0x3C00, "half tie to even (down)");
  Expect(mu::FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02, "half tie to even (up)");
  Expect(mu::FloatToHalf(65504.0f) == 0x7BFF && mu::FloatToHalf(65520.0f) == 0x7C00, "half max");
  Expect(mu::FloatToHalf(std::ldexp(1.0f, -25)) == 0 && mu::FloatToHalf(std::ldexp(1.5f, -24)) == 2,
         "half subnormal rounding");
  for (uint32_t h = 0; h < 0x7C00; ++h) {  // every finite half survives the round trip
    if (mu::FloatToHalf(mu::HalfToFloat(static_cast<uint16_t>(h))) != h) {
      Expect(false, "half round trip " + std::to_string(h));
      break;
    }
  }
}

// vectors.txt line: name expected_status last_sequence hmac_key_hex|- device_id_hex insecure(0|1)
// patched_sha256|-. Limits come from the vectors' table, as the engine derives them.
void TestVector(const std::string& dir, const std::string& line, const std::vector<uint8_t>& base,
                const mu::TensorTable& table) {
  std::istringstream fields(line);
  std::string name, expected, key_hex, device_hex, patched_sha;
  unsigned long long last = 0;
  int insecure = 0;
  fields >> name >> expected >> last >> key_hex >> device_hex >> insecure >> patched_sha;
  std::vector<uint8_t> packet_bytes, key, device_id;
  Expect(mu::ReadFile(dir + "/" + name + ".mdup", &packet_bytes), name + ": readable");
  Expect(mu::ParseHex(key_hex, &key), name + ": key hex");
  Expect(mu::ParseHex(device_hex, &device_id) && device_id.size() == mu::kDeviceIdBytes,
         name + ": device id hex");
  if (device_id.size() != mu::kDeviceIdBytes) return;
  const auto base_sha = mu::Sha256(base.data(), base.size());
  mu::DecodeOptions options;
  options.expected_base_sha256 = base_sha.data();
  options.expected_device_id = device_id.data();
  options.hmac_key = key.empty() ? nullptr : key.data();
  options.hmac_key_size = key.size();
  options.allow_unauthenticated = insecure != 0;
  options.last_sequence = last;
  options.limits = mu::DecodeLimits::ForTable(table);
  mu::UpdatePacket packet;
  mu::Status s = mu::DecodeUpdatePacket(packet_bytes.data(), packet_bytes.size(), options, &packet);
  std::vector<uint8_t> model = base;
  if (s.ok()) s = mu::ApplyPatches(&model, table, packet);
  Expect(expected == mu::StatusCodeName(s.code),
         name + ": expected " + expected + ", got " + mu::StatusCodeName(s.code) + " (" + s.message + ")");
  if (!s.ok()) {
    Expect(model == base, name + ": a refused packet must leave the model untouched");
    return;
  }
  const auto got = mu::Sha256(model.data(), model.size());
  Expect(mu::ToHex(got.data(), 32) == patched_sha, name + ": patched bytes differ");
}

void TestLimits(const mu::TensorTable& table) {
  const mu::DecodeLimits limits = mu::DecodeLimits::ForTable(table);
  uint64_t numel = 0;  // float32 and float16 tensors only (the table also has an int8 one)
  for (const auto& e : table) {
    if (e.second.dtype == mu::DType::kFloat32) numel += e.second.buffer_size / 4;
    if (e.second.dtype == mu::DType::kFloat16) numel += e.second.buffer_size / 2;
  }
  Expect(limits.max_elements == numel, "limits: elements are the table's");
  Expect(limits.max_raw_bytes >= 4 * numel && limits.max_raw_bytes < 5 * numel + 100 * table.size(),
         "limits: raw bytes follow a dense float32 packet of every tensor");
  const mu::DecodeLimits none = mu::DecodeLimits::ForTable(mu::TensorTable{});
  Expect(none.max_elements == 0 && none.max_raw_bytes == 0, "limits: an empty table allows nothing");
}

// A dense float32 packet of one `numel`-element tensor (tensor 0 of a zeroed base), built by hand
// as docs/wire-format.md lays it out: header, one record, values, CRC32, HMAC.
std::vector<uint8_t> DensePacket(uint64_t numel, const std::vector<uint8_t>& base,
                                 const std::vector<uint8_t>& key, const uint8_t* device) {
  std::vector<uint8_t> payload;
  const auto varint = [&payload](uint64_t v) {
    for (; v >= 0x80; v >>= 7) payload.push_back(static_cast<uint8_t>(v | 0x80));
    payload.push_back(static_cast<uint8_t>(v));
  };
  varint(0);           // tensor index
  varint(numel);       // numel
  varint(numel);       // count
  payload.push_back(2);  // dense indices
  payload.push_back(0);  // float32 values
  varint(0);             // parameter bytes
  varint(0);             // index bytes
  varint(4 * numel);     // value bytes
  for (uint64_t i = 0; i < numel; ++i) {
    const float v = 0.001f * static_cast<float>(i % 1000);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int b = 0; b < 4; ++b) payload.push_back(static_cast<uint8_t>(bits >> (8 * b)));
  }
  std::vector<uint8_t> p = {'M', 'D', 'U', 'P', mu::kWireVersion, 0x02, 0, 0};  // HMAC flag
  const auto base_sha = mu::Sha256(base.data(), base.size());
  p.insert(p.end(), base_sha.begin(), base_sha.end());
  p.insert(p.end(), device, device + mu::kDeviceIdBytes);
  const auto u32 = [&p](uint64_t v) {
    for (int b = 0; b < 4; ++b) p.push_back(static_cast<uint8_t>(v >> (8 * b)));
  };
  u32(1);  // sequence 1 (64-bit)
  u32(0);
  u32(1);  // one tensor
  u32(payload.size());  // stored
  u32(payload.size());  // raw (not compressed)
  p.insert(p.end(), payload.begin(), payload.end());
  u32(crc32(0L, p.data(), static_cast<uInt>(p.size())));
  const auto mac = mu::HmacSha256(key.data(), key.size(), p.data(), p.size());
  p.insert(p.end(), mac.begin(), mac.end());
  return p;
}

// Pacing (the engine pauses there while a frame runs) is called between slices of hashing,
// value decoding and patching, and changes nothing in what is decoded or patched.
void TestPacing() {
  constexpr uint64_t kNumel = 200000;  // 800 KB of values
  const std::vector<uint8_t> base(4 * kNumel, 0), key = {1, 2, 3, 4};
  const uint8_t device[mu::kDeviceIdBytes] = {7};
  const std::vector<uint8_t> bytes = DensePacket(kNumel, base, key, device);
  mu::TensorTable table;
  table[0] = mu::TensorLocation{0, 4 * kNumel, mu::DType::kFloat32};
  const auto base_sha = mu::Sha256(base.data(), base.size());
  mu::DecodeOptions options;
  options.expected_base_sha256 = base_sha.data();
  options.expected_device_id = device;
  options.hmac_key = key.data();
  options.hmac_key_size = key.size();
  options.limits = mu::DecodeLimits::ForTable(table);
  mu::UpdatePacket plain, paced;
  const mu::Status s1 = mu::DecodeUpdatePacket(bytes.data(), bytes.size(), options, &plain);
  int decode_paces = 0;
  options.pace = [&decode_paces] { ++decode_paces; };
  const mu::Status s2 = mu::DecodeUpdatePacket(bytes.data(), bytes.size(), options, &paced);
  Expect(s1.ok() && s2.ok(), "pacing: the hand-built packet decodes (" + s1.message + ")");
  if (!s1.ok() || !s2.ok()) return;
  Expect(paced.tensors.size() == 1 && paced.tensors[0].values == plain.tensors[0].values,
         "pacing: the same values with and without pacing");
  // 800 KB hashed (HMAC) and CRC-checked, 200,000 values: about 12 + 3 + 6 slices.
  Expect(decode_paces >= 15, "pacing: decoding paced " + std::to_string(decode_paces) + " times");
  std::vector<uint8_t> model_plain = base, model_paced = base;
  int patch_paces = 0;
  Expect(mu::ApplyPatches(&model_plain, table, plain).ok() &&
             mu::ApplyPatches(&model_paced, table, paced, [&patch_paces] { ++patch_paces; }).ok(),
         "pacing: patches apply");
  Expect(model_paced == model_plain && model_plain != base,
         "pacing: the same patched bytes with and without pacing");
  Expect(patch_paces >= 10, "pacing: patching paced " + std::to_string(patch_paces) + " times");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: mobdistill_update_test VECTORS_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  TestPrimitives();
  TestPacing();
  std::vector<uint8_t> base;
  mu::TensorTable table;
  if (!mu::ReadFile(dir + "/base.bin", &base) || !mu::ReadTable(dir + "/table.txt", &table)) {
    std::fprintf(stderr, "cannot read %s/base.bin or table.txt\n", dir.c_str());
    return 2;
  }
  TestLimits(table);
  std::ifstream list(dir + "/vectors.txt");
  std::string line;
  int count = 0;
  while (std::getline(list, line)) {
    if (!line.empty()) { TestVector(dir, line, base, table); ++count; }
  }
  Expect(count >= 10, "at least 10 vectors");
  std::printf("%d vectors, %d failures\n", count, failures);
  return failures == 0 ? 0 : 1;
}
