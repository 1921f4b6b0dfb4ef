#include "frame_source.h"

#include <cstring>

namespace mobdistill {

FrameSource::~FrameSource() {
  if (file_) std::fclose(file_);
}

Status FrameSource::OpenFile(const std::string& path, int height, int width) {
  frame_bytes_ = size_t(height) * size_t(width) * 3;
  file_ = std::fopen(path.c_str(), "rb");
  if (!file_) return Status::Error("cannot open --frames " + path);
  if (std::fseek(file_, 0, SEEK_END) != 0) return Status::Error("cannot seek --frames " + path);
  const long long size = std::ftell(file_);
  if (size <= 0 || size % static_cast<long long>(frame_bytes_) != 0) {
    return Status::Error("--frames " + path + " has " + std::to_string(size) +
                         " bytes, not a positive multiple of one " + std::to_string(height) +
                         "x" + std::to_string(width) + "x3 uint8 RGB frame (" +
                         std::to_string(frame_bytes_) +
                         " bytes); decode the video at the model's resolution");
  }
  count_ = size / static_cast<long long>(frame_bytes_);
  return Status::Ok();
}

void FrameSource::UseRandom(int height, int width, int count, uint32_t seed) {
  frame_bytes_ = size_t(height) * size_t(width) * 3;
  count_ = count;
  random_.resize(frame_bytes_ * size_t(count));
  uint32_t x = seed ? seed : 1;
  for (uint8_t& b : random_) {  // xorshift32: deterministic across platforms
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = uint8_t(x >> 24);
  }
}

Status FrameSource::Read(int64_t index, std::vector<uint8_t>* frame) {
  const int64_t i = index % count_;
  frame->resize(frame_bytes_);
  if (!file_) {
    std::memcpy(frame->data(), random_.data() + size_t(i) * frame_bytes_, frame_bytes_);
    return Status::Ok();
  }
  if (std::fseek(file_, static_cast<long>(i * static_cast<int64_t>(frame_bytes_)), SEEK_SET) != 0 ||
      std::fread(frame->data(), 1, frame_bytes_, file_) != frame_bytes_) {
    return Status::Error("cannot read frame " + std::to_string(i) + " of --frames");
  }
  return Status::Ok();
}

}  // namespace mobdistill
