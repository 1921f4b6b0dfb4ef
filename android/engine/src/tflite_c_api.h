// The few TensorFlow Lite C API entry points the engine uses, bound at run time.
//
// Why dlopen: no TFLite C headers ship in any registry we can use, and the runtime library
// lives in different places on the host (liblitert-lm.so from the litert-lm-api wheel) and
// on a phone (the same wheel's android build, or the app's jniLibs). The GPU delegate
// (TfLiteGpuDelegateV2Create) is in a separate, optional library on Android. So the engine
// declares opaque handle types and a table of function pointers, and fills the table with
// dlsym from whatever library --runtime_lib names.
//
// Declarations here are written from the public documentation of the stable TFLite C API
// (tensorflow/lite/core/c/c_api.h, c_api_types.h, delegates/xnnpack/xnnpack_delegate.h,
// delegates/gpu/delegate.h); only the types and values the engine needs are declared.
//
// Struct layout we depend on: exactly one. TfLiteXNNPackDelegateOptions starts with
// `int32_t num_threads` (first field in every released version). Newer versions append more
// fields (flags, weights cache, file paths...) and grow the struct beyond 16 bytes, so
// TfLiteXNNPackDelegateOptionsDefault() returns it through a caller-provided buffer (sret on
// x86_64 SysV and AArch64). We declare a struct with generous reserved padding so that buffer
// is always big enough, and only ever touch `num_threads`. The loader refuses the explicit
// XNNPACK path for runtimes older than 2.13 (where the struct could be small enough to come
// back in registers) and falls back to the runtime's default delegate instead.
// The GPU delegate is created with nullptr options (= the delegate's documented defaults), so
// no GPU options struct layout is assumed.
#ifndef MOBDISTILL_ENGINE_TFLITE_C_API_H_
#define MOBDISTILL_ENGINE_TFLITE_C_API_H_

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <string>

#include "status.h"

extern "C" {
// Opaque handles (never dereferenced by the engine).
typedef struct TfLiteModel TfLiteModel;
typedef struct TfLiteInterpreterOptions TfLiteInterpreterOptions;
typedef struct TfLiteInterpreter TfLiteInterpreter;
typedef struct TfLiteSignatureRunner TfLiteSignatureRunner;
typedef struct TfLiteTensor TfLiteTensor;
typedef struct TfLiteDelegate TfLiteDelegate;  // == TfLiteOpaqueDelegate in the C API

// TfLiteStatus: kTfLiteOk is 0; every other value is a kind of failure.
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

// TfLiteType values the engine checks (c_api_types.h numbering).
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1 } TfLiteType;

// See the header comment: only num_threads is read or written; the rest is reserved space.
typedef struct {
  int32_t num_threads;
  uint32_t reserved_flags;
  alignas(8) unsigned char reserved[496];
} TfLiteXNNPackDelegateOptions;

typedef void (*TfLiteErrorReporterFn)(void* user_data, const char* format, va_list args);

// The telemetry profiler's callback table (tensorflow/lite/profiling/telemetry/c/profiler.h,
// TFLite >= 2.13; op_profiler.h says how the engine uses it). Settings are never read.
typedef struct TfLiteTelemetrySettings TfLiteTelemetrySettings;
typedef struct TfLiteTelemetryProfilerStruct {
  void* data;
  void (*ReportTelemetryEvent)(struct TfLiteTelemetryProfilerStruct*, const char* event_name,
                               uint64_t status);
  void (*ReportTelemetryOpEvent)(struct TfLiteTelemetryProfilerStruct*, const char* event_name,
                                 int64_t op_idx, int64_t subgraph_idx, uint64_t status);
  void (*ReportSettings)(struct TfLiteTelemetryProfilerStruct*, const char* setting_name,
                         const TfLiteTelemetrySettings* settings);
  uint32_t (*ReportBeginOpInvokeEvent)(struct TfLiteTelemetryProfilerStruct*, const char* op_name,
                                       int64_t op_idx, int64_t subgraph_idx);
  void (*ReportEndOpInvokeEvent)(struct TfLiteTelemetryProfilerStruct*, uint32_t event_handle);
  void (*ReportOpInvokeEvent)(struct TfLiteTelemetryProfilerStruct*, const char* op_name,
                              uint64_t elapsed_us, int64_t op_idx, int64_t subgraph_idx);
} TfLiteTelemetryProfilerStruct;
}

namespace mobdistill {

// Function-pointer table over the runtime library. Load() fills every required entry or fails
// naming the missing symbol; optional entries may stay null.
struct TfLiteApi {
  // library
  const char* (*Version)(void) = nullptr;
  // model
  TfLiteModel* (*ModelCreate)(const void* data, size_t size) = nullptr;
  void (*ModelDelete)(TfLiteModel*) = nullptr;
  // options
  TfLiteInterpreterOptions* (*OptionsCreate)(void) = nullptr;
  void (*OptionsDelete)(TfLiteInterpreterOptions*) = nullptr;
  void (*OptionsSetNumThreads)(TfLiteInterpreterOptions*, int32_t) = nullptr;
  void (*OptionsAddDelegate)(TfLiteInterpreterOptions*, TfLiteDelegate*) = nullptr;
  void (*OptionsSetErrorReporter)(TfLiteInterpreterOptions*, TfLiteErrorReporterFn,
                                  void*) = nullptr;
  void (*OptionsSetUseNNAPI)(TfLiteInterpreterOptions*, bool) = nullptr;  // optional
  void (*OptionsSetTelemetryProfiler)(TfLiteInterpreterOptions*,
                                      TfLiteTelemetryProfilerStruct*) = nullptr;  // optional
  // interpreter
  TfLiteInterpreter* (*InterpreterCreate)(const TfLiteModel*,
                                          const TfLiteInterpreterOptions*) = nullptr;
  void (*InterpreterDelete)(TfLiteInterpreter*) = nullptr;
  TfLiteStatus (*InterpreterModifyGraphWithDelegate)(const TfLiteInterpreter*,
                                                     TfLiteDelegate*) = nullptr;  // optional
  int32_t (*InterpreterGetSignatureCount)(const TfLiteInterpreter*) = nullptr;
  const char* (*InterpreterGetSignatureKey)(const TfLiteInterpreter*, int32_t) = nullptr;
  TfLiteSignatureRunner* (*InterpreterGetSignatureRunner)(const TfLiteInterpreter*,
                                                          const char*) = nullptr;
  // signature runner
  TfLiteStatus (*RunnerAllocateTensors)(TfLiteSignatureRunner*) = nullptr;
  TfLiteTensor* (*RunnerGetInputTensor)(TfLiteSignatureRunner*, const char*) = nullptr;
  const TfLiteTensor* (*RunnerGetOutputTensor)(const TfLiteSignatureRunner*,
                                               const char*) = nullptr;
  TfLiteStatus (*RunnerInvoke)(TfLiteSignatureRunner*) = nullptr;
  void (*RunnerDelete)(TfLiteSignatureRunner*) = nullptr;
  // tensor
  TfLiteType (*TensorType)(const TfLiteTensor*) = nullptr;
  int32_t (*TensorNumDims)(const TfLiteTensor*) = nullptr;
  int32_t (*TensorDim)(const TfLiteTensor*, int32_t) = nullptr;
  size_t (*TensorByteSize)(const TfLiteTensor*) = nullptr;
  void* (*TensorData)(const TfLiteTensor*) = nullptr;
  TfLiteStatus (*TensorCopyFromBuffer)(TfLiteTensor*, const void*, size_t) = nullptr;
  TfLiteStatus (*TensorCopyToBuffer)(const TfLiteTensor*, void*, size_t) = nullptr;
  // XNNPACK delegate (optional: absent → "cpu")
  TfLiteXNNPackDelegateOptions (*XNNPackOptionsDefault)(void) = nullptr;
  TfLiteDelegate* (*XNNPackCreate)(const TfLiteXNNPackDelegateOptions*) = nullptr;
  void (*XNNPackDelete)(TfLiteDelegate*) = nullptr;
  // GPU delegate (optional, from --delegate_lib or the runtime library)
  TfLiteDelegate* (*GpuCreate)(const void* options_or_null) = nullptr;
  void (*GpuDelete)(TfLiteDelegate*) = nullptr;

  void* runtime_handle = nullptr;
  void* delegate_handle = nullptr;
  std::string runtime_path;

  // Opens `runtime_lib` (and `delegate_lib` if non-empty) and binds the table.
  static Status Load(const std::string& runtime_lib, const std::string& delegate_lib,
                     TfLiteApi* api);
  // "2.23.0" → true if major.minor >= (2, 13): the explicit-XNNPACK-options path is safe.
  bool XNNPackOptionsLayoutSafe() const;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_TFLITE_C_API_H_
