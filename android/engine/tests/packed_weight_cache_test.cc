// PackedWeightCache, driven through the XNNPACK provider calls as a delegate makes them: a build
// reuses what an earlier one packed from the same offsets, packs anew what changed, never keys
// data outside the model bytes, and frees an entry only when no slot reads it.
#include <cstring>
#include <vector>

#include "check.h"
#include "packed_weight_cache.h"

namespace {

using mobdistill::ByteRange;
using mobdistill::PackedWeightCache;
using mobdistill::XnnWeightsCacheKey;
using mobdistill::XnnWeightsCacheProvider;

constexpr size_t kNotFound = SIZE_MAX;

// What an operator does: look up, else reserve, pack (here: fill with `fill`) and insert.
size_t Pack(PackedWeightCache::Session* s, const void* kernel, const void* bias,
            unsigned char fill, bool* packed = nullptr) {
  auto* p = static_cast<XnnWeightsCacheProvider*>(s->provider());
  const XnnWeightsCacheKey key{7, kernel, bias};
  size_t offset = p->look_up(p->context, &key);
  if (packed) *packed = offset == kNotFound;
  if (offset != kNotFound) return offset;
  void* space = p->reserve_space(p->context, 256);
  std::memset(space, fill, 256);
  return p->look_up_or_insert(p->context, &key, space, 256);
}

unsigned char At(PackedWeightCache::Session* s, size_t offset) {
  auto* p = static_cast<XnnWeightsCacheProvider*>(s->provider());
  return *static_cast<unsigned char*>(p->offset_to_addr(p->context, offset));
}

}  // namespace

int main() {
  PackedWeightCache cache;
  // Two copies of one "model": tensors at [0, 100) and [100, 200) (kernels) and [200, 210) (bias).
  std::vector<uint8_t> first(256, 1), second(256, 1);
  bool packed = false;

  auto s1 = cache.Begin(first.data(), first.size(), nullptr);
  const size_t a1 = Pack(s1.get(), first.data(), first.data() + 200, 0xA1, &packed);
  CHECK(packed);
  const size_t b1 = Pack(s1.get(), first.data() + 100, nullptr, 0xB1, &packed);
  CHECK(packed);
  std::vector<uint8_t> outside(64);  // TFLite's own unpacked buffer: never keyed
  Pack(s1.get(), outside.data(), nullptr, 0xC1, &packed);
  CHECK(packed);
  CHECK_EQ(s1->misses(), 3);
  s1->Commit();
  CHECK_EQ(cache.reference(), s1->id());
  CHECK_EQ(cache.entries(), 3u);

  // The second build changed the first kernel only: it packs that and reuses the second.
  std::vector<ByteRange> changed{{0, 100}};
  auto s2 = cache.Begin(second.data(), second.size(), &changed);
  const size_t a2 = Pack(s2.get(), second.data(), second.data() + 200, 0xA2, &packed);
  CHECK(packed && a2 != a1);
  const size_t b2 = Pack(s2.get(), second.data() + 100, nullptr, 0xB2, &packed);
  CHECK(!packed && b2 == b1);
  Pack(s2.get(), outside.data(), nullptr, 0xC2, &packed);
  CHECK(packed);
  CHECK_EQ(s2->hits(), 1);
  CHECK_EQ(s2->misses(), 2);
  // The running slot still reads its own packing of the first kernel.
  CHECK_EQ(At(s1.get(), a1), 0xA1);
  CHECK_EQ(At(s2.get(), a2), 0xA2);
  s2->Commit();

  // Retiring the first slot frees what only it read; shared entries stay.
  s1.reset();
  CHECK_EQ(cache.entries(), 3u);  // a2, b1 (shared), the second build's unkeyed one
  CHECK_EQ(At(s2.get(), b2), 0xB1);

  // A bias that changed invalidates its entry too.
  std::vector<uint8_t> third(256, 1);
  changed = {{200, 10}};
  auto s3 = cache.Begin(third.data(), third.size(), &changed);
  Pack(s3.get(), third.data(), third.data() + 200, 0xA3, &packed);
  CHECK(packed);
  Pack(s3.get(), third.data() + 100, nullptr, 0xB3, &packed);
  CHECK(!packed);
  // A build that fails (never committed) leaves no key behind for bytes never deployed: the
  // next build, with the running bytes, packs that kernel again instead of taking the failed
  // build's packing (its key was dropped when the failed build began: a repack, never stale).
  s3.reset();
  std::vector<uint8_t> fourth(256, 1);
  changed.clear();
  auto s4 = cache.Begin(fourth.data(), fourth.size(), &changed);
  const size_t a4 = Pack(s4.get(), fourth.data(), fourth.data() + 200, 0xA4, &packed);
  CHECK(packed);
  CHECK_EQ(At(s4.get(), a4), 0xA4);
  Pack(s4.get(), fourth.data() + 100, nullptr, 0xB4, &packed);
  CHECK(!packed);
  s4.reset();

  // Unrelated bytes (another model): nothing is reused.
  auto s5 = cache.Begin(fourth.data(), fourth.size(), nullptr);
  Pack(s5.get(), fourth.data() + 100, nullptr, 0xB5, &packed);
  CHECK(packed);
  s5.reset();
  s2.reset();
  CHECK_EQ(cache.entries(), 0u);
  CHECK_EQ(cache.bytes(), 0u);
  return TEST_MAIN_RETURN();
}
