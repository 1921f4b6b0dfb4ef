// The camera-frame converter on small frames whose answer is known exactly; the comparison with
// Pillow on real video frames is tests/engine/test_camera_frames.py.
#include <cmath>
#include <cstdint>
#include <vector>

#include "check.h"
#include "image_convert.h"

using mobdistill::CameraImage;
using mobdistill::CameraImageConverter;
using mobdistill::PixelFormat;

namespace {

constexpr int32_t kW = 3, kH = 2;

// RGBA pixel (x, y) holds (10x + y, 100 + y, 7) so every position is distinct; rows padded.
std::vector<uint8_t> RgbaFrame(int32_t row_stride) {
  std::vector<uint8_t> data(size_t(row_stride) * kH, 0xEE);
  for (int32_t y = 0; y < kH; ++y)
    for (int32_t x = 0; x < kW; ++x) {
      uint8_t* p = &data[size_t(y * row_stride + x * 4)];
      p[0] = uint8_t(10 * x + y);
      p[1] = uint8_t(100 + y);
      p[2] = 7;
      p[3] = 255;
    }
  return data;
}

CameraImage Rgba(const std::vector<uint8_t>& data, int32_t row_stride, int32_t rotation) {
  CameraImage image;
  image.format = PixelFormat::kRgba8888;
  image.width = kW;
  image.height = kH;
  image.rotation_degrees = rotation;
  image.planes[0] = {data.data(), data.size(), row_stride, 4};
  return image;
}

// Same-size conversion is a pure rotation: upright (u, v) comes from sensor (x, y).
void RotationsMovePixelsExactly() {
  const int32_t stride = kW * 4 + 5;
  const std::vector<uint8_t> data = RgbaFrame(stride);
  const int rotations[4] = {0, 90, 180, 270};
  for (int rotation : rotations) {
    CameraImage image = Rgba(data, stride, rotation);
    const int32_t uw = mobdistill::UprightWidth(image), uh = mobdistill::UprightHeight(image);
    CHECK_EQ(uw, rotation % 180 ? kH : kW);
    std::vector<uint8_t> rgb(size_t(uw * uh * 3));
    CameraImageConverter converter;
    CHECK(converter.Convert(image, uw, uh, rgb.data()).ok());
    for (int32_t v = 0; v < uh; ++v)
      for (int32_t u = 0; u < uw; ++u) {
        int32_t x = u, y = v;
        if (rotation == 90) x = v, y = kH - 1 - u;
        if (rotation == 180) x = kW - 1 - u, y = kH - 1 - v;
        if (rotation == 270) x = kW - 1 - v, y = u;
        const uint8_t* got = &rgb[size_t((v * uw + u) * 3)];
        CHECK_EQ(got[0], 10 * x + y);
        CHECK_EQ(got[1], 100 + y);
        CHECK_EQ(got[2], 7);
      }
  }
}

struct Yuv {
  std::vector<uint8_t> y, u, v, vu;  // planar U and V, and NV21 (V then U interleaved)
};

Yuv YuvFrame(int32_t w, int32_t h, uint8_t luma, uint8_t cb, uint8_t cr) {
  const size_t cw = size_t(w + 1) / 2, ch = size_t(h + 1) / 2;
  Yuv f{std::vector<uint8_t>(size_t(w * h), luma), std::vector<uint8_t>(cw * ch, cb),
        std::vector<uint8_t>(cw * ch, cr), {}};
  for (size_t i = 0; i < cw * ch; ++i) {
    f.vu.push_back(cr);
    f.vu.push_back(cb);
  }
  return f;
}

CameraImage YuvImage(const Yuv& f, int32_t w, int32_t h, bool nv21) {
  CameraImage image;
  image.format = PixelFormat::kYuv420888;
  image.width = w;
  image.height = h;
  image.planes[0] = {f.y.data(), f.y.size(), w, 1};
  const int32_t cw = (w + 1) / 2;
  if (nv21) {
    // Android's two views of one V,U,V,U... buffer: each ends at its own last sample.
    image.planes[1] = {f.vu.data() + 1, f.vu.size() - 1, 2 * cw, 2};
    image.planes[2] = {f.vu.data(), f.vu.size() - 1, 2 * cw, 2};
  } else {
    image.planes[1] = {f.u.data(), f.u.size(), cw, 1};
    image.planes[2] = {f.v.data(), f.v.size(), cw, 1};
  }
  return image;
}

// Full-range BT.601: grey stays grey; Y/Cb/Cr of pure red come back red; NV21 reads the same.
void YuvColours() {
  const int32_t w = 7, h = 5;  // odd: chroma rounds up
  std::vector<uint8_t> rgb(size_t(4 * 3 * 3));
  CameraImageConverter converter;
  const Yuv grey = YuvFrame(w, h, 90, 128, 128);
  CHECK(converter.Convert(YuvImage(grey, w, h, false), 4, 3, rgb.data()).ok());
  for (uint8_t c : rgb) CHECK_EQ(c, 90);
  const Yuv red = YuvFrame(w, h, 76, 85, 255);
  for (bool nv21 : {false, true}) {
    CHECK(converter.Convert(YuvImage(red, w, h, nv21), 4, 3, rgb.data()).ok());
    for (size_t p = 0; p < rgb.size(); p += 3) {
      CHECK(rgb[p] >= 253 && rgb[p + 1] <= 2 && rgb[p + 2] <= 2);
    }
  }
}

void TapsAreNormalised() {
  for (auto sizes : {std::pair<int, int>{640, 128}, {272, 64}, {5, 17}, {3, 3}}) {
    const auto taps = mobdistill::BilinearTaps(sizes.first, sizes.second);
    CHECK_EQ(taps.size(), size_t(sizes.second));
    for (const auto& t : taps) {
      double total = 0;
      for (float w : t.weights) total += w;
      CHECK(std::fabs(total - 1.0) < 1e-5);
      CHECK(t.first >= 0 && t.first + int32_t(t.weights.size()) <= sizes.first);
    }
  }
}

// A frame that does not fit its buffers is refused, naming what is wrong.
void BadFramesAreRefused() {
  const int32_t stride = kW * 4;
  std::vector<uint8_t> data = RgbaFrame(stride);
  std::vector<uint8_t> rgb(64 * 3);
  CameraImageConverter converter;
  CameraImage image = Rgba(data, stride, 0);
  image.planes[0].size = data.size() - 1;
  CHECK_CONTAINS(converter.Convert(image, 4, 4, rgb.data()).message(), "need");
  image = Rgba(data, stride, 45);
  CHECK_CONTAINS(converter.Convert(image, 4, 4, rgb.data()).message(), "rotation");
  image = Rgba(data, kW * 4 - 1, 0);
  CHECK_CONTAINS(converter.Convert(image, 4, 4, rgb.data()).message(), "row stride");
  image = Rgba(data, stride, 0);
  image.format = static_cast<PixelFormat>(17);  // NV21 as a format of its own: not accepted
  CHECK_CONTAINS(converter.Convert(image, 4, 4, rgb.data()).message(), "YUV_420_888");
  image = Rgba(data, stride, 0);
  image.width = -3;
  CHECK(!converter.Convert(image, 4, 4, rgb.data()).ok());
  const Yuv f = YuvFrame(6, 4, 1, 2, 3);
  image = YuvImage(f, 6, 4, false);
  image.planes[2].pixel_stride = 2;
  CHECK_CONTAINS(converter.Convert(image, 4, 4, rgb.data()).message(), "share");
}

void MaskToPreviewReplicatesClasses() {
  const uint8_t mask[4] = {1, 2, 3, 4};  // 2x2
  std::vector<uint8_t> out(size_t(5 * 4), 0);  // 4x4 preview, rows 5 bytes apart
  CHECK(mobdistill::MaskToPreview(mask, 2, 2, out.data(), 4, 4, 5).ok());
  const uint8_t want[4][4] = {{1, 1, 2, 2}, {1, 1, 2, 2}, {3, 3, 4, 4}, {3, 3, 4, 4}};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) CHECK_EQ(out[size_t(y * 5 + x)], want[y][x]);
  CHECK(!mobdistill::MaskToPreview(mask, 2, 2, out.data(), 4, 4, 3).ok());
}

}  // namespace

int main() {
  RotationsMovePixelsExactly();
  YuvColours();
  TapsAreNormalised();
  BadFramesAreRefused();
  MaskToPreviewReplicatesClasses();
  return TEST_MAIN_RETURN();
}
