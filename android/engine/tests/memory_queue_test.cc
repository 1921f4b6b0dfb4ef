// The queue policy of docs/manifest.md: slot 0 = first frame, FIFO of the last Q-1 frames
// (oldest first), left-padded by repeating the oldest available entry.
#include <vector>

#include "check.h"
#include "memory_queue.h"

using mobdistill::MemoryQueue;

static MemoryQueue::Entry E(uint8_t tag) { return {{tag, tag}, {uint8_t(tag + 100)}}; }

static std::vector<uint8_t> Slots(const MemoryQueue& q) {  // carried tensor 0, first byte/slot
  std::vector<uint8_t> out(size_t(q.queue_length()) * 2);
  q.Assemble(0, out.data());
  std::vector<uint8_t> tags;
  for (int s = 0; s < q.queue_length(); ++s) tags.push_back(out[size_t(s) * 2]);
  return tags;
}

int main() {
  MemoryQueue q(4);
  q.Reset(E(0));
  CHECK(Slots(q) == std::vector<uint8_t>({0, 0, 0, 0}));
  q.Push(E(1));
  CHECK(Slots(q) == std::vector<uint8_t>({0, 0, 0, 1}));
  q.Push(E(2));
  CHECK(Slots(q) == std::vector<uint8_t>({0, 0, 1, 2}));
  q.Push(E(3));
  CHECK(Slots(q) == std::vector<uint8_t>({0, 1, 2, 3}));
  q.Push(E(4));
  CHECK(Slots(q) == std::vector<uint8_t>({0, 2, 3, 4}));
  // second carried tensor follows the same slots
  std::vector<uint8_t> values(4);
  q.Assemble(1, values.data());
  CHECK(values == std::vector<uint8_t>({100, 102, 103, 104}));

  MemoryQueue two(2);  // the paper's queue: first frame + previous frame
  two.Reset(E(0));
  CHECK(Slots(two) == std::vector<uint8_t>({0, 0}));
  two.Push(E(1));
  two.Push(E(2));
  CHECK(Slots(two) == std::vector<uint8_t>({0, 2}));

  MemoryQueue one(1);  // only the first frame
  one.Reset(E(0));
  one.Push(E(1));
  CHECK(Slots(one) == std::vector<uint8_t>({0}));
  return TEST_MAIN_RETURN();
}
