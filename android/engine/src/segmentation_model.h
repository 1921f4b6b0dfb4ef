// SegmentationModel: a segmentation student from a mobdistill manifest, loaded and checked
// (runtime library, manifest, sha256 of the model file, tensor sizes against the manifest) into
// the engine's double-buffered model slots. Shared by the benchmark and the app facade.
#ifndef MOBDISTILL_ENGINE_SEGMENTATION_MODEL_H_
#define MOBDISTILL_ENGINE_SEGMENTATION_MODEL_H_

#include <memory>
#include <string>

#include "manifest.h"
#include "model_slot.h"
#include "params.h"
#include "runner.h"
#include "status.h"
#include "tflite_c_api.h"

namespace mobdistill {

class SegmentationModel {
 public:
  SegmentationModel() = default;
  SegmentationModel(const SegmentationModel&) = delete;
  SegmentationModel& operator=(const SegmentationModel&) = delete;
  ~SegmentationModel();

  // Loads --runtime_lib/--delegate_lib, --manifest and its model (or --graph) as version
  // --model_version, and fills the load facts of `*info` (names, delegate, load times, warnings).
  Status Load(const Params& params, RunInfo* info);

  const Manifest& manifest() const { return manifest_; }
  const TfLiteApi& api() const { return api_; }
  Engine& engine() { return *engine_; }
  // The signature run on every frame: serving_default, or `step` for a stateful model.
  const std::string& frame_signature() const { return frame_signature_; }
  // Delta-distilled models: T, the manifest's or --keyframe_interval's; 0 for other models.
  int keyframe_interval() const { return keyframe_interval_; }

 private:
  Status CheckTensorSizes(const SlotConfig& config);
  Status ChooseKeyframeInterval(const Params& params, RunInfo* info);

  TfLiteApi api_;
  Manifest manifest_;
  std::unique_ptr<Engine> engine_;
  std::string frame_signature_;
  int keyframe_interval_ = 0;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_SEGMENTATION_MODEL_H_
