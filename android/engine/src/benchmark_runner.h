// BenchmarkRunner: the CLI's Runner (benchmark_model's loop) over a segmentation student. It
// loads the model, feeds frames from --frames (or random ones), runs each through the shared
// FrameProcessor, dumps masks/logits, triggers --swap_graph, and takes streamed updates between
// frames through an UpdateSession. Runner::Run owns warmup, measured runs and the listeners.
#ifndef MOBDISTILL_ENGINE_BENCHMARK_RUNNER_H_
#define MOBDISTILL_ENGINE_BENCHMARK_RUNNER_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "frame_processor.h"
#include "frame_source.h"
#include "params.h"
#include "runner.h"
#include "segmentation_model.h"
#include "update_session.h"

namespace mobdistill {

class BenchmarkRunner : public Runner {
 public:
  explicit BenchmarkRunner(Params params);
  ~BenchmarkRunner() override;

 protected:
  Status Init() override;
  Status PrepareInputs() override;
  Status BeforeRun(int64_t run, FrameRecord* record) override;
  Status Preprocess() override { return processor_->Preprocess(); }
  Status RunImpl() override { return processor_->RunImpl(); }
  Status Postprocess() override { return processor_->Postprocess(); }
  Status AfterRun(int64_t run) override;
  RunInfo Info() const override { return info_; }
  std::vector<SwapRecord> Swaps() const override { return swaps_; }
  UpdateLog Updates() const override { return updates_ ? updates_->log() : UpdateLog(); }
  Status Finish(int64_t runs) override;

 private:
  Status OpenOutputs();
  Status StartUpdates();
  void ApplySwapIfReady(int64_t run);
  Status ProfileOperators();

  Params params_;
  // Declared in teardown order, last first: updates stop before the model's slots go away.
  SegmentationModel model_;
  std::unique_ptr<FrameProcessor> processor_;
  std::unique_ptr<UpdateSession> updates_;  // --update_dir/--update_port/--update_schedule
  FrameSource frames_;
  RunInfo info_;
  std::vector<SwapRecord> swaps_;  // --swap_graph, when no update session owns the swaps
  int64_t frame_offset_ = 0;       // stateful: frame 0 feeds init
  std::FILE* masks_out_ = nullptr;
  std::FILE* logits_out_ = nullptr;
};

}  // namespace mobdistill

#endif  // MOBDISTILL_ENGINE_BENCHMARK_RUNNER_H_
