// Decoder and applier for mobdistill sparse-update packets (wire format "MDUP" version 2,
// docs/wire-format.md). Portable C++17, no exceptions cross this API: every call returns a Status,
// and every allocation is bounded by DecodeLimits (derived from the deployed model) before it is
// made, so a hostile packet is a rejection, never an abort (the library builds -fno-exceptions).
//
// Typical use on the update thread (never on the frame thread):
//   DecodeOptions options;                      // base sha256, device id, key, limits, sequence
//   options.limits = DecodeLimits::ForTable(table);
//   UpdatePacket packet;
//   Status s = DecodeUpdatePacket(bytes, size, options, &packet);
//   std::vector<uint8_t> copy = pristine_or_current_model_bytes;   // see packet.mode
//   if (s.ok()) s = ApplyPatches(&copy, table, packet);
//   if (s.ok()) { rebuild + warm an interpreter from `copy`, swap between frames,
//                 last_sequence = packet.sequence; }
#ifndef MOBDISTILL_UPDATE_UPDATE_H_
#define MOBDISTILL_UPDATE_UPDATE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace mobdistill {
namespace update {

inline constexpr uint8_t kWireVersion = 2;
inline constexpr size_t kSha256Bytes = 32;
inline constexpr size_t kDeviceIdBytes = 16;
inline constexpr size_t kHeaderBytes = 76;

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,  // null pointers, bad caller input
  kBadMagic,
  kBadVersion,       // wire version or unknown flags
  kTruncated,        // packet shorter or longer than its header says, payload overrun
  kBadChecksum,      // CRC32 mismatch
  kBadHmac,          // HMAC missing, unexpected, wrong, or no key configured (and not insecure)
  kBaseMismatch,     // packet made for another base model
  kReplay,           // sequence not after the last applied one (or a cumulative gap)
  kMalformed,        // inconsistent records, bad lengths, trailing bytes, corrupt deflate
  kOutOfRange,       // index outside the tensor, tensor unknown or outside the model file
  kNonFinite,        // NaN or Inf values
  kUnsupported,      // unknown index/value coding (a newer encoder), a tensor neither f32 nor f16
  kWrongDevice,      // packet made for another device id
  kTooLarge,         // more elements or payload bytes than the deployed model can address
};

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;
  bool ok() const { return code == StatusCode::kOk; }
  static Status Ok() { return Status{}; }
};

// Stable name of a code ("ok", "bad_magic", ...), as used by the test vectors and by Python's
// UpdateError.status.
const char* StatusCodeName(StatusCode code);

// Called between bounded slices of decoding and patching work (kPaceBytes hashed or inflated,
// kPaceElements indices or values): the engine's update worker pauses there while a frame runs,
// so the work fills the gaps between frames instead of running beside them. Empty: never called.
using Pace = std::function<void()>;
inline constexpr uint64_t kPaceBytes = 64 << 10;
inline constexpr uint64_t kPaceElements = 32 << 10;

#define MOBDISTILL_UPDATE_RETURN_IF_ERROR(expr)      \
  do {                                               \
    ::mobdistill::update::Status _st = (expr);       \
    if (!_st.ok()) return _st;                       \
  } while (0)

enum class Mode : uint8_t { kBaseRelative = 0, kCumulative = 1 };

struct TensorPatch {
  uint32_t tensor_index = 0;   // manifest parameter_map[].tensor_index
  uint64_t numel = 0;          // elements in the deployed tensor
  bool dense = false;          // every element 0..numel-1 in order; `indices` is then left empty
  // QDELTA: `values` are added to what the element holds (element + value, float32 arithmetic)
  // instead of replacing it.
  bool additive = false;
  std::vector<uint64_t> indices;  // flat, strictly increasing, < numel (empty when dense)
  std::vector<float> values;      // decoded float32 values, one per index (numel when dense)
};

struct UpdatePacket {
  uint8_t version = 0;
  Mode mode = Mode::kBaseRelative;
  uint64_t sequence = 0;
  std::array<uint8_t, kSha256Bytes> base_sha256{};
  std::array<uint8_t, kDeviceIdBytes> device_id{};
  bool authenticated = false;
  std::vector<TensorPatch> tensors;  // strictly increasing tensor_index
};

// Element types a packet can patch; kOther (e.g. int8) is refused by the applier (unsupported).
enum class DType : uint8_t { kFloat32 = 0, kOther = 1, kFloat16 = 2 };

// "float32" / "float16" (the manifest's parameter_map dtype) or kOther.
DType DTypeFromName(const std::string& name);

struct TensorLocation {
  uint64_t buffer_offset = 0;  // manifest parameter_map[].buffer_offset
  uint64_t buffer_size = 0;    // bytes, manifest parameter_map[].buffer_size
  DType dtype = DType::kFloat32;
};

using TensorTable = std::unordered_map<uint32_t, TensorLocation>;

// What one packet may make the decoder hold. ForTable derives it from the deployed model: at most
// as many values as its float32 and float16 tensors have elements, and a raw payload no larger
// than a dense float32 packet of every tensor (plus record headers and bitmaps). Zero limits
// refuse everything.
struct DecodeLimits {
  uint64_t max_elements = 0;
  uint64_t max_raw_bytes = 0;
  static DecodeLimits ForTable(const TensorTable& table);
  // Largest packet (header + stored payload + trailer) these limits can accept: deflate may
  // expand incompressible data slightly, so the bound is a little above max_raw_bytes.
  uint64_t MaxPacketBytes() const;
};

struct DecodeOptions {
  const uint8_t* expected_base_sha256 = nullptr;  // 32 bytes: sha256 of the deployed .tflite
  const uint8_t* expected_device_id = nullptr;    // 16 bytes: this device's id
  // The per-device HMAC key. Without one every packet is refused (bad_hmac) unless
  // allow_unauthenticated is set explicitly; then packets carrying an HMAC are refused instead.
  const uint8_t* hmac_key = nullptr;
  size_t hmac_key_size = 0;
  bool allow_unauthenticated = false;
  // Sequence of the last applied packet (0 = none). Base-relative packets need
  // sequence > last_sequence; cumulative packets need sequence == last_sequence + 1.
  uint64_t last_sequence = 0;
  DecodeLimits limits;
  Pace pace;
};

// Validates and decodes one packet. On error *packet is left cleared.
Status DecodeUpdatePacket(const uint8_t* data, size_t size, const DecodeOptions& options,
                          UpdatePacket* packet);

// Scatters the packet's values into *model_bytes, a COPY of the model: the pristine base for
// Mode::kBaseRelative, the currently deployed bytes for Mode::kCumulative. float32 elements take
// the value (or element + value when additive); float16 elements take half(value) (or
// half(float(element) + value)), rounded to nearest even. Every range, and that every new
// element is finite in its own type (non_finite), is checked before the first write, so on
// error *model_bytes is unchanged.
Status ApplyPatches(std::vector<uint8_t>* model_bytes, const TensorTable& table,
                    const UpdatePacket& packet, const Pace& pace = {});

// Building blocks, exposed for tests.
std::array<uint8_t, kSha256Bytes> Sha256(const uint8_t* data, size_t size);
std::array<uint8_t, kSha256Bytes> HmacSha256(const uint8_t* key, size_t key_size,
                                             const uint8_t* data, size_t size,
                                             const Pace& pace = {});
float HalfToFloat(uint16_t half);
uint16_t FloatToHalf(float value);  // round to nearest even; overflow gives inf (as numpy)

}  // namespace update
}  // namespace mobdistill

#endif  // MOBDISTILL_UPDATE_UPDATE_H_
