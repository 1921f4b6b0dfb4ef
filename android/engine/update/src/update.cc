// Decoder and applier for "MDUP" version 1 packets. Mirrors contract/wire.py check for check,
// in the same order, so both reject the same packets (tests/streaming/test_ams_vectors.py checks it).
#include "mobdistill_update/update.h"

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace mobdistill {
namespace update {
namespace {

constexpr uint8_t kMagic[4] = {'M', 'D', 'U', 'P'};
constexpr size_t kHeaderBytes = 60;
constexpr size_t kCrcBytes = 4;
constexpr size_t kHmacBytes = 32;
constexpr uint32_t kMaxTensors = 1u << 16;
constexpr uint64_t kMaxNumel = 1ull << 40;
constexpr uint8_t kFlagCumulative = 0x01, kFlagHmac = 0x02, kFlagCompressed = 0x04;
constexpr uint8_t kKnownFlags = kFlagCumulative | kFlagHmac | kFlagCompressed;

enum IndexCoding : uint8_t { kDeltaVarint = 0, kBitmap = 1, kDense = 2 };
enum ValueCoding : uint8_t { kF32 = 0, kF16 = 1, kQ8 = 2 };

Status Error(StatusCode code, std::string message) { return Status{code, std::move(message)}; }

uint32_t LoadU32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint64_t LoadU64(const uint8_t* p) { return LoadU32(p) | (uint64_t{LoadU32(p + 4)} << 32); }
float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Bounds-checked cursor over the decompressed payload.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t remaining() const { return size_ - pos_; }
  size_t size() const { return size_; }

  Status Take(uint64_t n, const uint8_t** out) {
    if (n > remaining()) {
      return Error(StatusCode::kTruncated, "truncated payload: need " + std::to_string(n) +
                                               " bytes at offset " + std::to_string(pos_));
    }
    *out = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return Status::Ok();
  }

  Status Varint(uint64_t* value) {
    *value = 0;
    for (int i = 0;; ++i) {
      const uint8_t* byte;
      MOBDISTILL_UPDATE_RETURN_IF_ERROR(Take(1, &byte));
      const uint64_t bits = *byte & 0x7Fu;
      if (i > 9 || (i == 9 && bits > 1)) {
        return Error(StatusCode::kMalformed, "malformed varint at offset " + std::to_string(pos_));
      }
      *value |= bits << (7 * i);
      if (!(*byte & 0x80u)) return Status::Ok();
    }
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct Record {
  uint64_t tensor_index = 0, numel = 0, count = 0;
  uint8_t index_coding = 0, value_coding = 0;
  float scale = 0.f, offset = 0.f;
};

Status CheckEnvelope(const uint8_t* data, size_t size, const uint8_t* expected_base,
                     const uint8_t* key, size_t key_size, uint64_t last_sequence) {
  if (size < kHeaderBytes + kCrcBytes) {
    return Error(StatusCode::kTruncated, "truncated packet: shorter than header and checksum");
  }
  if (std::memcmp(data, kMagic, 4) != 0) {
    return Error(StatusCode::kBadMagic, "bad magic: not a mobdistill update packet");
  }
  if (data[4] != kWireVersion) {
    return Error(StatusCode::kBadVersion, "wire version " + std::to_string(data[4]) +
                                              " is not supported; update the app");
  }
  const uint8_t flags = data[5];
  if ((flags & ~kKnownFlags) || data[6] || data[7]) {
    return Error(StatusCode::kBadVersion, "unknown flags: written by a newer encoder");
  }
  const uint64_t stored = LoadU32(data + 52);
  const uint64_t end = kHeaderBytes + stored + kCrcBytes + ((flags & kFlagHmac) ? kHmacBytes : 0);
  if (size != end) {
    return Error(StatusCode::kTruncated, "packet length does not match its header: truncated or "
                                         "padded; re-send it");
  }
  const size_t crc_at = kHeaderBytes + static_cast<size_t>(stored);
  if (crc32(0L, data, static_cast<uInt>(crc_at)) != LoadU32(data + crc_at)) {
    return Error(StatusCode::kBadChecksum, "bad checksum: corrupted in transit; re-send it");
  }
  const bool has_mac = flags & kFlagHmac;
  if (key_size > 0 && !has_mac) {
    return Error(StatusCode::kBadHmac, "unauthenticated packet: this deployment requires an HMAC");
  }
  if (has_mac && key_size == 0) {
    return Error(StatusCode::kBadHmac, "packet carries an HMAC but no deployment key was given");
  }
  if (has_mac) {
    const size_t mac_at = crc_at + kCrcBytes;
    const auto want = HmacSha256(key, key_size, data, mac_at);
    uint8_t diff = 0;  // constant time
    for (size_t i = 0; i < kHmacBytes; ++i) diff |= want[i] ^ data[mac_at + i];
    if (diff) return Error(StatusCode::kBadHmac, "bad HMAC: not made with this deployment's key");
  }
  if (std::memcmp(data + 8, expected_base, kSha256Bytes) != 0) {
    return Error(StatusCode::kBaseMismatch, "base-model mismatch: packet is for another model");
  }
  const uint64_t sequence = LoadU64(data + 40);
  if (sequence <= last_sequence) {
    return Error(StatusCode::kReplay, "replayed or out-of-order packet: sequence " +
                                          std::to_string(sequence) + " after " +
                                          std::to_string(last_sequence));
  }
  if ((flags & kFlagCumulative) && sequence != last_sequence + 1) {
    return Error(StatusCode::kReplay, "cumulative packet after a gap: an update was missed");
  }
  return Status::Ok();
}

Status Inflate(const uint8_t* stored, size_t stored_size, bool compressed, uint64_t raw_size,
               std::vector<uint8_t>* raw) {
  if (raw_size > kMaxRawPayloadBytes) {
    return Error(StatusCode::kMalformed, "payload exceeds the size limit");
  }
  if (!compressed) {
    if (stored_size != raw_size) return Error(StatusCode::kMalformed, "payload size mismatch");
    raw->assign(stored, stored + stored_size);
    return Status::Ok();
  }
  raw->assign(static_cast<size_t>(raw_size) + 1, 0);
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (inflateInit(&zs) != Z_OK) return Error(StatusCode::kMalformed, "zlib init failed");
  zs.next_in = const_cast<Bytef*>(stored);
  zs.avail_in = static_cast<uInt>(stored_size);
  zs.next_out = raw->data();
  zs.avail_out = static_cast<uInt>(raw_size);
  const int rc = inflate(&zs, Z_FINISH);
  const bool ok = rc == Z_STREAM_END && zs.avail_in == 0 && zs.total_out == raw_size;
  inflateEnd(&zs);
  if (!ok) return Error(StatusCode::kMalformed, "corrupt compressed payload");
  raw->resize(static_cast<size_t>(raw_size));
  return Status::Ok();
}

Status ReadRecord(Reader* reader, Record* r) {
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->tensor_index));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->numel));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->count));
  const uint8_t* codes;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(2, &codes));
  r->index_coding = codes[0];
  r->value_coding = codes[1];
  if (r->index_coding > kDense || r->value_coding > kQ8) {
    return Error(StatusCode::kMalformed, "unknown index or value coding");
  }
  if (r->count > r->numel || r->numel >= kMaxNumel || r->tensor_index > 0xFFFFFFFFull) {
    return Error(StatusCode::kMalformed, "record has more updates than elements");
  }
  if (r->count > reader->size()) {
    return Error(StatusCode::kTruncated, "record count exceeds the payload");
  }
  if (r->value_coding == kQ8) {
    const uint8_t* p;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(8, &p));
    r->scale = BitsToFloat(LoadU32(p));
    r->offset = BitsToFloat(LoadU32(p + 4));
  }
  return Status::Ok();
}

Status ReadIndices(Reader* reader, const Record& r, std::vector<uint64_t>* indices) {
  indices->clear();
  if (r.index_coding == kDense) {
    if (r.count != r.numel) return Error(StatusCode::kMalformed, "dense coding count mismatch");
    indices->resize(static_cast<size_t>(r.numel));
    for (uint64_t i = 0; i < r.numel; ++i) (*indices)[i] = i;
    return Status::Ok();
  }
  if (r.index_coding == kBitmap) {
    const uint8_t* bits;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take((r.numel + 7) / 8, &bits));
    for (uint64_t i = 0; i < (r.numel + 7) / 8 * 8; ++i) {
      if (!((bits[i / 8] >> (i % 8)) & 1u)) continue;
      if (i >= r.numel) return Error(StatusCode::kMalformed, "bitmap padding bits set");
      indices->push_back(i);
    }
    if (indices->size() != r.count) return Error(StatusCode::kMalformed, "bitmap count mismatch");
    return Status::Ok();
  }
  indices->reserve(static_cast<size_t>(r.count));
  uint64_t next = 0;  // smallest admissible index
  bool out_of_range = false;
  for (uint64_t k = 0; k < r.count; ++k) {
    uint64_t gap;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&gap));
    if (out_of_range || gap >= r.numel || next + gap >= r.numel) {
      out_of_range = true;  // keep reading: truncation is reported before range, as in Python
      continue;
    }
    indices->push_back(next + gap);
    next += gap + 1;
  }
  if (out_of_range) return Error(StatusCode::kOutOfRange, "index out of range for its tensor");
  return Status::Ok();
}

Status ReadValues(Reader* reader, const Record& r, std::vector<float>* values) {
  const size_t n = static_cast<size_t>(r.count);
  values->resize(n);
  const uint8_t* p;
  if (r.value_coding == kF32) {
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(4 * r.count, &p));
    for (size_t i = 0; i < n; ++i) (*values)[i] = BitsToFloat(LoadU32(p + 4 * i));
  } else if (r.value_coding == kF16) {
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(2 * r.count, &p));
    for (size_t i = 0; i < n; ++i) {
      (*values)[i] = HalfToFloat(static_cast<uint16_t>(p[i] | (p[n + i] << 8)));
    }
  } else {
    if (!std::isfinite(r.scale) || !std::isfinite(r.offset)) {
      return Error(StatusCode::kNonFinite, "non-finite quantization scale/offset");
    }
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(r.count, &p));
    for (size_t i = 0; i < n; ++i) {
      const float product = r.scale * static_cast<float>(p[i]);  // two roundings, never an FMA
      (*values)[i] = r.offset + product;
    }
  }
  for (float v : *values) {
    if (!std::isfinite(v)) return Error(StatusCode::kNonFinite, "non-finite values");
  }
  return Status::Ok();
}

Status DecodePayload(const std::vector<uint8_t>& raw, uint32_t n_tensors, UpdatePacket* packet) {
  Reader reader(raw.data(), raw.size());
  std::vector<Record> records(n_tensors);
  for (auto& r : records) MOBDISTILL_UPDATE_RETURN_IF_ERROR(ReadRecord(&reader, &r));
  for (size_t i = 1; i < records.size(); ++i) {
    if (records[i].tensor_index <= records[i - 1].tensor_index) {
      return Error(StatusCode::kMalformed, "tensor records are not strictly increasing");
    }
  }
  packet->tensors.resize(n_tensors);
  for (size_t i = 0; i < n_tensors; ++i) {
    packet->tensors[i].tensor_index = static_cast<uint32_t>(records[i].tensor_index);
    packet->tensors[i].numel = records[i].numel;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(ReadIndices(&reader, records[i], &packet->tensors[i].indices));
  }
  for (size_t i = 0; i < n_tensors; ++i) {
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(ReadValues(&reader, records[i], &packet->tensors[i].values));
  }
  if (reader.remaining() != 0) return Error(StatusCode::kMalformed, "trailing payload bytes");
  return Status::Ok();
}

}  // namespace

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kBadMagic: return "bad_magic";
    case StatusCode::kBadVersion: return "bad_version";
    case StatusCode::kTruncated: return "truncated";
    case StatusCode::kBadChecksum: return "bad_checksum";
    case StatusCode::kBadHmac: return "bad_hmac";
    case StatusCode::kBaseMismatch: return "base_mismatch";
    case StatusCode::kReplay: return "replay";
    case StatusCode::kMalformed: return "malformed";
    case StatusCode::kOutOfRange: return "out_of_range";
    case StatusCode::kNonFinite: return "non_finite";
    case StatusCode::kUnsupported: return "unsupported";
  }
  return "unknown";
}

float HalfToFloat(uint16_t half) {
  const uint32_t sign = uint32_t{half & 0x8000u} << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0x1F) return BitsToFloat(sign | 0x7F800000u | (mantissa << 13));  // inf / nan
  if (exponent != 0) return BitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return BitsToFloat(sign);
  int shift = 0;  // subnormal half: normalise
  while (!(mantissa & 0x400u)) { mantissa <<= 1; ++shift; }
  return BitsToFloat(sign | (static_cast<uint32_t>(113 - shift) << 23) | ((mantissa & 0x3FFu) << 13));
}

Status DecodeUpdatePacket(const uint8_t* data, size_t size, const uint8_t* expected_base_sha256,
                          const uint8_t* hmac_key, size_t hmac_key_size, uint64_t last_sequence,
                          UpdatePacket* packet) {
  if (packet == nullptr || expected_base_sha256 == nullptr || (data == nullptr && size > 0) ||
      (hmac_key == nullptr && hmac_key_size > 0)) {
    return Error(StatusCode::kInvalidArgument, "null argument to DecodeUpdatePacket");
  }
  *packet = UpdatePacket{};
  if (data == nullptr) return Error(StatusCode::kTruncated, "empty packet");
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(
      CheckEnvelope(data, size, expected_base_sha256, hmac_key, hmac_key_size, last_sequence));
  const uint32_t n_tensors = LoadU32(data + 48);
  if (n_tensors > kMaxTensors) return Error(StatusCode::kMalformed, "too many tensors");
  std::vector<uint8_t> raw;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(Inflate(data + kHeaderBytes, LoadU32(data + 52),
                                            data[5] & kFlagCompressed, LoadU32(data + 56), &raw));
  UpdatePacket decoded;
  decoded.version = data[4];
  decoded.mode = (data[5] & kFlagCumulative) ? Mode::kCumulative : Mode::kBaseRelative;
  decoded.sequence = LoadU64(data + 40);
  std::memcpy(decoded.base_sha256.data(), data + 8, kSha256Bytes);
  decoded.authenticated = data[5] & kFlagHmac;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(DecodePayload(raw, n_tensors, &decoded));
  *packet = std::move(decoded);
  return Status::Ok();
}

Status ApplyPatches(std::vector<uint8_t>* model_bytes, const TensorTable& table,
                    const UpdatePacket& packet) {
  if (model_bytes == nullptr) return Error(StatusCode::kInvalidArgument, "null model bytes");
  for (const TensorPatch& patch : packet.tensors) {  // validate everything, write nothing
    const std::string name = "tensor " + std::to_string(patch.tensor_index);
    const auto it = table.find(patch.tensor_index);
    if (it == table.end()) {
      return Error(StatusCode::kOutOfRange, name + " is not updatable in this model");
    }
    const TensorLocation& loc = it->second;
    if (loc.dtype != DType::kFloat32) return Error(StatusCode::kUnsupported, name + " is not float32");
    if (loc.buffer_size / 4 != patch.numel || loc.buffer_size % 4 != 0) {
      return Error(StatusCode::kOutOfRange, name + ": element count differs from the model");
    }
    if (loc.buffer_offset > model_bytes->size() ||
        loc.buffer_size > model_bytes->size() - loc.buffer_offset) {
      return Error(StatusCode::kOutOfRange, name + ": buffer outside the model file");
    }
    if (patch.indices.size() != patch.values.size()) {
      return Error(StatusCode::kInvalidArgument, name + ": indices and values differ in length");
    }
    for (uint64_t index : patch.indices) {
      if (index >= patch.numel) return Error(StatusCode::kOutOfRange, name + ": index out of range");
    }
  }
  for (const TensorPatch& patch : packet.tensors) {
    uint8_t* base = model_bytes->data() + table.at(patch.tensor_index).buffer_offset;
    for (size_t i = 0; i < patch.indices.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &patch.values[i], sizeof(bits));
      uint8_t* p = base + 4 * patch.indices[i];  // little-endian, whatever the host order
      p[0] = static_cast<uint8_t>(bits); p[1] = static_cast<uint8_t>(bits >> 8);
      p[2] = static_cast<uint8_t>(bits >> 16); p[3] = static_cast<uint8_t>(bits >> 24);
    }
  }
  return Status::Ok();
}

}  // namespace update
}  // namespace mobdistill
