// libFuzzer target: any byte string must decode cleanly or be rejected with a Status, never crash
// or allocate past the limits. `make fuzz` builds and runs it with inputs up to several MiB and a
// dictionary of headers and record fields (decode_fuzzer.dict); the suite runs a bounded run.
#include <zlib.h>

#include <cstring>
#include <vector>

#include "mobdistill_update/update.h"

namespace {

// A model of 1M float32 elements in three tensors: limits like a small student's, so inputs can
// claim far more than that and must be refused before allocating it.
const mobdistill::update::TensorTable& Table() {
  using mobdistill::update::DType;
  using mobdistill::update::TensorLocation;
  static const mobdistill::update::TensorTable table = {
      {2, TensorLocation{64, 400, DType::kFloat32}},
      {5, TensorLocation{512, 1200, DType::kFloat32}},
      {8, TensorLocation{1744, 4u << 20, DType::kFloat32}}};
  return table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mobdistill::update;
  // Signed seeds lose their HMAC (flag cleared, MAC cut) and the CRC is re-sealed, so mutations
  // reach the payload parser, decoded as an insecure engine would; hashing a MiB-sized input
  // for an HMAC on every run would cost most of the fuzzer's time. The HMAC check itself is
  // covered by the vectors and the differential fuzz.
  std::vector<uint8_t> packet_bytes(data, data + size);
  if (size >= kHeaderBytes + 4) {
    const uint32_t stored = data[68] | (data[69] << 8) | (data[70] << 16) | (uint32_t{data[71]} << 24);
    const uint64_t crc_at = uint64_t{kHeaderBytes} + stored;
    if ((packet_bytes[5] & 0x02) && crc_at + 4 + 32 == size) {
      packet_bytes[5] &= static_cast<uint8_t>(~0x02);
      packet_bytes.resize(size - 32);
    }
    if (crc_at + 4 <= packet_bytes.size()) {
      const uint32_t crc = crc32(0L, packet_bytes.data(), static_cast<uInt>(crc_at));
      for (int i = 0; i < 4; ++i) packet_bytes[crc_at + i] = static_cast<uint8_t>(crc >> (8 * i));
    }
  }
  data = packet_bytes.data();
  size = packet_bytes.size();
  uint8_t base[kSha256Bytes] = {}, device[kDeviceIdBytes] = {};
  if (size >= 8 + kSha256Bytes) std::memcpy(base, data + 8, kSha256Bytes);  // reach past the checks
  if (size >= 40 + kDeviceIdBytes) std::memcpy(device, data + 40, kDeviceIdBytes);
  DecodeOptions options;
  options.expected_base_sha256 = base;
  options.expected_device_id = device;
  options.allow_unauthenticated = true;
  options.limits = DecodeLimits::ForTable(Table());
  UpdatePacket packet;
  Status status = DecodeUpdatePacket(data, size, options, &packet);
  if (!status.ok()) return 0;
  std::vector<uint8_t> model(8192, 0);
  TensorTable table;
  for (const TensorPatch& patch : packet.tensors) {  // odd tensors as float16: both appliers
    const bool half = patch.tensor_index & 1;
    table[patch.tensor_index] = TensorLocation{0, patch.numel * (half ? 2 : 4),
                                               half ? DType::kFloat16 : DType::kFloat32};
  }
  (void)ApplyPatches(&model, table, packet);  // refuses tensors larger than the model
  return 0;
}
