// PackedWeightCache: XNNPACK's packed weights kept across model slots, so an update repacks only
// the tensors it changed.
//
// Why: building a slot makes XNNPACK repack every convolution's weights (2.4-2.7 ms of CPU for
// DeepLab 256x512 on the development host), although an update changes a few tensors. XNNPACK
// asks a weights cache before packing (xnn_weights_cache_provider: look_up, then reserve_space +
// look_up_or_insert on a miss) with a key of the packing parameters and the kernel's and bias's
// addresses. TFLite's own caches cannot serve a patched copy: the in-memory one always misses
// on look_up (it only deduplicates what was packed), and the file one keys by tensor identity,
// which would return stale weights for a patched tensor.
//
// This cache keys by (seed, kernel offset, bias offset) within the build's model bytes, so a
// patched copy of the same flatbuffer (same layout: ApplyPatches only writes values) finds what
// the running slot packed. Before a build, the engine names the byte ranges whose values
// changed since the reference build (the last committed one); entries whose kernel or bias
// starts inside one lose their key and are packed anew. Pointers outside the model bytes (data
// TFLite unpacked into buffers of its own) are never keyed. An entry's memory lives until no
// slot uses it: a retired slot keeps running on entries the next build no longer finds.
//
// The provider struct's layout is XNNPACK's ABI (include/xnnpack.h): {context, look_up,
// reserve_space, look_up_or_insert, is_finalized, offset_to_addr, delete_cache}; it reaches
// XNNPACK through TfLiteXNNPackDelegateOptions::weights_cache (tflite_c_api.h).
#ifndef MOBDISTILL_ENGINE_PACKED_WEIGHT_CACHE_H_
#define MOBDISTILL_ENGINE_PACKED_WEIGHT_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace mobdistill {

extern "C" {
// xnn_weights_cache_look_up_key's leading fields (newer XNNPACK appends a fingerprint id,
// which this cache does not read: the seed already hashes the packing parameters).
struct XnnWeightsCacheKey {
  uint32_t seed;
  const void* kernel;
  const void* bias;
};
struct XnnWeightsCacheProvider {
  void* context;
  size_t (*look_up)(void* context, const XnnWeightsCacheKey* key);
  void* (*reserve_space)(void* context, size_t n);
  size_t (*look_up_or_insert)(void* context, const XnnWeightsCacheKey* key, void* ptr,
                              size_t size);
  bool (*is_finalized)(void* context);
  void* (*offset_to_addr)(void* context, size_t offset);
  int (*delete_cache)(void* context);
};
}

struct ByteRange {
  uint64_t offset = 0;
  uint64_t size = 0;
};

class PackedWeightCache {
 public:
  // One slot's view of the cache: XNNPACK's provider for that slot's delegate. Lives as long
  // as the slot's delegate (the runtime asks offset_to_addr whenever it reshapes).
  class Session {
   public:
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    // For TfLiteXNNPackDelegateOptions::weights_cache.
    void* provider() { return &provider_; }
    // The slot built: its keys describe the deployed bytes from now on (the reference).
    void Commit();
    uint64_t id() const { return id_; }
    int64_t hits() const { return hits_; }      // packed weights reused
    int64_t misses() const { return misses_; }  // packed anew

   private:
    friend class PackedWeightCache;
    Session(PackedWeightCache* cache, uint64_t id, const uint8_t* base, size_t size);
    static size_t LookUp(void* self, const XnnWeightsCacheKey* key);
    static void* ReserveSpace(void* self, size_t n);
    static size_t LookUpOrInsert(void* self, const XnnWeightsCacheKey* key, void* ptr,
                                 size_t size);
    static bool IsFinalized(void* self);
    static void* OffsetToAddr(void* self, size_t offset);
    static int DeleteCache(void* self);

    PackedWeightCache* cache_;
    uint64_t id_;
    const uint8_t* base_;
    size_t size_;
    bool committed_ = false;
    int64_t hits_ = 0, misses_ = 0;
    XnnWeightsCacheProvider provider_{};
  };

  PackedWeightCache() = default;
  PackedWeightCache(const PackedWeightCache&) = delete;
  PackedWeightCache& operator=(const PackedWeightCache&) = delete;

  // Starts a build over `base[0, size)`. `changed`: the byte ranges whose values differ from
  // the reference build's bytes (same layout); null: unrelated bytes, every key is forgotten.
  std::unique_ptr<Session> Begin(const uint8_t* base, size_t size,
                                 const std::vector<ByteRange>* changed);
  // The session whose build the keys describe (0: none).
  uint64_t reference() const;
  size_t entries() const;
  size_t bytes() const;

 private:
  using Key = std::tuple<uint32_t, uint64_t, uint64_t>;  // seed, kernel, bias offset + 1 (0: none)
  struct Entry {
    std::unique_ptr<unsigned char, void (*)(void*)> block{nullptr, nullptr};
    size_t size = 0;
    std::set<uint64_t> users;  // sessions whose delegates read it
    bool keyed = false;
    Key key{};
    uint64_t inserted_by = 0;
  };
  void Release(uint64_t session);  // mu_ held
  void Forget(Entry* entry);       // drops the key; mu_ held

  mutable std::mutex mu_;
  std::unordered_map<size_t, Entry> entries_;  // by the offset XNNPACK holds
  std::map<Key, size_t> keyed_;
  size_t next_offset_ = 1;
  uint64_t next_session_ = 1;
  uint64_t reference_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<unsigned char, void (*)(void*)>> reserved_;
  size_t bytes_ = 0;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_PACKED_WEIGHT_CACHE_H_
