#include "tflite_c_api.h"

#include <dlfcn.h>

#include <cstdio>

namespace mobdistill {
namespace {

template <typename Fn>
Status Bind(void* handle, const char* symbol, const std::string& lib, bool required, Fn* out) {
  void* sym = handle ? dlsym(handle, symbol) : nullptr;
  if (sym == nullptr && required) {
    return Status::Error("runtime library " + lib + " does not export " + symbol +
                         "; pass a TFLite C API build with --runtime_lib");
  }
  *out = reinterpret_cast<Fn>(sym);
  return Status::Ok();
}

}  // namespace

Status TfLiteApi::Load(const std::string& runtime_lib, const std::string& delegate_lib,
                       TfLiteApi* api) {
  api->runtime_handle = dlopen(runtime_lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->runtime_handle == nullptr) {
    const char* why = dlerror();
    return Status::Error("cannot load --runtime_lib " + runtime_lib + ": " +
                         (why ? why : "unknown dlopen error"));
  }
  api->runtime_path = runtime_lib;
  void* h = api->runtime_handle;
  const std::string& l = runtime_lib;
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteVersion", l, true, &api->Version));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteModelCreate", l, true, &api->ModelCreate));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteModelDelete", l, true, &api->ModelDelete));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterOptionsCreate", l, true, &api->OptionsCreate));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterOptionsDelete", l, true, &api->OptionsDelete));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterOptionsSetNumThreads", l, true,
                          &api->OptionsSetNumThreads));
  MD_RETURN_IF_ERROR(
      Bind(h, "TfLiteInterpreterOptionsAddDelegate", l, true, &api->OptionsAddDelegate));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterOptionsSetErrorReporter", l, true,
                          &api->OptionsSetErrorReporter));
  MD_RETURN_IF_ERROR(
      Bind(h, "TfLiteInterpreterOptionsSetUseNNAPI", l, false, &api->OptionsSetUseNNAPI));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterOptionsSetTelemetryProfiler", l, false,
                          &api->OptionsSetTelemetryProfiler));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterCreate", l, true, &api->InterpreterCreate));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterDelete", l, true, &api->InterpreterDelete));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterModifyGraphWithDelegate", l, false,
                          &api->InterpreterModifyGraphWithDelegate));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterGetSignatureCount", l, true,
                          &api->InterpreterGetSignatureCount));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterGetSignatureKey", l, true,
                          &api->InterpreterGetSignatureKey));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteInterpreterGetSignatureRunner", l, true,
                          &api->InterpreterGetSignatureRunner));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteSignatureRunnerAllocateTensors", l, true,
                          &api->RunnerAllocateTensors));
  MD_RETURN_IF_ERROR(
      Bind(h, "TfLiteSignatureRunnerGetInputTensor", l, true, &api->RunnerGetInputTensor));
  MD_RETURN_IF_ERROR(
      Bind(h, "TfLiteSignatureRunnerGetOutputTensor", l, true, &api->RunnerGetOutputTensor));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteSignatureRunnerInvoke", l, true, &api->RunnerInvoke));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteSignatureRunnerDelete", l, true, &api->RunnerDelete));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteTensorType", l, true, &api->TensorType));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteTensorNumDims", l, true, &api->TensorNumDims));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteTensorDim", l, true, &api->TensorDim));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteTensorByteSize", l, true, &api->TensorByteSize));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteTensorData", l, true, &api->TensorData));
  MD_RETURN_IF_ERROR(
      Bind(h, "TfLiteTensorCopyFromBuffer", l, true, &api->TensorCopyFromBuffer));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteTensorCopyToBuffer", l, true, &api->TensorCopyToBuffer));
  MD_RETURN_IF_ERROR(
      Bind(h, "TfLiteXNNPackDelegateOptionsDefault", l, false, &api->XNNPackOptionsDefault));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteXNNPackDelegateCreate", l, false, &api->XNNPackCreate));
  MD_RETURN_IF_ERROR(Bind(h, "TfLiteXNNPackDelegateDelete", l, false, &api->XNNPackDelete));

  void* g = h;
  std::string gl = runtime_lib;
  if (!delegate_lib.empty()) {
    api->delegate_handle = dlopen(delegate_lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (api->delegate_handle == nullptr) {
      const char* why = dlerror();
      return Status::Error("cannot load --delegate_lib " + delegate_lib + ": " +
                           (why ? why : "unknown dlopen error"));
    }
    g = api->delegate_handle;
    gl = delegate_lib;
  }
  MD_RETURN_IF_ERROR(Bind(g, "TfLiteGpuDelegateV2Create", gl, false, &api->GpuCreate));
  MD_RETURN_IF_ERROR(Bind(g, "TfLiteGpuDelegateV2Delete", gl, false, &api->GpuDelete));
  return Status::Ok();
}

bool TfLiteApi::XNNPackOptionsLayoutSafe() const {
  if (Version == nullptr) return false;
  int major = 0, minor = 0;
  if (std::sscanf(Version(), "%d.%d", &major, &minor) != 2) return false;
  return major > 2 || (major == 2 && minor >= 13);
}

}  // namespace mobdistill
