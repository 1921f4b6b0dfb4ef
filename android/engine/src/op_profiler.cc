#include "op_profiler.h"

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <tuple>

#include <nlohmann/json.hpp>

namespace mobdistill {
namespace {

using Clock = std::chrono::steady_clock;

// Accumulates the telemetry callbacks; `data` of the C struct points here.
class Collector {
 public:
  Collector() {
    table_.data = this;
    table_.ReportTelemetryEvent = [](TfLiteTelemetryProfilerStruct*, const char*, uint64_t) {};
    table_.ReportTelemetryOpEvent = [](TfLiteTelemetryProfilerStruct*, const char*, int64_t,
                                       int64_t, uint64_t) {};
    table_.ReportSettings = [](TfLiteTelemetryProfilerStruct*, const char*,
                               const TfLiteTelemetrySettings*) {};
    table_.ReportBeginOpInvokeEvent = &Begin;
    table_.ReportEndOpInvokeEvent = &End;
    table_.ReportOpInvokeEvent = &Elapsed;
  }
  TfLiteTelemetryProfilerStruct* table() { return &table_; }
  void set_recording(bool on) { recording_ = on; }
  void StartRun() {
    partition_ = -1;
    after_outer_ = true;
  }
  std::vector<OpTiming> Timings() const {
    std::vector<OpTiming> out;
    for (const auto& kv : ops_) out.push_back(kv.second);
    return out;
  }

 private:
  // (subgraph, partition, node, delegate_inner, name); partition is -1 for interpreter nodes.
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, std::string>;
  struct Open {
    Key key;
    Clock::time_point start;
  };

  static Collector* Self(TfLiteTelemetryProfilerStruct* t) {
    return static_cast<Collector*>(t->data);
  }
  static uint32_t Begin(TfLiteTelemetryProfilerStruct* t, const char* name, int64_t node,
                        int64_t subgraph) {
    Collector* self = Self(t);
    self->open_.push_back({Key(subgraph, -1, node, false, name ? name : "?"), Clock::now()});
    return static_cast<uint32_t>(self->open_.size() - 1);
  }
  static void End(TfLiteTelemetryProfilerStruct* t, uint32_t handle) {
    Collector* self = Self(t);
    if (handle >= self->open_.size()) return;
    const Open& open = self->open_[handle];
    const double us =
        std::chrono::duration<double, std::micro>(Clock::now() - open.start).count();
    self->Add(open.key, us);
    self->after_outer_ = true;
    if (handle + 1 == self->open_.size()) self->open_.pop_back();  // events nest: LIFO
  }
  // A delegate reports its operators after each of its partitions ran, numbered from 0 within
  // the partition: a number that does not grow, or an interpreter node in between, starts the
  // next partition.
  static void Elapsed(TfLiteTelemetryProfilerStruct* t, const char* name, uint64_t us,
                      int64_t node, int64_t subgraph) {
    Collector* self = Self(t);
    if (self->after_outer_ || node <= self->last_inner_node_) self->partition_ += 1;
    self->after_outer_ = false;
    self->last_inner_node_ = node;
    self->Add(Key(subgraph, self->partition_, node, true, name ? name : "?"),
              static_cast<double>(us));
  }
  void Add(const Key& key, double us) {
    if (!recording_) return;
    OpTiming& op = ops_[key];
    if (op.count == 0) {
      std::tie(op.subgraph, op.partition, op.node, op.delegate_inner, op.name) = key;
    }
    op.count += 1;
    op.total_us += us;
  }

  TfLiteTelemetryProfilerStruct table_{};
  std::vector<Open> open_;
  std::map<Key, OpTiming> ops_;
  bool recording_ = false;
  int64_t partition_ = -1;
  int64_t last_inner_node_ = 0;
  bool after_outer_ = true;
};

// Everything one profiled interpreter needs, freed in reverse order of creation.
struct Interpreter {
  const TfLiteApi& api;
  TfLiteModel* model = nullptr;
  TfLiteInterpreterOptions* options = nullptr;
  TfLiteDelegate* delegate = nullptr;
  TfLiteInterpreter* interpreter = nullptr;
  explicit Interpreter(const TfLiteApi& a) : api(a) {}
  ~Interpreter() {
    if (interpreter) api.InterpreterDelete(interpreter);
    if (delegate) api.XNNPackDelete(delegate);
    if (options) api.OptionsDelete(options);
    if (model) api.ModelDelete(model);
  }
};

}  // namespace

Status ProfileOps(const TfLiteApi& api, const std::vector<uint8_t>& model_bytes,
                  const std::string& signature, const std::vector<OpProfileInput>& inputs,
                  int32_t num_threads, bool use_xnnpack, int runs, OpProfilePass* pass) {
  if (api.OptionsSetTelemetryProfiler == nullptr) {
    return Status::Error("--enable_op_profiling: runtime library " + api.runtime_path +
                         " does not export TfLiteInterpreterOptionsSetTelemetryProfiler");
  }
  Collector collector;
  Interpreter it(api);
  it.model = api.ModelCreate(model_bytes.data(), model_bytes.size());
  if (it.model == nullptr) return Status::Error("op profile: TfLiteModelCreate failed");
  it.options = api.OptionsCreate();
  api.OptionsSetNumThreads(it.options, num_threads);
  api.OptionsSetTelemetryProfiler(it.options, collector.table());
  pass->delegate = "cpu";
  if (use_xnnpack && api.XNNPackCreate && api.XNNPackOptionsDefault &&
      api.XNNPackOptionsLayoutSafe()) {
    TfLiteXNNPackDelegateOptions xnn = api.XNNPackOptionsDefault();
    xnn.num_threads = num_threads;
    it.delegate = api.XNNPackCreate(&xnn);
    if (it.delegate != nullptr) {
      api.OptionsAddDelegate(it.options, it.delegate);
      pass->delegate = "xnnpack";
    }
  }
  it.interpreter = api.InterpreterCreate(it.model, it.options);
  if (it.interpreter == nullptr) return Status::Error("op profile: TfLiteInterpreterCreate failed");
  TfLiteSignatureRunner* runner = api.InterpreterGetSignatureRunner(it.interpreter,
                                                                    signature.c_str());
  if (runner == nullptr) return Status::Error("op profile: no signature " + signature);
  std::unique_ptr<TfLiteSignatureRunner, void (*)(TfLiteSignatureRunner*)> owned(
      runner, api.RunnerDelete);
  if (api.RunnerAllocateTensors(runner) != kTfLiteOk) {
    return Status::Error("op profile (" + pass->delegate + "): AllocateTensors failed");
  }
  for (const OpProfileInput& input : inputs) {
    TfLiteTensor* tensor = api.RunnerGetInputTensor(runner, input.name.c_str());
    if (tensor == nullptr ||
        api.TensorCopyFromBuffer(tensor, input.bytes.data(), input.bytes.size()) != kTfLiteOk) {
      return Status::Error("op profile: cannot set input " + input.name);
    }
  }
  collector.StartRun();
  if (api.RunnerInvoke(runner) != kTfLiteOk) return Status::Error("op profile: Invoke failed");
  collector.set_recording(true);  // the warm-up above (weight packing) is not profiled
  const auto start = Clock::now();
  for (int i = 0; i < runs; ++i) {
    collector.StartRun();
    if (api.RunnerInvoke(runner) != kTfLiteOk) return Status::Error("op profile: Invoke failed");
  }
  pass->runs = runs;
  pass->invoke_avg_us =
      std::chrono::duration<double, std::micro>(Clock::now() - start).count() / runs;
  pass->ops = collector.Timings();
  return Status::Ok();
}

Status WriteOpProfile(const std::string& path, const std::vector<OpProfilePass>& passes) {
  nlohmann::json doc = {{"passes", nlohmann::json::array()}};
  for (const OpProfilePass& pass : passes) {
    nlohmann::json ops = nlohmann::json::array();
    for (const OpTiming& op : pass.ops) {
      ops.push_back({{"name", op.name}, {"subgraph", op.subgraph},
                     {"partition", op.partition}, {"node", op.node},
                     {"delegate_inner", op.delegate_inner}, {"count", op.count},
                     {"total_us", op.total_us}});
    }
    doc["passes"].push_back({{"label", pass.label}, {"delegate", pass.delegate},
                             {"runs", pass.runs}, {"invoke_avg_us", pass.invoke_avg_us},
                             {"ops", ops}});
    if (!pass.error.empty()) doc["passes"].back()["error"] = pass.error;
  }
  const std::string out = doc.dump() + "\n";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Status::Error("cannot write --op_profile " + path);
  const bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  return (std::fclose(f) == 0 && ok) ? Status::Ok()
                                     : Status::Error("cannot write --op_profile " + path);
}

}  // namespace mobdistill
