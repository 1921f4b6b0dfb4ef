// Camera frames -> the model's RGB input in one pass: colour conversion (YUV_420_888 or
// RGBA_8888, any row/pixel strides), rotation to upright and resizing happen together, row by
// output row, with no full-size intermediate image (only one row of vertical sums). Resizing is Pillow's BILINEAR (a triangle filter that
// widens when shrinking, so small inputs are not aliased): the resampling mobdistill.video uses
// for the frames models are verified on. YUV is full-range BT.601 (JFIF), what Android cameras
// deliver, converted like Pillow's YCbCr -> RGB.
#ifndef MOBDISTILL_ENGINE_IMAGE_CONVERT_H_
#define MOBDISTILL_ENGINE_IMAGE_CONVERT_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"

namespace mobdistill {

// The values of Android's PixelFormat.RGBA_8888 and ImageFormat.YUV_420_888, so an app passes
// ImageProxy.getFormat() as it is.
enum class PixelFormat : int32_t { kRgba8888 = 1, kYuv420888 = 35 };

struct ImagePlane {
  const uint8_t* data = nullptr;
  size_t size = 0;           // bytes readable from data (the plane buffer's capacity)
  int32_t row_stride = 0;    // bytes between rows
  int32_t pixel_stride = 0;  // bytes between pixels of a row (RGBA: 4; U/V: 1 planar, 2 NV21)
};

// One camera frame as the sensor delivered it. planes: RGBA uses [0]; YUV uses Y, U, V (U and
// V at half resolution, rounded up).
struct CameraImage {
  PixelFormat format = PixelFormat::kRgba8888;
  int32_t width = 0, height = 0;  // of the buffer, in sensor orientation
  int32_t rotation_degrees = 0;   // clockwise rotation that makes it upright: 0, 90, 180, 270
  ImagePlane planes[3];
};

// Size after rotation: what the preview shows (width and height swap for 90 and 270).
int32_t UprightWidth(const CameraImage& image);
int32_t UprightHeight(const CameraImage& image);

// Every field checked against the buffers' sizes: a bad frame is an error, never a read past
// a plane.
Status CheckCameraImage(const CameraImage& image);

// Reuses its filter tables while the frame and output sizes stay the same (a camera stream).
class CameraImageConverter {
 public:
  // Writes out_height x out_width packed RGB (3 bytes per pixel) to `rgb`.
  Status Convert(const CameraImage& image, int32_t out_width, int32_t out_height, uint8_t* rgb);

  // Taps of one output index along one axis: source indices [first, first + weights.size()).
  struct Taps {
    int32_t first = 0;
    std::vector<float> weights;  // sum to 1
  };

 private:
  void Prepare(int32_t in_width, int32_t in_height, int32_t out_width, int32_t out_height);

  int32_t in_width_ = -1, in_height_ = -1, out_width_ = -1, out_height_ = -1;
  std::vector<Taps> x_taps_, y_taps_;  // over the upright image
  std::vector<float> column_sums_;     // one output row's vertical sums, 3 per upright column
};

// Pillow's BILINEAR taps for resizing `in_size` samples to `out_size` (exposed for tests).
std::vector<CameraImageConverter::Taps> BilinearTaps(int32_t in_size, int32_t out_size);

// The mask of the upright model input (mask_height x mask_width class ids) mapped onto a
// preview of out_height x out_width showing the same upright frame, nearest neighbour with
// pixel centres aligned. Rows of `out` are out_row_stride bytes apart.
Status MaskToPreview(const uint8_t* mask, int32_t mask_width, int32_t mask_height, uint8_t* out,
                     int32_t out_width, int32_t out_height, int32_t out_row_stride);

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_IMAGE_CONVERT_H_
