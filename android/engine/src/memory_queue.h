// The MobileVOS memory queue as docs/manifest.md defines it, independent of TFLite.
//
// Each carried tensor (e.g. key, value) has one entry per remembered frame (leading dim 1).
// Assembled into the step input (leading dim Q): slot 0 = the first frame (from `init`),
// slots 1..Q-1 = a FIFO of the most recent frames, oldest first. Until Q frames exist, the
// oldest available entry is repeated at the front: with frames [f0, f1] and Q = 4 the input is
// [f0, f0, f0, f1]. So slot 0 is always f0 and the last slot always the most recent frame.
#ifndef MOBDISTILL_ENGINE_MEMORY_QUEUE_H_
#define MOBDISTILL_ENGINE_MEMORY_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

namespace mobdistill {

class MemoryQueue {
 public:
  using Entry = std::vector<std::vector<uint8_t>>;  // one byte blob per carried tensor

  explicit MemoryQueue(int queue_length) : q_(queue_length) {}
  void Reset(Entry first);  // after `init`
  void Push(Entry recent);  // after each `step`; keeps the last Q-1
  // Writes the Q stacked entries of carried tensor `c` to dst (Q * entry size bytes).
  void Assemble(size_t c, uint8_t* dst) const;
  // Index into the frame sequence [first, fifo...] used for slot s (for tests/docs).
  int SourceOfSlot(int slot) const;
  int queue_length() const { return q_; }
  size_t size() const { return fifo_.size() + (first_.empty() ? 0 : 1); }

 private:
  int q_;
  Entry first_;
  std::deque<Entry> fifo_;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_MEMORY_QUEUE_H_
