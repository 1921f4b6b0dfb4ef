#include "memory_queue.h"

#include <cstring>
#include <utility>

namespace mobdistill {

void MemoryQueue::Reset(Entry first) {
  first_ = std::move(first);
  fifo_.clear();
}

void MemoryQueue::Push(Entry recent) {
  if (q_ <= 1) return;  // Q = 1: only the first frame is remembered
  fifo_.push_back(std::move(recent));
  while (static_cast<int>(fifo_.size()) > q_ - 1) fifo_.pop_front();
}

int MemoryQueue::SourceOfSlot(int slot) const {
  // available sequence: index 0 = first, 1..n = fifo (oldest first); left-pad with index 0.
  const int available = 1 + static_cast<int>(fifo_.size());
  const int pad = q_ - available;
  return slot < pad ? 0 : slot - pad;
}

void MemoryQueue::Assemble(size_t c, uint8_t* dst) const {
  for (int s = 0; s < q_; ++s) {
    const int src = SourceOfSlot(s);
    const std::vector<uint8_t>& blob = src == 0 ? first_[c] : fifo_[src - 1][c];
    std::memcpy(dst + static_cast<size_t>(s) * blob.size(), blob.data(), blob.size());
  }
}

}  // namespace mobdistill
