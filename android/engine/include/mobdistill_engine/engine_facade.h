// The narrow C API the JNI bridge calls; the engine (android/engine) implements it in
// mobdistill_engine_core. Plain C so nothing is thrown across it, errors come back as a non-zero
// return plus a message in a caller-owned buffer (the engine's Status text, with the fix).
#ifndef MOBDISTILL_ENGINE_FACADE_H_
#define MOBDISTILL_ENGINE_FACADE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct MdEngine MdEngine;

// Same meaning and defaults as the mobdistill-engine flags of the same name.
typedef struct MdEngineOptions {
  const char* manifest;      // --manifest: path to <name>.manifest.json (required)
  const char* runtime_lib;   // --runtime_lib: library exporting the TFLite C API (required)
  const char* delegate_lib;  // --delegate_lib: GPU delegate library, or NULL
  const char* delegate;      // "cpu", "xnnpack", "gpu" or "nnapi"; NULL = "xnnpack"
  int32_t num_threads;       // --num_threads; <= 0 means 1
  // --update_key_file as bytes: this device's HMAC-SHA256 key for md_engine_apply_update.
  // Without one every packet is refused (bad_hmac) unless insecure_updates is set.
  const uint8_t* update_key;
  size_t update_key_size;
  // --update_device_id as bytes: 16 bytes, or NULL (all zero); packets must name this id.
  const uint8_t* update_device_id;
  // --insecure_updates: non-zero accepts unauthenticated packets (and refuses authenticated
  // ones). Only for experiments; the engine warns on stderr.
  int32_t insecure_updates;
  // --update_state_file: where the last applied sequence is kept across restarts (e.g. in the
  // app's private files folder), or NULL. Without it a restarted app accepts old packets again.
  const char* update_state_file;
  // --update_build_priority: "idle" (NULL: the default) decodes, patches and builds updates as
  // SCHED_IDLE between frames; "normal" at frame priority (comparisons only).
  const char* update_build_priority;
} MdEngineOptions;

typedef struct MdModelInfo {
  int32_t height;            // frame input H (manifest model.resolution[0])
  int32_t width;             // frame input W
  int32_t num_classes;       // output.num_classes
  int32_t queue_length;      // memory.queue_length, 0 for stateless models
} MdModelInfo;

// Loads and verifies the manifest (sha256), builds the interpreter. 0 on success.
int32_t md_engine_create(const MdEngineOptions* options, MdEngine** out, char* error,
                         size_t error_size);
void md_engine_destroy(MdEngine* engine);
int32_t md_engine_info(const MdEngine* engine, MdModelInfo* info);
// The delegate that actually runs ("xnnpack", "gpu", ...): may differ from the one requested.
const char* md_engine_delegate_used(const MdEngine* engine);
// Starts a new video: the first frame after reset runs `init` (stateful models) or `keyframe`
// (delta-distilled models).
void md_engine_reset(MdEngine* engine);
// Delta-distilled models (a manifest `schedule`): every T-th frame runs the `keyframe` signature
// (the original network), the frames between the cheap `delta` one. The T in use (the
// manifest's schedule.period until set), or 0 for other models.
int32_t md_engine_keyframe_interval(MdEngine* engine);
// A new T >= 1 from the next frame on (e.g. a longer one while the phone runs hot). 0 on
// success; 1 (with the message) for T < 1 or a model without a keyframe schedule.
int32_t md_engine_set_keyframe_interval(MdEngine* engine, int32_t interval, char* error,
                                        size_t error_size);
// Whether the last segmented frame ran `keyframe` (1) or `delta` (0); -1 before the first frame
// and for models without a keyframe schedule.
int32_t md_engine_last_frame_keyframe(MdEngine* engine);
// One frame: `rgb` is uint8 RGB of exactly width x height (info), rows `row_stride` bytes apart.
// Writes width*height class ids (argmax of the logits) to `mask`; `invoke_us` gets the time of
// the interpreter invoke alone. 0 on success.
int32_t md_engine_segment(MdEngine* engine, const uint8_t* rgb, int32_t row_stride,
                          uint8_t* mask, int64_t* invoke_us, char* error, size_t error_size);
// Pixel formats of camera frames: the values of Android's PixelFormat.RGBA_8888 and
// ImageFormat.YUV_420_888, so ImageProxy.getFormat() passes through unchanged.
#define MD_IMAGE_RGBA_8888 1
#define MD_IMAGE_YUV_420_888 35

typedef struct MdImagePlane {
  const uint8_t* data;     // the plane's first byte (ImageProxy.PlaneProxy.getBuffer())
  size_t size;             // bytes readable from data; every pixel the strides reach must fit
  int32_t row_stride;      // bytes between rows
  int32_t pixel_stride;    // bytes between pixels: RGBA 4, Y 1, U/V 1 (planar) or 2 (NV21/NV12)
} MdImagePlane;

// A camera frame as the sensor delivered it: RGBA uses planes[0]; YUV uses Y, U, V (U and V at
// half width and height, rounded up, with the same strides).
typedef struct MdCameraImage {
  int32_t format;            // MD_IMAGE_RGBA_8888 or MD_IMAGE_YUV_420_888
  int32_t width;             // of the buffer, in sensor orientation
  int32_t height;
  int32_t rotation_degrees;  // clockwise to upright (ImageInfo.getRotationDegrees()): 0/90/180/270
  MdImagePlane planes[3];
} MdCameraImage;

// The frame's three timed stages in microseconds (the engine's per-frame record):
// preprocess = camera conversion + writing the input tensor, invoke = the interpreter alone.
typedef struct MdFrameTiming {
  int64_t preprocess_us;
  int64_t invoke_us;
  int64_t postprocess_us;
} MdFrameTiming;

// One camera frame, any size: converted to RGB, rotated upright and resized to the model input
// in one pass (Pillow's bilinear filter, full-range BT.601 for YUV), then segmented. `mask`
// receives width*height class ids (info) of the UPRIGHT frame; md_mask_to_preview maps them
// onto the preview. A frame whose strides reach past a plane's size is refused. 0 on success.
int32_t md_engine_segment_image(MdEngine* engine, const MdCameraImage* image, uint8_t* mask,
                                MdFrameTiming* timing, char* error, size_t error_size);
// The conversion alone (no engine): `image` -> out_height x out_width packed RGB, exactly what
// md_engine_segment_image feeds the model. 0 on success.
int32_t md_convert_image(const MdCameraImage* image, int32_t out_width, int32_t out_height,
                         uint8_t* rgb, char* error, size_t error_size);
// A mask of the upright model input (mask_width x mask_height) onto a preview of out_width x
// out_height showing the same upright frame (nearest class, pixel centres aligned); rows of
// `out` are out_row_stride bytes apart. 0 on success.
int32_t md_mask_to_preview(const uint8_t* mask, int32_t mask_width, int32_t mask_height,
                           uint8_t* out, int32_t out_width, int32_t out_height,
                           int32_t out_row_stride, char* error, size_t error_size);
// One sparse-update packet (wire format MDUP v2, docs/wire-format.md): decodes and verifies it
// (base sha256, device id, CRC, HMAC, sequence), patches a copy of the model and builds + warms a new
// interpreter, all on the calling thread: call it from a background thread, never the camera
// analyzer. The next md_engine_segment swaps to it (between frames; frames keep running on the
// old model meanwhile). Writes the outcome as one JSON object (the engine's update record:
// status "applied"|"rejected", reason, sequence, decode_us, patch_us, build_us, warm_us, ...)
// into `result_json`. Returns 0 applied (prepared), 1 rejected (model unchanged), -1 on misuse
// (closed engine, model without parameter_map; the message is in `result_json`).
int32_t md_engine_apply_update(MdEngine* engine, const uint8_t* packet, size_t packet_size,
                               char* result_json, size_t result_size);
// Running statistics as one JSON object: frames, model_version, delegate_used, invoke and
// preprocess {count, min_us, p50_us, p90_us, p99_us, max_us, mean_us} over the last 1000 frames,
// schedule (delta-distilled models, else null: keyframe_interval, keyframe_invoke and
// delta_invoke over the same frames, invoke_p99_over_p50), and updates {received, applied,
// rejected, rejected_by_reason, last} (counts over the engine's life; the engine keeps only the
// last 256 records). Returns 0, or the buffer size needed
// (> 0) when `json_size` is too small (nothing written then).
int32_t md_engine_stats(MdEngine* engine, char* json, size_t json_size);
// The benchmark: exactly `mobdistill-engine argv...` (same flags, same JSONL and summary files),
// in-process. argv[0] is ignored. Returns the executable's exit code.
int32_t md_engine_benchmark_main(int32_t argc, const char* const* argv, char* error,
                                 size_t error_size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // MOBDISTILL_ENGINE_FACADE_H_
