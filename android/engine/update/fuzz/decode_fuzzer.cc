// libFuzzer target: any byte string must decode cleanly or be rejected with a Status.
// Build and run (clang only), see docs/wire-format.md:
//   CXX=clang++ cmake -S android/engine/update -B build/update-fuzz -DMOBDISTILL_UPDATE_FUZZ=ON
//   cmake --build build/update-fuzz --target mobdistill_update_fuzzer
//   build/update-fuzz/mobdistill_update_fuzzer -max_total_time=60 tests/vectors/
#include <zlib.h>

#include <cstring>
#include <vector>

#include "mobdistill_update/update.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mobdistill::update;
  // Re-seal the CRC so mutations reach the payload parser instead of dying at the checksum.
  std::vector<uint8_t> packet_bytes(data, data + size);
  if (size >= 64) {
    const uint32_t stored = data[52] | (data[53] << 8) | (data[54] << 16) | (uint32_t{data[55]} << 24);
    if (uint64_t{60} + stored + 4 <= size) {
      const uint32_t crc = crc32(0L, data, 60 + stored);
      for (int i = 0; i < 4; ++i) packet_bytes[60 + stored + i] = static_cast<uint8_t>(crc >> (8 * i));
    }
  }
  data = packet_bytes.data();
  uint8_t base[kSha256Bytes];
  if (size >= 8 + kSha256Bytes) std::memcpy(base, data + 8, kSha256Bytes);  // reach past the base check
  else std::memset(base, 0, sizeof(base));
  UpdatePacket packet;
  Status status = DecodeUpdatePacket(data, size, base, nullptr, 0, 0, &packet);
  if (!status.ok()) return 0;
  std::vector<uint8_t> model(4096, 0);
  TensorTable table;
  for (const TensorPatch& patch : packet.tensors) {
    table[patch.tensor_index] = TensorLocation{0, patch.numel * 4, DType::kFloat32};
  }
  (void)ApplyPatches(&model, table, packet);  // refuses tensors larger than the model
  return 0;
}
