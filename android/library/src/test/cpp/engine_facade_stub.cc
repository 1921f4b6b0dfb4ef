// Host-only stand-in for the engine behind engine_facade.h: lets android/verify_host.sh build
// the real JNI bridge and call it from a desktop JVM. Not shipped, not the engine.
#include <cstdio>
#include <cstring>
#include <string>

#include "engine_facade.h"

struct MdEngine {
  MdModelInfo info{4, 6, 2, 0};
  std::string delegate;
  int frames = 0;
};

static void SetError(char* error, size_t size, const std::string& text) {
  if (error != nullptr && size > 0) std::snprintf(error, size, "%s", text.c_str());
}

extern "C" {

int32_t md_engine_create(const MdEngineOptions* options, MdEngine** out, char* error,
                         size_t error_size) {
  std::FILE* file = options->manifest ? std::fopen(options->manifest, "rb") : nullptr;
  if (file == nullptr) {
    SetError(error, error_size, std::string("cannot read manifest ") +
                                    (options->manifest ? options->manifest : "(null)") +
                                    ": pass the path written by `mobdistill export`");
    return 1;
  }
  std::fclose(file);
  auto* engine = new MdEngine();
  engine->delegate = options->delegate ? options->delegate : "xnnpack";
  *out = engine;
  return 0;
}

void md_engine_destroy(MdEngine* engine) { delete engine; }

int32_t md_engine_info(const MdEngine* engine, MdModelInfo* info) {
  *info = engine->info;
  return 0;
}

const char* md_engine_delegate_used(const MdEngine* engine) { return engine->delegate.c_str(); }

void md_engine_reset(MdEngine* engine) { engine->frames = 0; }

int32_t md_engine_segment(MdEngine* engine, const uint8_t* rgb, int32_t row_stride,
                          uint8_t* mask, int64_t* invoke_us, char*, size_t) {
  for (int y = 0; y < engine->info.height; ++y) {
    for (int x = 0; x < engine->info.width; ++x) {
      mask[y * engine->info.width + x] = rgb[y * row_stride + 3 * x] > 127 ? 1 : 0;
    }
  }
  *invoke_us = ++engine->frames;
  return 0;
}

int32_t md_engine_benchmark_main(int32_t argc, const char* const* argv, char* error,
                                 size_t error_size) {
  if (argc < 2 || std::strncmp(argv[1], "--", 2) != 0) {
    SetError(error, error_size, "usage: mobdistill-engine --manifest=PATH ...");
    return 2;
  }
  return 0;
}

}  // extern "C"
