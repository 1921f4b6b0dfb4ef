#include "packed_weight_cache.h"

#include <cstdlib>
#include <cstring>

namespace mobdistill {
namespace {

constexpr size_t kNotFound = SIZE_MAX;  // XNN_CACHE_NOT_FOUND
// At least XNN_ALLOCATION_ALIGNMENT on every target (64 on x86 with AVX-512, 16 on Arm).
constexpr size_t kAlignment = 128;

std::unique_ptr<unsigned char, void (*)(void*)> AlignedBlock(size_t n) {
  const size_t rounded = (n + kAlignment - 1) / kAlignment * kAlignment;
  return {static_cast<unsigned char*>(std::aligned_alloc(kAlignment, rounded ? rounded : kAlignment)),
          &std::free};
}

bool StartsInside(uint64_t offset, const std::vector<ByteRange>& ranges) {
  for (const ByteRange& r : ranges) {
    if (offset >= r.offset && offset - r.offset < r.size) return true;
  }
  return false;
}

}  // namespace

PackedWeightCache::Session::Session(PackedWeightCache* cache, uint64_t id, const uint8_t* base,
                                    size_t size)
    : cache_(cache), id_(id), base_(base), size_(size) {
  provider_ = {this,          &Session::LookUp,       &Session::ReserveSpace,
               &Session::LookUpOrInsert, &Session::IsFinalized, &Session::OffsetToAddr,
               &Session::DeleteCache};
}

PackedWeightCache::Session::~Session() {
  std::lock_guard<std::mutex> lock(cache_->mu_);
  cache_->Release(id_);
  if (!committed_) {
    // Keys this build added describe bytes that were never deployed.
    for (auto& kv : cache_->entries_) {
      if (kv.second.inserted_by == id_) cache_->Forget(&kv.second);
    }
  }
}

void PackedWeightCache::Session::Commit() {
  std::lock_guard<std::mutex> lock(cache_->mu_);
  committed_ = true;
  cache_->reference_ = id_;
}

// Translates the kernel and bias addresses into offsets within this build's bytes; false for
// data outside them (TFLite's own unpacked buffers: their addresses may be reused later).
static bool OffsetsOf(const uint8_t* base, size_t size, const XnnWeightsCacheKey* key,
                      uint64_t* kernel, uint64_t* bias) {
  const auto inside = [base, size](const void* p) {
    const auto* a = static_cast<const uint8_t*>(p);
    return a >= base && a < base + size;
  };
  if (key->kernel == nullptr || !inside(key->kernel)) return false;
  if (key->bias != nullptr && !inside(key->bias)) return false;
  *kernel = uint64_t(static_cast<const uint8_t*>(key->kernel) - base);
  *bias = key->bias ? uint64_t(static_cast<const uint8_t*>(key->bias) - base) + 1 : 0;
  return true;
}

size_t PackedWeightCache::Session::LookUp(void* self, const XnnWeightsCacheKey* key) {
  auto* s = static_cast<Session*>(self);
  uint64_t kernel = 0, bias = 0;
  std::lock_guard<std::mutex> lock(s->cache_->mu_);
  if (OffsetsOf(s->base_, s->size_, key, &kernel, &bias)) {
    auto it = s->cache_->keyed_.find(Key{key->seed, kernel, bias});
    if (it != s->cache_->keyed_.end()) {
      s->cache_->entries_.at(it->second).users.insert(s->id_);
      ++s->hits_;
      return it->second;
    }
  }
  ++s->misses_;
  return kNotFound;
}

void* PackedWeightCache::Session::ReserveSpace(void* self, size_t n) {
  auto* s = static_cast<Session*>(self);
  auto block = AlignedBlock(n);
  void* p = block.get();
  if (p == nullptr) return nullptr;
  std::lock_guard<std::mutex> lock(s->cache_->mu_);
  s->cache_->reserved_.erase(s->id_);  // a packing that failed before inserting
  s->cache_->reserved_.emplace(s->id_, std::move(block));
  return p;
}

size_t PackedWeightCache::Session::LookUpOrInsert(void* self, const XnnWeightsCacheKey* key,
                                                  void* ptr, size_t size) {
  auto* s = static_cast<Session*>(self);
  PackedWeightCache* c = s->cache_;
  uint64_t kernel = 0, bias = 0;
  const bool keyable = key != nullptr && OffsetsOf(s->base_, s->size_, key, &kernel, &bias);
  std::lock_guard<std::mutex> lock(c->mu_);
  Entry entry;
  auto reserved = c->reserved_.find(s->id_);
  if (reserved != c->reserved_.end() && reserved->second.get() == ptr) {
    entry.block = std::move(reserved->second);
    c->reserved_.erase(reserved);
  } else {  // packed somewhere of XNNPACK's own: keep a copy
    entry.block = AlignedBlock(size);
    if (!entry.block) return kNotFound;
    std::memcpy(entry.block.get(), ptr, size);
  }
  entry.size = size;
  entry.users.insert(s->id_);
  entry.inserted_by = s->id_;
  const size_t offset = c->next_offset_++;
  if (keyable) {
    const Key k{key->seed, kernel, bias};
    auto old = c->keyed_.find(k);
    if (old != c->keyed_.end()) c->Forget(&c->entries_.at(old->second));
    entry.keyed = true;
    entry.key = k;
    c->keyed_[k] = offset;
  }
  c->bytes_ += size;
  c->entries_.emplace(offset, std::move(entry));
  return offset;
}

// Entries never move once inserted, so the runtime may use them while later builds insert.
bool PackedWeightCache::Session::IsFinalized(void*) { return true; }

void* PackedWeightCache::Session::OffsetToAddr(void* self, size_t offset) {
  auto* s = static_cast<Session*>(self);
  std::lock_guard<std::mutex> lock(s->cache_->mu_);
  auto it = s->cache_->entries_.find(offset);
  return it == s->cache_->entries_.end() ? nullptr : it->second.block.get();
}

int PackedWeightCache::Session::DeleteCache(void*) { return 0; }  // the engine owns it

std::unique_ptr<PackedWeightCache::Session> PackedWeightCache::Begin(
    const uint8_t* base, size_t size, const std::vector<ByteRange>* changed) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& kv : entries_) {
    Entry& e = kv.second;
    if (!e.keyed) continue;
    const uint64_t kernel = std::get<1>(e.key), bias = std::get<2>(e.key);
    if (changed == nullptr || StartsInside(kernel, *changed) ||
        (bias != 0 && StartsInside(bias - 1, *changed))) {
      Forget(&e);
    }
  }
  return std::unique_ptr<Session>(new Session(this, next_session_++, base, size));
}

void PackedWeightCache::Release(uint64_t session) {
  reserved_.erase(session);
  for (auto it = entries_.begin(); it != entries_.end();) {
    it->second.users.erase(session);
    if (it->second.users.empty()) {
      Forget(&it->second);
      bytes_ -= it->second.size;
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

void PackedWeightCache::Forget(Entry* entry) {
  if (!entry->keyed) return;
  keyed_.erase(entry->key);
  entry->keyed = false;
}

uint64_t PackedWeightCache::reference() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reference_;
}

size_t PackedWeightCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

size_t PackedWeightCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace mobdistill
