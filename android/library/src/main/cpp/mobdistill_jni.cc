// The one JNI file: org.mobdistill.MobdistillEngine's native methods over the engine's C facade
// (android/engine/include/mobdistill_engine/engine_facade.h).
// Nothing is thrown across JNI: a facade error becomes a pending Java MobdistillException
// (env->ThrowNew) and the function returns a neutral value. Handles are jlong pointers owned by
// the Kotlin object: its read-write lock keeps close() (which destroys them exactly once) from
// running while another thread is inside one of these functions.
#include <jni.h>

#include <string>
#include <vector>

#include "mobdistill_engine/engine_facade.h"

namespace {

constexpr size_t kErrorSize = 1024;
constexpr char kExceptionClass[] = "org/mobdistill/MobdistillException";

void Throw(JNIEnv* env, const char* message) {
  jclass cls = env->FindClass(kExceptionClass);
  if (cls == nullptr) return;  // NoClassDefFoundError is already pending
  env->ThrowNew(cls, message);
  env->DeleteLocalRef(cls);
}

// A Java string as UTF-8 for the duration of one call; null stays null.
class Utf {
 public:
  Utf(JNIEnv* env, jstring text) : env_(env), text_(text) {
    chars_ = text == nullptr ? nullptr : env->GetStringUTFChars(text, nullptr);
  }
  ~Utf() {
    if (chars_ != nullptr) env_->ReleaseStringUTFChars(text_, chars_);
  }
  Utf(const Utf&) = delete;
  Utf& operator=(const Utf&) = delete;
  const char* get() const { return chars_; }

 private:
  JNIEnv* env_;
  jstring text_;
  const char* chars_;
};

// A Java byte[] copied out (null -> empty).
std::vector<uint8_t> Bytes(JNIEnv* env, jbyteArray array) {
  std::vector<uint8_t> out;
  if (array == nullptr) return out;
  out.resize(static_cast<size_t>(env->GetArrayLength(array)));
  if (!out.empty()) {
    env->GetByteArrayRegion(array, 0, static_cast<jsize>(out.size()),
                            reinterpret_cast<jbyte*>(out.data()));
  }
  return out;
}

// A direct ByteBuffer's bytes, or null with a pending exception naming `what`.
const uint8_t* DirectBytes(JNIEnv* env, jobject buffer, const char* what, size_t* size) {
  void* address = buffer == nullptr ? nullptr : env->GetDirectBufferAddress(buffer);
  const jlong capacity = buffer == nullptr ? -1 : env->GetDirectBufferCapacity(buffer);
  if (address == nullptr || capacity < 0) {
    const std::string message = std::string(what) + " must be a direct ByteBuffer (the camera "
                                "plane's own buffer, or ByteBuffer.allocateDirect)";
    Throw(env, message.c_str());
    return nullptr;
  }
  *size = static_cast<size_t>(capacity);
  return static_cast<const uint8_t*>(address);
}

// The frame's planes (Kotlin passes slices starting at each buffer's position); the engine
// checks every stride against these sizes. False with a pending exception.
bool FillImage(JNIEnv* env, jint format, jint width, jint height, jint rotation,
               jobjectArray planes, jintArray strides, MdCameraImage* image) {
  *image = MdCameraImage{format, width, height, rotation, {}};
  const jsize count = planes == nullptr ? 0 : env->GetArrayLength(planes);
  if (count < 1 || count > 3 || strides == nullptr || env->GetArrayLength(strides) != 2 * count) {
    Throw(env, "a camera frame has 1 (RGBA) or 3 (Y, U, V) planes, each with 2 strides");
    return false;
  }
  jint values[6] = {0};
  env->GetIntArrayRegion(strides, 0, 2 * count, values);
  for (jsize p = 0; p < count; ++p) {
    jobject buffer = env->GetObjectArrayElement(planes, p);
    size_t size = 0;
    const uint8_t* data = DirectBytes(env, buffer, "every plane", &size);
    env->DeleteLocalRef(buffer);
    if (data == nullptr) return false;
    image->planes[p] = MdImagePlane{data, size, values[2 * p], values[2 * p + 1]};
  }
  return true;
}

MdEngine* FromHandle(JNIEnv* env, jlong handle) {
  if (handle == 0) Throw(env, "the engine is closed; open a new MobdistillEngine");
  return reinterpret_cast<MdEngine*>(handle);
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_org_mobdistill_MobdistillEngine_nativeCreate(
    JNIEnv* env, jclass, jstring manifest, jstring runtime_lib, jstring delegate_lib,
    jstring delegate, jint num_threads, jbyteArray update_key, jbyteArray device_id,
    jboolean insecure_updates, jstring state_file) {
  Utf manifest_utf(env, manifest), runtime_utf(env, runtime_lib);
  Utf delegate_lib_utf(env, delegate_lib), delegate_utf(env, delegate);
  Utf state_utf(env, state_file);
  std::vector<uint8_t> key = Bytes(env, update_key);
  std::vector<uint8_t> id = Bytes(env, device_id);  // 16 bytes (checked in Kotlin) or empty
  if (!id.empty() && id.size() != 16) {
    Throw(env, "deviceId must be 16 bytes");
    return 0;
  }
  MdEngineOptions options{manifest_utf.get(), runtime_utf.get(), delegate_lib_utf.get(),
                          delegate_utf.get(), num_threads, key.empty() ? nullptr : key.data(),
                          key.size(), id.empty() ? nullptr : id.data(),
                          insecure_updates == JNI_TRUE ? 1 : 0, state_utf.get(),
                          /*update_build_priority=*/nullptr};
  MdEngine* engine = nullptr;
  char error[kErrorSize] = {0};
  if (md_engine_create(&options, &engine, error, sizeof(error)) != 0 || engine == nullptr) {
    Throw(env, error[0] ? error : "md_engine_create failed without a message");
    return 0;
  }
  return reinterpret_cast<jlong>(engine);
}

JNIEXPORT void JNICALL Java_org_mobdistill_MobdistillEngine_nativeDestroy(JNIEnv*, jclass,
                                                                          jlong handle) {
  if (handle != 0) md_engine_destroy(reinterpret_cast<MdEngine*>(handle));
}

// [height, width, num_classes, queue_length]
JNIEXPORT jintArray JNICALL Java_org_mobdistill_MobdistillEngine_nativeInfo(JNIEnv* env, jclass,
                                                                           jlong handle) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return nullptr;
  MdModelInfo info{};
  if (md_engine_info(engine, &info) != 0) {
    Throw(env, "md_engine_info failed");
    return nullptr;
  }
  const jint values[4] = {info.height, info.width, info.num_classes, info.queue_length};
  jintArray out = env->NewIntArray(4);
  if (out != nullptr) env->SetIntArrayRegion(out, 0, 4, values);
  return out;
}

JNIEXPORT jstring JNICALL Java_org_mobdistill_MobdistillEngine_nativeDelegateUsed(
    JNIEnv* env, jclass, jlong handle) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return nullptr;
  const char* used = md_engine_delegate_used(engine);
  return env->NewStringUTF(used != nullptr ? used : "unknown");
}

JNIEXPORT void JNICALL Java_org_mobdistill_MobdistillEngine_nativeReset(JNIEnv* env, jclass,
                                                                        jlong handle) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine != nullptr) md_engine_reset(engine);
}

// Delta-distilled models: the keyframe interval T in use (0 for other models).
JNIEXPORT jint JNICALL Java_org_mobdistill_MobdistillEngine_nativeKeyframeInterval(
    JNIEnv* env, jclass, jlong handle) {
  MdEngine* engine = FromHandle(env, handle);
  return engine == nullptr ? 0 : md_engine_keyframe_interval(engine);
}

// A new T from the next frame on; T < 1 or a model without a keyframe schedule throws.
JNIEXPORT void JNICALL Java_org_mobdistill_MobdistillEngine_nativeSetKeyframeInterval(
    JNIEnv* env, jclass, jlong handle, jint interval) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return;
  char error[kErrorSize] = {0};
  if (md_engine_set_keyframe_interval(engine, interval, error, sizeof(error)) != 0) {
    Throw(env, error[0] ? error : "md_engine_set_keyframe_interval failed without a message");
  }
}

// 1: the last frame ran `keyframe`, 0: `delta`, -1: no frame yet or no keyframe schedule.
JNIEXPORT jint JNICALL Java_org_mobdistill_MobdistillEngine_nativeLastFrameKeyframe(
    JNIEnv* env, jclass, jlong handle) {
  MdEngine* engine = FromHandle(env, handle);
  return engine == nullptr ? -1 : md_engine_last_frame_keyframe(engine);
}

// rgb and mask are direct ByteBuffers (no copy); returns the invoke time in microseconds.
JNIEXPORT jlong JNICALL Java_org_mobdistill_MobdistillEngine_nativeSegment(
    JNIEnv* env, jclass, jlong handle, jobject rgb, jint row_stride, jobject mask) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return -1;
  MdModelInfo info{};
  md_engine_info(engine, &info);
  auto* rgb_ptr = static_cast<const uint8_t*>(env->GetDirectBufferAddress(rgb));
  auto* mask_ptr = static_cast<uint8_t*>(env->GetDirectBufferAddress(mask));
  const jlong rgb_size = env->GetDirectBufferCapacity(rgb);
  const jlong mask_size = env->GetDirectBufferCapacity(mask);
  if (rgb_ptr == nullptr || mask_ptr == nullptr) {
    Throw(env, "segment needs direct ByteBuffers (ByteBuffer.allocateDirect)");
    return -1;
  }
  const jlong rows = info.height, cols = info.width;
  if (row_stride < cols * 3 || rgb_size < (rows - 1) * row_stride + cols * 3 ||
      mask_size < rows * cols) {
    std::string message = "segment buffers too small for a " + std::to_string(rows) + "x" +
                          std::to_string(cols) + " frame: resize the frame to the model input";
    Throw(env, message.c_str());
    return -1;
  }
  int64_t invoke_us = -1;
  char error[kErrorSize] = {0};
  if (md_engine_segment(engine, rgb_ptr, row_stride, mask_ptr, &invoke_us, error,
                        sizeof(error)) != 0) {
    Throw(env, error[0] ? error : "md_engine_segment failed without a message");
    return -1;
  }
  return static_cast<jlong>(invoke_us);
}

// One camera frame (any size, rotated by the sensor) -> the upright model-sized mask;
// `timing` receives [preprocess_us, invoke_us, postprocess_us].
JNIEXPORT void JNICALL Java_org_mobdistill_MobdistillEngine_nativeSegmentImage(
    JNIEnv* env, jclass, jlong handle, jint format, jint width, jint height, jint rotation,
    jobjectArray planes, jintArray strides, jobject mask, jlongArray timing) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return;
  MdCameraImage image;
  if (!FillImage(env, format, width, height, rotation, planes, strides, &image)) return;
  MdModelInfo info{};
  md_engine_info(engine, &info);
  size_t mask_size = 0;
  uint8_t* mask_ptr = const_cast<uint8_t*>(DirectBytes(env, mask, "mask", &mask_size));
  if (mask_ptr == nullptr) return;
  if (mask_size < size_t(info.height) * size_t(info.width)) {
    Throw(env, "the mask buffer must hold the model's width*height bytes");
    return;
  }
  MdFrameTiming times{};
  char error[kErrorSize] = {0};
  if (md_engine_segment_image(engine, &image, mask_ptr, &times, error, sizeof(error)) != 0) {
    Throw(env, error[0] ? error : "md_engine_segment_image failed without a message");
    return;
  }
  if (timing != nullptr && env->GetArrayLength(timing) >= 3) {
    const jlong values[3] = {times.preprocess_us, times.invoke_us, times.postprocess_us};
    env->SetLongArrayRegion(timing, 0, 3, values);
  }
}

// The conversion alone (no engine): the frame -> out_height x out_width packed RGB in `rgb`.
JNIEXPORT void JNICALL Java_org_mobdistill_MobdistillEngine_nativeConvertImage(
    JNIEnv* env, jclass, jint format, jint width, jint height, jint rotation,
    jobjectArray planes, jintArray strides, jint out_width, jint out_height, jobject rgb) {
  MdCameraImage image;
  if (!FillImage(env, format, width, height, rotation, planes, strides, &image)) return;
  size_t rgb_size = 0;
  uint8_t* rgb_ptr = const_cast<uint8_t*>(DirectBytes(env, rgb, "rgb", &rgb_size));
  if (rgb_ptr == nullptr) return;
  if (out_width <= 0 || out_height <= 0 ||
      rgb_size < size_t(out_width) * size_t(out_height) * 3) {
    Throw(env, "the rgb buffer must hold outWidth*outHeight*3 bytes");
    return;
  }
  char error[kErrorSize] = {0};
  if (md_convert_image(&image, out_width, out_height, rgb_ptr, error, sizeof(error)) != 0) {
    Throw(env, error[0] ? error : "md_convert_image failed without a message");
  }
}

// An upright model mask onto a preview of out_width x out_height (nearest class).
JNIEXPORT void JNICALL Java_org_mobdistill_MobdistillEngine_nativeMaskToPreview(
    JNIEnv* env, jclass, jobject mask, jint mask_width, jint mask_height, jobject out,
    jint out_width, jint out_height) {
  size_t mask_size = 0, out_size = 0;
  const uint8_t* mask_ptr = DirectBytes(env, mask, "mask", &mask_size);
  if (mask_ptr == nullptr) return;
  uint8_t* out_ptr = const_cast<uint8_t*>(DirectBytes(env, out, "out", &out_size));
  if (out_ptr == nullptr) return;
  if (mask_width <= 0 || mask_height <= 0 || out_width <= 0 || out_height <= 0 ||
      mask_size < size_t(mask_width) * size_t(mask_height) ||
      out_size < size_t(out_width) * size_t(out_height)) {
    Throw(env, "mask and out must hold width*height bytes of their sizes");
    return;
  }
  char error[kErrorSize] = {0};
  if (md_mask_to_preview(mask_ptr, mask_width, mask_height, out_ptr, out_width, out_height,
                         out_width, error, sizeof(error)) != 0) {
    Throw(env, error[0] ? error : "md_mask_to_preview failed without a message");
  }
}

// One sparse-update packet, applied on the calling thread; returns the update record as JSON
// (status "applied" or "rejected" with its reason). Misuse (no parameter_map) throws.
JNIEXPORT jstring JNICALL Java_org_mobdistill_MobdistillEngine_nativeApplyUpdate(
    JNIEnv* env, jclass, jlong handle, jbyteArray packet) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return nullptr;
  const std::vector<uint8_t> bytes = Bytes(env, packet);
  std::vector<char> result(8192, 0);
  const int32_t code = md_engine_apply_update(engine, bytes.data(), bytes.size(), result.data(),
                                              result.size());
  if (code < 0) {
    Throw(env, result[0] ? result.data() : "md_engine_apply_update failed without a message");
    return nullptr;
  }
  return env->NewStringUTF(result.data());
}

// Running statistics as JSON (frames, invoke percentiles, model_version, updates).
JNIEXPORT jstring JNICALL Java_org_mobdistill_MobdistillEngine_nativeStats(JNIEnv* env, jclass,
                                                                          jlong handle) {
  MdEngine* engine = FromHandle(env, handle);
  if (engine == nullptr) return nullptr;
  std::vector<char> json(4096, 0);
  int32_t need = md_engine_stats(engine, json.data(), json.size());
  if (need > 0) {
    json.assign(static_cast<size_t>(need), 0);
    need = md_engine_stats(engine, json.data(), json.size());
  }
  if (need != 0) {
    Throw(env, "md_engine_stats failed");
    return nullptr;
  }
  return env->NewStringUTF(json.data());
}

// The benchmark with the executable's flags; returns its exit code.
JNIEXPORT jint JNICALL Java_org_mobdistill_MobdistillEngine_nativeBenchmark(JNIEnv* env, jclass,
                                                                           jobjectArray args) {
  const jsize count = args == nullptr ? 0 : env->GetArrayLength(args);
  std::vector<std::string> storage{"mobdistill-engine"};
  for (jsize i = 0; i < count; ++i) {
    auto item = static_cast<jstring>(env->GetObjectArrayElement(args, i));
    Utf utf(env, item);
    storage.emplace_back(utf.get() != nullptr ? utf.get() : "");
    env->DeleteLocalRef(item);
  }
  std::vector<const char*> argv;
  for (const auto& arg : storage) argv.push_back(arg.c_str());
  char error[kErrorSize] = {0};
  const int32_t code = md_engine_benchmark_main(static_cast<int32_t>(argv.size()), argv.data(),
                                                error, sizeof(error));
  if (code != 0 && error[0] != 0) Throw(env, error);
  return code;
}

}  // extern "C"
