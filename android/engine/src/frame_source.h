// FrameSource: the benchmark's input frames, read from a raw video file or generated.
#ifndef MOBDISTILL_ENGINE_FRAME_SOURCE_H_
#define MOBDISTILL_ENGINE_FRAME_SOURCE_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "status.h"

namespace mobdistill {

// Frames: a raw uint8 RGB file (HxWx3 per frame, cycled) or deterministic random frames.
class FrameSource {
 public:
  FrameSource() = default;
  FrameSource(const FrameSource&) = delete;
  FrameSource& operator=(const FrameSource&) = delete;
  ~FrameSource();
  Status OpenFile(const std::string& path, int height, int width);
  void UseRandom(int height, int width, int count, uint32_t seed);
  Status Read(int64_t index, std::vector<uint8_t>* frame);  // index is taken modulo count()
  int64_t count() const { return count_; }

 private:
  std::FILE* file_ = nullptr;
  std::vector<uint8_t> random_;  // count_ frames back to back
  size_t frame_bytes_ = 0;
  int64_t count_ = 0;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_FRAME_SOURCE_H_
