#include "image_convert.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace mobdistill {
namespace {

constexpr int32_t kMaxSide = 16384;  // larger than any camera stream; bounds the index math

bool Rotated(const CameraImage& image) {
  return image.rotation_degrees == 90 || image.rotation_degrees == 270;
}

// Bytes a plane of `cols` x `rows` samples reads: the last row may stop at its last pixel
// (Android camera planes do), so it is not a whole row_stride.
int64_t BytesNeeded(const ImagePlane& plane, int64_t cols, int64_t rows, int64_t pixel_bytes) {
  return (rows - 1) * plane.row_stride + (cols - 1) * plane.pixel_stride + pixel_bytes;
}

Status CheckPlane(const ImagePlane& plane, const char* name, int64_t cols, int64_t rows,
                  int64_t pixel_bytes) {
  const std::string label = std::string("plane ") + name;
  if (plane.data == nullptr) return Status::Error(label + " has no data");
  if (plane.pixel_stride < pixel_bytes) {
    return Status::Error(label + " pixel stride " + std::to_string(plane.pixel_stride) +
                         " is below " + std::to_string(pixel_bytes) + " bytes per pixel");
  }
  if (plane.row_stride < (cols - 1) * plane.pixel_stride + pixel_bytes) {
    return Status::Error(label + " row stride " + std::to_string(plane.row_stride) +
                         " is shorter than a row of " + std::to_string(cols) + " pixels");
  }
  const int64_t needed = BytesNeeded(plane, cols, rows, pixel_bytes);
  if (int64_t(plane.size) < needed) {
    return Status::Error(label + " holds " + std::to_string(plane.size) + " bytes; " +
                         std::to_string(cols) + "x" + std::to_string(rows) + " pixels with its " +
                         "strides need " + std::to_string(needed));
  }
  return Status::Ok();
}

uint8_t Clamp(int32_t v) { return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v); }

// Full-range BT.601 (JFIF), the inverse of Pillow's RGB -> YCbCr.
void YuvToRgb(float y, float u, float v, uint8_t* rgb) {
  const float cb = u - 128.f, cr = v - 128.f;
  rgb[0] = Clamp(int32_t(std::lround(y + 1.402f * cr)));
  rgb[1] = Clamp(int32_t(std::lround(y - 0.344136f * cb - 0.714136f * cr)));
  rgb[2] = Clamp(int32_t(std::lround(y + 1.772f * cb)));
}

// Byte offsets of every upright index along one axis. An upright axis maps to one sensor axis
// (x or y), possibly reversed; `shift` halves the index for the chroma planes.
std::vector<size_t> AxisOffsets(int32_t count, bool to_sensor_x, bool reversed, int shift,
                                const ImagePlane& plane) {
  std::vector<size_t> out(static_cast<size_t>(count));
  for (int32_t i = 0; i < count; ++i) {
    const int32_t s = (reversed ? count - 1 - i : i) >> shift;
    out[size_t(i)] = size_t(s) * size_t(to_sensor_x ? plane.pixel_stride : plane.row_stride);
  }
  return out;
}

// Which sensor axis an upright axis walks along, and whether reversed, for a clockwise
// rotation: upright (u, v) comes from sensor (x, y) =
//   0: (u, v)   90: (v, h-1-u)   180: (w-1-u, h-1-v)   270: (w-1-v, u)
struct AxisMap {
  bool u_is_sensor_x, u_reversed, v_reversed;
};

AxisMap MapFor(int32_t rotation) {
  switch (rotation) {
    case 90: return {false, true, false};
    case 180: return {true, true, true};
    case 270: return {false, false, true};
    default: return {true, false, false};
  }
}

struct PlaneOffsets {
  std::vector<size_t> along_u, along_v;
};

PlaneOffsets OffsetsFor(const CameraImage& image, const ImagePlane& plane, int shift) {
  const AxisMap map = MapFor(image.rotation_degrees);
  return {AxisOffsets(UprightWidth(image), map.u_is_sensor_x, map.u_reversed, shift, plane),
          AxisOffsets(UprightHeight(image), !map.u_is_sensor_x, map.v_reversed, shift, plane)};
}

}  // namespace

int32_t UprightWidth(const CameraImage& image) {
  return Rotated(image) ? image.height : image.width;
}

int32_t UprightHeight(const CameraImage& image) {
  return Rotated(image) ? image.width : image.height;
}

Status CheckCameraImage(const CameraImage& image) {
  if (image.width <= 0 || image.height <= 0 || image.width > kMaxSide ||
      image.height > kMaxSide) {
    return Status::Error("frame size " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + " must be within 1.." +
                         std::to_string(kMaxSide));
  }
  const int32_t r = image.rotation_degrees;
  if (r != 0 && r != 90 && r != 180 && r != 270) {
    return Status::Error("rotation " + std::to_string(r) +
                         " must be 0, 90, 180 or 270 (ImageInfo.getRotationDegrees())");
  }
  if (image.format == PixelFormat::kRgba8888) {
    return CheckPlane(image.planes[0], "RGBA", image.width, image.height, 4);
  }
  if (image.format != PixelFormat::kYuv420888) {
    return Status::Error("pixel format " + std::to_string(int32_t(image.format)) +
                         " is neither RGBA_8888 (1) nor YUV_420_888 (35)");
  }
  const ImagePlane& u = image.planes[1];
  const ImagePlane& v = image.planes[2];
  if (u.row_stride != v.row_stride || u.pixel_stride != v.pixel_stride) {
    return Status::Error("the U and V planes must share row and pixel strides (YUV_420_888)");
  }
  const int64_t cw = (image.width + 1) / 2, ch = (image.height + 1) / 2;
  MD_RETURN_IF_ERROR(CheckPlane(image.planes[0], "Y", image.width, image.height, 1));
  MD_RETURN_IF_ERROR(CheckPlane(u, "U", cw, ch, 1));
  return CheckPlane(v, "V", cw, ch, 1);
}

std::vector<CameraImageConverter::Taps> BilinearTaps(int32_t in_size, int32_t out_size) {
  std::vector<CameraImageConverter::Taps> taps(static_cast<size_t>(out_size));
  const double scale = double(in_size) / double(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // the triangle's support is 1, widened when shrinking
  for (int32_t o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    const int32_t first = std::max(int32_t(center - support + 0.5), 0);
    const int32_t last = std::min(int32_t(center + support + 0.5), in_size);
    CameraImageConverter::Taps& t = taps[size_t(o)];
    t.first = first;
    double total = 0;
    std::vector<double> w;
    for (int32_t s = first; s < last; ++s) {
      const double x = std::fabs((s - center + 0.5) / filter_scale);
      w.push_back(x < 1.0 ? 1.0 - x : 0.0);
      total += w.back();
    }
    for (double weight : w) t.weights.push_back(float(total > 0 ? weight / total : 0.0));
  }
  return taps;
}

void CameraImageConverter::Prepare(int32_t in_width, int32_t in_height, int32_t out_width,
                                   int32_t out_height) {
  if (in_width == in_width_ && in_height == in_height_ && out_width == out_width_ &&
      out_height == out_height_) {
    return;
  }
  x_taps_ = BilinearTaps(in_width, out_width);
  y_taps_ = BilinearTaps(in_height, out_height);
  in_width_ = in_width;
  in_height_ = in_height;
  out_width_ = out_width;
  out_height_ = out_height;
}

Status CameraImageConverter::Convert(const CameraImage& image, int32_t out_width,
                                     int32_t out_height, uint8_t* rgb) {
  MD_RETURN_IF_ERROR(CheckCameraImage(image));
  if (rgb == nullptr || out_width <= 0 || out_height <= 0) {
    return Status::Error("the output needs a buffer and a positive size");
  }
  Prepare(UprightWidth(image), UprightHeight(image), out_width, out_height);
  const bool rgba = image.format == PixelFormat::kRgba8888;
  const PlaneOffsets main = OffsetsFor(image, image.planes[0], 0);
  // Chroma offsets index the U and V planes alike (same strides, checked above).
  const PlaneOffsets chroma = rgba ? PlaneOffsets() : OffsetsFor(image, image.planes[1], 1);
  const uint8_t* p0 = image.planes[0].data;
  const uint8_t* pu = image.planes[1].data;
  const uint8_t* pv = image.planes[2].data;
  const size_t width = size_t(UprightWidth(image));
  // Separable: the vertical taps of one output row over the whole upright width (three
  // channels: RGB, or YUV converted once per output pixel at the end), then the horizontal
  // taps. Filtering YUV before converting differs from converting first only where a colour
  // is clipped to 0..255.
  column_sums_.resize(width * 3);
  for (int32_t oy = 0; oy < out_height; ++oy) {
    const Taps& ty = y_taps_[size_t(oy)];
    std::fill(column_sums_.begin(), column_sums_.end(), 0.f);
    for (size_t j = 0; j < ty.weights.size(); ++j) {
      const size_t v = size_t(ty.first) + j;
      const float w = ty.weights[j];
      const uint8_t* row = p0 + main.along_v[v];
      float* sums = column_sums_.data();
      if (rgba) {
        for (size_t u = 0; u < width; ++u, sums += 3) {
          const uint8_t* px = row + main.along_u[u];
          sums[0] += w * float(px[0]);
          sums[1] += w * float(px[1]);
          sums[2] += w * float(px[2]);
        }
      } else {
        const size_t chroma_row = chroma.along_v[v];
        for (size_t u = 0; u < width; ++u, sums += 3) {
          const size_t c = chroma_row + chroma.along_u[u];
          sums[0] += w * float(row[main.along_u[u]]);
          sums[1] += w * float(pu[c]);
          sums[2] += w * float(pv[c]);
        }
      }
    }
    uint8_t* out = rgb + size_t(oy) * size_t(out_width) * 3;
    for (int32_t ox = 0; ox < out_width; ++ox, out += 3) {
      const Taps& tx = x_taps_[size_t(ox)];
      float acc[3] = {0, 0, 0};
      const float* sums = column_sums_.data() + size_t(tx.first) * 3;
      for (size_t i = 0; i < tx.weights.size(); ++i, sums += 3) {
        acc[0] += tx.weights[i] * sums[0];
        acc[1] += tx.weights[i] * sums[1];
        acc[2] += tx.weights[i] * sums[2];
      }
      if (rgba) {
        for (int c = 0; c < 3; ++c) out[c] = Clamp(int32_t(std::lround(acc[c])));
      } else {
        YuvToRgb(acc[0], acc[1], acc[2], out);
      }
    }
  }
  return Status::Ok();
}

Status MaskToPreview(const uint8_t* mask, int32_t mask_width, int32_t mask_height, uint8_t* out,
                     int32_t out_width, int32_t out_height, int32_t out_row_stride) {
  if (mask == nullptr || out == nullptr || mask_width <= 0 || mask_height <= 0 ||
      out_width <= 0 || out_height <= 0 || out_width > kMaxSide || out_height > kMaxSide ||
      out_row_stride < out_width) {
    return Status::Error("mask to preview: buffers and positive sizes needed, rows of at least "
                         "the preview width");
  }
  std::vector<int32_t> columns(static_cast<size_t>(out_width));
  for (int32_t x = 0; x < out_width; ++x) {
    columns[size_t(x)] = int32_t((int64_t(2 * x + 1) * mask_width) / (2 * int64_t(out_width)));
  }
  for (int32_t y = 0; y < out_height; ++y) {
    const int64_t my = (int64_t(2 * y + 1) * mask_height) / (2 * int64_t(out_height));
    const uint8_t* src = mask + size_t(my) * size_t(mask_width);
    uint8_t* dst = out + size_t(y) * size_t(out_row_stride);
    for (int32_t x = 0; x < out_width; ++x) dst[x] = src[columns[size_t(x)]];
  }
  return Status::Ok();
}

}  // namespace mobdistill
