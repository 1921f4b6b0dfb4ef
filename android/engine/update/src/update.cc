// Decoder and applier for "MDUP" version 2 packets. Mirrors contract/wire.py check for check,
// in the same order and with the same status names, so both reject the same packets
// (tests/streaming/test_ams_vectors.py and tests/hostile/ check it). Every record states its
// index and value byte lengths, so the whole payload is bounded before any per-tensor allocation.
#include "mobdistill_update/update.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace mobdistill {
namespace update {
namespace {

constexpr uint8_t kMagic[4] = {'M', 'D', 'U', 'P'};
constexpr size_t kCrcBytes = 4;
constexpr size_t kHmacBytes = 32;
constexpr uint32_t kMaxTensors = 1u << 16;
constexpr uint64_t kMaxNumel = 1ull << 40;
constexpr int kMaxVarintBytes = 10;
// A record header is at most 6 varints and 2 coding bytes; Q8 adds 8 parameter bytes.
constexpr uint64_t kMaxRecordOverhead = 6 * kMaxVarintBytes + 2 + 8;
constexpr size_t kMinInflateChunk = 64 << 10;
constexpr uint8_t kFlagCumulative = 0x01, kFlagHmac = 0x02, kFlagCompressed = 0x04;
constexpr uint8_t kKnownFlags = kFlagCumulative | kFlagHmac | kFlagCompressed;
// Header offsets.
constexpr size_t kAtBase = 8, kAtDevice = 40, kAtSequence = 56, kAtTensors = 64, kAtStored = 68,
                 kAtRaw = 72;

enum IndexCoding : uint8_t { kDeltaVarint = 0, kBitmap = 1, kDense = 2 };
// kQDelta: element += step * q, q a signed byte, f32 step (the only parameter).
enum ValueCoding : uint8_t { kF32 = 0, kF16 = 1, kQ8 = 2, kQDelta = 3 };

Status Error(StatusCode code, std::string message) { return Status{code, std::move(message)}; }

// Counts work and calls the caller's Pace after every `slice` units of it.
class Pacer {
 public:
  Pacer(const Pace& pace, uint64_t slice) : pace_(pace), slice_(slice) {}
  void Did(uint64_t work) {
    done_ += work;
    if (done_ < slice_) return;
    done_ = 0;
    if (pace_) pace_();
  }

 private:
  const Pace& pace_;
  const uint64_t slice_;
  uint64_t done_ = 0;
};

uint32_t LoadU32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint64_t LoadU64(const uint8_t* p) { return LoadU32(p) | (uint64_t{LoadU32(p + 4)} << 32); }
float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
uint32_t FloatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) { s += kDigits[p[i] >> 4]; s += kDigits[p[i] & 15]; }
  return s;
}

enum class VarintEnd { kOk, kPastEnd, kMalformed };

// LEB128, at most 10 bytes, value < 2^64: the 10th byte must be 0 or 1 (no continuation), so a
// 10-byte varint ending in 0x81 is malformed wherever it stands, as in Python. Advances *at past
// the bytes read, also on failure. Bare cursors, because index decoding runs it per index (most
// index gaps are one byte: the first test).
inline VarintEnd ReadVarint(const uint8_t** at, const uint8_t* end, uint64_t* value) {
  const uint8_t* q = *at;
  if (q < end && *q < 0x80u) {
    *value = *q;
    *at = q + 1;
    return VarintEnd::kOk;
  }
  uint64_t v = 0;
  for (int i = 0; i < kMaxVarintBytes; ++i) {
    if (q == end) {
      *at = q;
      return VarintEnd::kPastEnd;
    }
    const uint8_t byte = *q++;
    if (i == kMaxVarintBytes - 1 && byte > 1) break;
    v |= uint64_t{byte & 0x7Fu} << (7 * i);
    if (!(byte & 0x80u)) {
      *value = v;
      *at = q;
      return VarintEnd::kOk;
    }
  }
  *at = q;
  return VarintEnd::kMalformed;
}

// Bounds-checked cursor over a byte range.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t remaining() const { return size_ - pos_; }

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
    const uint8_t* at = data_ + pos_;
    const VarintEnd end = ReadVarint(&at, data_ + size_, value);
    pos_ = static_cast<size_t>(at - data_);
    if (end == VarintEnd::kPastEnd) return Take(1, &at);  // the truncation error of any read
    if (end == VarintEnd::kMalformed) {
      return Error(StatusCode::kMalformed, "malformed varint at offset " + std::to_string(pos_));
    }
    return Status::Ok();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct Record {
  uint64_t tensor_index = 0, numel = 0, count = 0;
  uint8_t index_coding = 0, value_coding = 0;
  uint64_t index_bytes = 0, value_bytes = 0;
  float scale = 0.f, offset = 0.f;  // Q8
  float step = 0.f;                 // QDelta
};

Status CheckHmac(const uint8_t* data, uint8_t flags, size_t mac_at, const DecodeOptions& o) {
  const bool has_mac = flags & kFlagHmac;
  const bool has_key = o.hmac_key_size > 0;
  if (!has_key && !o.allow_unauthenticated) {
    return Error(StatusCode::kBadHmac, "no HMAC key configured: refusing the packet (give the "
                                       "device key, or opt in to insecure updates explicitly)");
  }
  if (has_key && !has_mac) {
    return Error(StatusCode::kBadHmac, "unauthenticated packet: this deployment requires an HMAC");
  }
  if (has_mac && !has_key) {
    return Error(StatusCode::kBadHmac, "packet carries an HMAC but no key was given");
  }
  if (has_mac) {
    const auto want = HmacSha256(o.hmac_key, o.hmac_key_size, data, mac_at, o.pace);
    uint8_t diff = 0;  // constant time
    for (size_t i = 0; i < kHmacBytes; ++i) diff |= want[i] ^ data[mac_at + i];
    if (diff) return Error(StatusCode::kBadHmac, "bad HMAC: not made with this device's key");
  }
  return Status::Ok();
}

Status CheckEnvelope(const uint8_t* data, size_t size, const DecodeOptions& o) {
  if (size < kHeaderBytes + kCrcBytes) {
    return Error(StatusCode::kTruncated, "truncated packet: shorter than header and checksum");
  }
  if (std::memcmp(data, kMagic, 4) != 0) {
    return Error(StatusCode::kBadMagic, "bad magic: not a mobdistill update packet");
  }
  if (data[4] != kWireVersion) {
    return Error(StatusCode::kBadVersion, "wire version " + std::to_string(data[4]) +
                                              " is not supported (this decoder reads 2)");
  }
  const uint8_t flags = data[5];
  if ((flags & ~kKnownFlags) || data[6] || data[7]) {
    return Error(StatusCode::kBadVersion, "unknown flags: written by a newer encoder");
  }
  const uint64_t stored = LoadU32(data + kAtStored);
  const uint64_t end = kHeaderBytes + stored + kCrcBytes + ((flags & kFlagHmac) ? kHmacBytes : 0);
  if (size != end) {
    return Error(StatusCode::kTruncated, "packet length does not match its header: truncated or "
                                         "padded; re-send it");
  }
  const size_t crc_at = kHeaderBytes + static_cast<size_t>(stored);
  uLong crc = crc32(0L, Z_NULL, 0);
  Pacer pacer(o.pace, kPaceBytes);
  for (size_t done = 0; done < crc_at;) {
    const size_t n = std::min<size_t>(crc_at - done, 4 * kPaceBytes);  // crc32 is ~4x sha256
    crc = crc32(crc, data + done, static_cast<uInt>(n));
    done += n;
    pacer.Did(n / 4);
  }
  if (crc != LoadU32(data + crc_at)) {
    return Error(StatusCode::kBadChecksum, "bad checksum: corrupted in transit; re-send it");
  }
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(CheckHmac(data, flags, crc_at + kCrcBytes, o));
  if (std::memcmp(data + kAtDevice, o.expected_device_id, kDeviceIdBytes) != 0) {
    return Error(StatusCode::kWrongDevice,
                 "wrong device: packet is for device " + Hex(data + kAtDevice, kDeviceIdBytes) +
                     ", this is " + Hex(o.expected_device_id, kDeviceIdBytes));
  }
  if (std::memcmp(data + kAtBase, o.expected_base_sha256, kSha256Bytes) != 0) {
    return Error(StatusCode::kBaseMismatch, "base-model mismatch: packet is for another model");
  }
  return Status::Ok();
}

// Last, after the payload (Python's SequenceGuard runs after decode_update: same order).
Status CheckSequence(const UpdatePacket& packet, uint64_t last_sequence) {
  if (packet.sequence <= last_sequence) {
    return Error(StatusCode::kReplay, "replayed or out-of-order packet: sequence " +
                                          std::to_string(packet.sequence) + " after " +
                                          std::to_string(last_sequence));
  }
  if (packet.mode == Mode::kCumulative && packet.sequence != last_sequence + 1) {
    return Error(StatusCode::kReplay, "cumulative packet after a gap: an update was missed");
  }
  return Status::Ok();
}

// Inflates into *raw, growing it as output is produced and never past raw_size + 1 bytes (the
// extra byte detects a stream longer than its header says). raw_size is already within limits.
Status Inflate(const uint8_t* stored, size_t stored_size, uint64_t raw_size,
               std::vector<uint8_t>* raw, const Pace& pace) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (inflateInit(&zs) != Z_OK) return Error(StatusCode::kMalformed, "zlib init failed");
  zs.next_in = const_cast<Bytef*>(stored);
  zs.avail_in = static_cast<uInt>(stored_size);
  const size_t cap = static_cast<size_t>(raw_size) + 1;
  int rc = Z_OK;
  while (rc == Z_OK) {
    const size_t produced = raw->size();
    if (produced == cap) break;
    const size_t grow = std::min(cap - produced, std::max(kMinInflateChunk, produced));
    raw->resize(produced + grow);
    zs.next_out = raw->data() + produced;
    zs.avail_out = static_cast<uInt>(grow);
    // In slices of kPaceBytes output, pacing between them.
    while (rc == Z_OK && zs.avail_out > 0) {
      const uInt room = zs.avail_out;
      const uInt slice = static_cast<uInt>(std::min<uint64_t>(room, kPaceBytes));
      zs.avail_out = slice;
      rc = inflate(&zs, Z_NO_FLUSH);  // Z_BUF_ERROR: the input ended before the stream did
      const uInt made = slice - zs.avail_out;
      zs.avail_out = room - made;
      if (made < slice) break;  // the stream ended or stalled
      if (pace) pace();
    }
    raw->resize(produced + grow - zs.avail_out);
  }
  const bool ok = rc == Z_STREAM_END && zs.avail_in == 0 && raw->size() == raw_size;
  inflateEnd(&zs);
  if (!ok) return Error(StatusCode::kMalformed, "compressed payload does not end where its "
                                                "header says (or is corrupt)");
  return Status::Ok();
}

bool IndexBytesFit(const Record& r) {
  if (r.index_coding == kDense) return r.count == r.numel && r.index_bytes == 0;
  if (r.index_coding == kBitmap) return r.index_bytes == (r.numel + 7) / 8;
  return r.count <= r.index_bytes && r.index_bytes <= kMaxVarintBytes * r.count;
}

uint64_t ValueBytesPerElement(uint8_t coding) { return coding == kF32 ? 4 : coding == kF16 ? 2 : 1; }
uint64_t ParamBytes(uint8_t coding) { return coding == kQ8 ? 8 : coding == kQDelta ? 4 : 0; }

// One record header, checked against itself, the payload left and the limits. `declared` and
// `elements` are the index+value bytes and values of the records before it.
Status ReadRecord(Reader* reader, const DecodeLimits& limits, uint64_t declared, uint64_t elements,
                  Record* r) {
  uint64_t param_bytes = 0;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->tensor_index));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->numel));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->count));
  const uint8_t* codes;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(2, &codes));
  r->index_coding = codes[0];
  r->value_coding = codes[1];
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&param_bytes));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->index_bytes));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Varint(&r->value_bytes));
  const uint8_t* params;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader->Take(param_bytes, &params));
  const std::string name = "tensor " + std::to_string(r->tensor_index);
  if (r->index_coding > kDense || r->value_coding > kQDelta) {
    return Error(StatusCode::kUnsupported, name + ": unknown index or value coding (made by a "
                                                  "newer encoder); update the app");
  }
  if (r->count > r->numel || r->numel >= kMaxNumel || r->tensor_index > 0xFFFFFFFFull) {
    return Error(StatusCode::kMalformed, name + ": more updates than elements");
  }
  if (r->numel > limits.max_elements ||
      r->count > limits.max_elements - std::min(elements, limits.max_elements)) {
    return Error(StatusCode::kTooLarge, name + ": more elements than this model has");
  }
  if (param_bytes != ParamBytes(r->value_coding)) {
    return Error(StatusCode::kMalformed, name + ": wrong number of coding-parameter bytes");
  }
  if (!IndexBytesFit(*r) || r->value_bytes != ValueBytesPerElement(r->value_coding) * r->count) {
    return Error(StatusCode::kMalformed, name + ": index/value byte lengths do not fit the count");
  }
  const uint64_t left = reader->remaining();
  if (declared > left || r->index_bytes > left - declared ||
      r->value_bytes > left - declared - r->index_bytes) {
    return Error(StatusCode::kTruncated, "truncated payload: " + name + " claims more bytes "
                                         "than the payload has left");
  }
  if (r->value_coding == kQ8) {
    r->scale = BitsToFloat(LoadU32(params));
    r->offset = BitsToFloat(LoadU32(params + 4));
    if (!std::isfinite(r->scale) || !std::isfinite(r->offset)) {
      return Error(StatusCode::kNonFinite, name + ": non-finite quantization scale/offset/step");
    }
  }
  if (r->value_coding == kQDelta) {
    r->step = BitsToFloat(LoadU32(params));
    if (!std::isfinite(r->step)) {
      return Error(StatusCode::kNonFinite, name + ": non-finite quantization scale/offset/step");
    }
  }
  return Status::Ok();
}

Status ReadIndices(const uint8_t* p, const Record& r, TensorPatch* patch, Pacer* pacer) {
  patch->indices.clear();
  patch->dense = r.index_coding == kDense;
  if (patch->dense) return Status::Ok();
  const std::string name = "tensor " + std::to_string(r.tensor_index);
  patch->indices.reserve(static_cast<size_t>(r.count));  // count <= limits.max_elements
  if (r.index_coding == kBitmap) {
    // Set bits in order, a 64-bit word at a time (LSB first within each byte, bytes in order).
    for (uint64_t b = 0; b < r.index_bytes; b += 8) {
      const uint64_t n = std::min<uint64_t>(8, r.index_bytes - b);
      uint64_t word = 0;
      for (uint64_t k = 0; k < n; ++k) word |= uint64_t{p[b + k]} << (8 * k);
      pacer->Did(8 * n);
      for (; word != 0; word &= word - 1) {
        const uint64_t i = 8 * b + static_cast<uint64_t>(__builtin_ctzll(word));
        if (i >= r.numel || patch->indices.size() == r.count) {  // stop at the first excess bit
          return Error(StatusCode::kMalformed, name + ": bitmap does not hold count indices");
        }
        patch->indices.push_back(i);
      }
    }
    if (patch->indices.size() != r.count) {
      return Error(StatusCode::kMalformed, name + ": bitmap does not hold count indices");
    }
    return Status::Ok();
  }
  // Structure first (exactly `count` varints filling the section: malformed), then range.
  const uint8_t* at = p;
  const uint8_t* const end = p + r.index_bytes;
  uint64_t next = 0;  // smallest admissible index
  bool out_of_range = false;
  for (uint64_t k = 0; k < r.count; ++k) {
    pacer->Did(1);
    uint64_t gap;
    if (ReadVarint(&at, end, &gap) != VarintEnd::kOk) {
      return Error(StatusCode::kMalformed, name + ": index bytes do not hold count varints");
    }
    if (out_of_range || gap >= r.numel || next + gap >= r.numel) {
      out_of_range = true;
      continue;
    }
    patch->indices.push_back(next + gap);
    next += gap + 1;
  }
  if (at != end) {
    return Error(StatusCode::kMalformed, name + ": index bytes do not hold count varints");
  }
  if (out_of_range) return Error(StatusCode::kOutOfRange, name + ": index out of range");
  return Status::Ok();
}

Status ReadValues(const uint8_t* p, const Record& r, std::vector<float>* values, Pacer* pacer) {
  const size_t n = static_cast<size_t>(r.count);
  values->resize(n);  // count <= limits.max_elements
  float* out = values->data();
  for (size_t lo = 0; lo < n; lo += kPaceElements) {
    const size_t hi = std::min<size_t>(n, lo + kPaceElements);
    if (r.value_coding == kF32) {
      for (size_t i = lo; i < hi; ++i) out[i] = BitsToFloat(LoadU32(p + 4 * i));
    } else if (r.value_coding == kF16) {
      for (size_t i = lo; i < hi; ++i) {
        out[i] = HalfToFloat(static_cast<uint16_t>(p[i] | (p[n + i] << 8)));
      }
    } else if (r.value_coding == kQ8) {
      for (size_t i = lo; i < hi; ++i) {
        const float product = r.scale * static_cast<float>(p[i]);  // two roundings, never an FMA
        out[i] = r.offset + product;
      }
    } else {
      for (size_t i = lo; i < hi; ++i) {
        out[i] = r.step * static_cast<float>(static_cast<int8_t>(p[i]));
      }
    }
    pacer->Did(hi - lo);
  }
  for (float v : *values) {
    if (!std::isfinite(v)) {
      return Error(StatusCode::kNonFinite, "tensor " + std::to_string(r.tensor_index) +
                                               ": non-finite values");
    }
  }
  return Status::Ok();
}

Status DecodePayload(const uint8_t* raw, size_t raw_size, uint32_t n_tensors,
                     const DecodeLimits& limits, const Pace& pace, UpdatePacket* packet) {
  Pacer pacer(pace, kPaceElements);
  Reader reader(raw, raw_size);
  std::vector<Record> records;
  records.reserve(std::min<size_t>(n_tensors, raw_size / 8 + 1));  // a record is >= 8 bytes
  uint64_t declared = 0, elements = 0;
  for (uint32_t i = 0; i < n_tensors; ++i) {
    Record r;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(ReadRecord(&reader, limits, declared, elements, &r));
    declared += r.index_bytes + r.value_bytes;
    elements += r.count;
    records.push_back(r);
  }
  for (size_t i = 1; i < records.size(); ++i) {
    if (records[i].tensor_index <= records[i - 1].tensor_index) {
      return Error(StatusCode::kMalformed, "tensor records are not strictly increasing");
    }
  }
  if (declared != reader.remaining()) {
    return Error(StatusCode::kMalformed, "trailing payload bytes");
  }
  packet->tensors.resize(n_tensors);
  for (size_t i = 0; i < n_tensors; ++i) {
    const uint8_t* p;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader.Take(records[i].index_bytes, &p));
    packet->tensors[i].tensor_index = static_cast<uint32_t>(records[i].tensor_index);
    packet->tensors[i].numel = records[i].numel;
    packet->tensors[i].additive = records[i].value_coding == kQDelta;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(ReadIndices(p, records[i], &packet->tensors[i], &pacer));
  }
  for (size_t i = 0; i < n_tensors; ++i) {
    const uint8_t* p;
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(reader.Take(records[i].value_bytes, &p));
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(
        ReadValues(p, records[i], &packet->tensors[i].values, &pacer));
  }
  return Status::Ok();
}

// Bytes per element of a patchable tensor type, 0 for the others.
uint64_t ElementBytes(DType dtype) {
  return dtype == DType::kFloat32 ? 4 : dtype == DType::kFloat16 ? 2 : 0;
}

// The element's new content (little-endian bits of its own type) after `value` is written or,
// when additive, added in float32; false when that is not finite in the element's type.
bool NewElement(const uint8_t* element, DType dtype, float value, bool additive, uint32_t* bits) {
  if (dtype == DType::kFloat32) {
    const float v = additive ? BitsToFloat(LoadU32(element)) + value : value;
    *bits = FloatToBits(v);
    return std::isfinite(v);
  }
  const float old = HalfToFloat(static_cast<uint16_t>(element[0] | (element[1] << 8)));
  const uint16_t half = FloatToHalf(additive ? old + value : value);
  *bits = half;
  return (half & 0x7C00u) != 0x7C00u;
}

}  // namespace

DType DTypeFromName(const std::string& name) {
  return name == "float32" ? DType::kFloat32 : name == "float16" ? DType::kFloat16 : DType::kOther;
}

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
    case StatusCode::kWrongDevice: return "wrong_device";
    case StatusCode::kTooLarge: return "too_large";
  }
  return "unknown";
}

DecodeLimits DecodeLimits::ForTable(const TensorTable& table) {
  DecodeLimits limits;
  for (const auto& entry : table) {
    const uint64_t width = ElementBytes(entry.second.dtype);
    if (width == 0) continue;
    const uint64_t numel = entry.second.buffer_size / width;
    limits.max_elements += numel;
    limits.max_raw_bytes += kMaxRecordOverhead + (numel + 7) / 8 + 4 * numel;
  }
  return limits;
}

uint64_t DecodeLimits::MaxPacketBytes() const {
  // zlib's deflateBound is below raw + raw/1024 + 64 for any input.
  return kHeaderBytes + max_raw_bytes + max_raw_bytes / 1024 + 64 + kCrcBytes + kHmacBytes;
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = FloatToBits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return sign | 0x7E00u;       // nan
  if (magnitude >= 0x477FF000u) return sign | 0x7C00u;      // >= 65520 rounds to inf
  if (magnitude >= 0x38800000u) {                            // normal half (>= 2^-14)
    uint32_t half = ((magnitude >> 23) - 112) << 10 | ((magnitude >> 13) & 0x3FFu);
    const uint32_t rest = magnitude & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // carries into the exponent
    return static_cast<uint16_t>(sign | half);
  }
  if (magnitude <= 0x33000000u) return sign;                 // <= 2^-25: ties to even zero
  const uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u;
  const unsigned shift = 126 - (magnitude >> 23);            // to units of 2^-24: 14..24
  uint32_t half = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
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

Status DecodeUpdatePacket(const uint8_t* data, size_t size, const DecodeOptions& options,
                          UpdatePacket* packet) {
  if (packet == nullptr || options.expected_base_sha256 == nullptr ||
      options.expected_device_id == nullptr || (data == nullptr && size > 0) ||
      (options.hmac_key == nullptr && options.hmac_key_size > 0)) {
    return Error(StatusCode::kInvalidArgument, "null argument to DecodeUpdatePacket");
  }
  *packet = UpdatePacket{};
  if (data == nullptr) return Error(StatusCode::kTruncated, "empty packet");
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(CheckEnvelope(data, size, options));
  const uint32_t n_tensors = LoadU32(data + kAtTensors);
  if (n_tensors > kMaxTensors) return Error(StatusCode::kMalformed, "too many tensors");
  const uint64_t stored_size = LoadU32(data + kAtStored), raw_size = LoadU32(data + kAtRaw);
  if (raw_size > options.limits.max_raw_bytes) {
    return Error(StatusCode::kTooLarge, "payload of " + std::to_string(raw_size) + " bytes "
                 "exceeds the " + std::to_string(options.limits.max_raw_bytes) +
                 "-byte limit this model allows");
  }
  const uint8_t* stored = data + kHeaderBytes;
  std::vector<uint8_t> inflated;  // stays empty for an uncompressed payload: read in place
  const uint8_t* raw = stored;
  if (data[5] & kFlagCompressed) {
    MOBDISTILL_UPDATE_RETURN_IF_ERROR(
        Inflate(stored, static_cast<size_t>(stored_size), raw_size, &inflated, options.pace));
    raw = inflated.data();
  } else if (stored_size != raw_size) {
    return Error(StatusCode::kMalformed, "payload size mismatch");
  }
  UpdatePacket decoded;
  decoded.version = data[4];
  decoded.mode = (data[5] & kFlagCumulative) ? Mode::kCumulative : Mode::kBaseRelative;
  decoded.sequence = LoadU64(data + kAtSequence);
  std::memcpy(decoded.base_sha256.data(), data + kAtBase, kSha256Bytes);
  std::memcpy(decoded.device_id.data(), data + kAtDevice, kDeviceIdBytes);
  decoded.authenticated = data[5] & kFlagHmac;
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(
      DecodePayload(raw, static_cast<size_t>(raw_size), n_tensors, options.limits, options.pace,
                    &decoded));
  MOBDISTILL_UPDATE_RETURN_IF_ERROR(CheckSequence(decoded, options.last_sequence));
  *packet = std::move(decoded);
  return Status::Ok();
}

Status ApplyPatches(std::vector<uint8_t>* model_bytes, const TensorTable& table,
                    const UpdatePacket& packet, const Pace& pace) {
  if (model_bytes == nullptr) return Error(StatusCode::kInvalidArgument, "null model bytes");
  Pacer pacer(pace, kPaceElements);
  for (const TensorPatch& patch : packet.tensors) {  // validate everything, write nothing
    const std::string name = "tensor " + std::to_string(patch.tensor_index);
    const auto it = table.find(patch.tensor_index);
    if (it == table.end()) {
      return Error(StatusCode::kOutOfRange, name + " is not updatable in this model");
    }
    const TensorLocation& loc = it->second;
    const uint64_t width = ElementBytes(loc.dtype);
    if (width == 0) {
      return Error(StatusCode::kUnsupported, name + " is neither float32 nor float16");
    }
    if (loc.buffer_size / width != patch.numel || loc.buffer_size % width != 0) {
      return Error(StatusCode::kOutOfRange, name + ": element count differs from the model");
    }
    if (loc.buffer_offset > model_bytes->size() ||
        loc.buffer_size > model_bytes->size() - loc.buffer_offset) {
      return Error(StatusCode::kOutOfRange, name + ": buffer outside the model file");
    }
    if ((patch.dense ? patch.numel : patch.indices.size()) != patch.values.size()) {
      return Error(StatusCode::kInvalidArgument, name + ": indices and values differ in length");
    }
    for (uint64_t index : patch.indices) {
      if (index >= patch.numel) return Error(StatusCode::kOutOfRange, name + ": index out of range");
    }
    pacer.Did(patch.indices.size());
    const uint8_t* base = model_bytes->data() + loc.buffer_offset;
    for (size_t i = 0; i < patch.values.size(); ++i) {
      pacer.Did(1);
      uint32_t bits;
      const uint64_t at = width * (patch.dense ? i : patch.indices[i]);
      if (!NewElement(base + at, loc.dtype, patch.values[i], patch.additive, &bits)) {
        return Error(StatusCode::kNonFinite, name + ": the update makes elements non-finite");
      }
    }
  }
  for (const TensorPatch& patch : packet.tensors) {  // deterministic: the same bits as checked
    const TensorLocation& loc = table.at(patch.tensor_index);
    const uint64_t width = ElementBytes(loc.dtype);
    uint8_t* base = model_bytes->data() + loc.buffer_offset;
    for (size_t i = 0; i < patch.values.size(); ++i) {
      pacer.Did(1);
      uint32_t bits;
      uint8_t* p = base + width * (patch.dense ? i : patch.indices[i]);
      NewElement(p, loc.dtype, patch.values[i], patch.additive, &bits);
      for (uint64_t b = 0; b < width; ++b) p[b] = static_cast<uint8_t>(bits >> (8 * b));  // LE
    }
  }
  return Status::Ok();
}

}  // namespace update
}  // namespace mobdistill
