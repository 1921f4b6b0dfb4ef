#include "params.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace mobdistill {
namespace {

enum class Kind { kString, kInt, kBool, kDouble };

struct Flag {
  const char* name;
  Kind kind;
  void* field;
  const char* help;
};

std::vector<Flag> Flags(Params* p) {
  return {
      {"manifest", Kind::kString, &p->manifest, "manifest.json of the exported model (required)"},
      {"graph", Kind::kString, &p->graph, "tflite file to use instead of the manifest's artifact"},
      {"runtime_lib", Kind::kString, &p->runtime_lib,
       "shared library exporting the TFLite C API (required)"},
      {"delegate_lib", Kind::kString, &p->delegate_lib,
       "optional library exporting TfLiteGpuDelegateV2Create"},
      {"num_threads", Kind::kInt, &p->num_threads, "CPU threads (-1: runtime decides)"},
      {"warmup_runs", Kind::kInt, &p->warmup_runs, "untimed-for-stats runs before measuring"},
      {"num_runs", Kind::kInt, &p->num_runs, "measured runs"},
      {"run_delay", Kind::kDouble, &p->run_delay, "seconds to sleep between runs"},
      {"frames", Kind::kString, &p->frames, "raw uint8 RGB HxWx3 frames, cycled"},
      {"random_input", Kind::kBool, &p->random_input, "feed deterministic random frames"},
      {"init_mask", Kind::kString, &p->init_mask, "raw uint8 HxW label map for init"},
      {"keyframe_interval", Kind::kInt, &p->keyframe_interval,
       "delta-distilled models: keyframe every N-th frame, delta frames between (0: manifest's)"},
      {"use_xnnpack", Kind::kBool, &p->use_xnnpack, "apply the XNNPACK delegate"},
      {"use_gpu", Kind::kBool, &p->use_gpu, "apply the GPU delegate"},
      {"use_nnapi", Kind::kBool, &p->use_nnapi, "use NNAPI (Android)"},
      {"jsonl", Kind::kString, &p->jsonl, "per-frame JSON lines output (required)"},
      {"summary", Kind::kString, &p->summary, "summary JSON output (required)"},
      {"model_version", Kind::kInt, &p->model_version, "version number of the loaded model"},
      {"output_masks", Kind::kString, &p->output_masks, "write uint8 argmax masks here"},
      {"output_logits", Kind::kString, &p->output_logits, "write float32 logits here"},
      {"swap_graph", Kind::kString, &p->swap_graph, "tflite to hot-swap in while running"},
      {"swap_after_run", Kind::kInt, &p->swap_after_run, "start preparing the swap after run N"},
      {"update_dir", Kind::kString, &p->update_dir,
       "watched folder: complete *.mdup packets in name order, renamed .applied/.rejected"},
      {"update_schedule", Kind::kString, &p->update_schedule,
       "JSONL {\"frame\": K, \"packet\": PATH}: packet visible when run K starts"},
      {"update_port", Kind::kInt, &p->update_port,
       "TCP port on 127.0.0.1 for packets (4-byte big-endian length + packet); 0 any, -1 off"},
      {"update_key_file", Kind::kString, &p->update_key_file,
       "HMAC-SHA256 key (raw bytes) of this deployment"},
      {"update_blocking", Kind::kBool, &p->update_blocking,
       "run K waits until every packet received before it is applied or rejected"},
      {"update_state_file", Kind::kString, &p->update_state_file,
       "file keeping the last applied sequence across restarts (written atomically)"},
      {"update_device_id", Kind::kString, &p->update_device_id,
       "this device's 16-byte id as 32 hex digits; packets made for another id are refused"},
      {"insecure_updates", Kind::kBool, &p->insecure_updates,
       "accept packets without an HMAC (anyone reaching the port or folder can rewrite the "
       "model); without it --update_key_file is required"},
      {"update_build_priority", Kind::kString, &p->update_build_priority,
       "idle: updates are decoded, patched and built as SCHED_IDLE, between frames; normal: at "
       "frame priority"},
      {"record_sensors", Kind::kBool, &p->record_sensors,
       "add CPU frequencies and thermal-zone temperatures (sysfs) to every frame record"},
      {"sysfs_root", Kind::kString, &p->sysfs_root, "where --record_sensors looks for sysfs"},
      {"enable_op_profiling", Kind::kBool, &p->enable_op_profiling,
       "after the measured runs, time every operator (and delegated partition) into --op_profile"},
      {"op_profile", Kind::kString, &p->op_profile, "JSON file for --enable_op_profiling"},
      {"help", Kind::kBool, &p->help, "print this help"},
  };
}

Status SetFlag(const Flag& f, const std::string& value) {
  const std::string bad = "--" + std::string(f.name) + "=" + value;
  switch (f.kind) {
    case Kind::kString:
      *static_cast<std::string*>(f.field) = value;
      return Status::Ok();
    case Kind::kBool:
      if (value == "true" || value == "1") *static_cast<bool*>(f.field) = true;
      else if (value == "false" || value == "0") *static_cast<bool*>(f.field) = false;
      else return Status::Error(bad + ": expected true or false");
      return Status::Ok();
    case Kind::kInt: {
      char* end = nullptr;
      errno = 0;
      long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno != 0 || v < INT32_MIN || v > INT32_MAX) {
        return Status::Error(bad + ": expected an integer");
      }
      *static_cast<int32_t*>(f.field) = static_cast<int32_t>(v);
      return Status::Ok();
    }
    case Kind::kDouble: {
      char* end = nullptr;
      double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0') return Status::Error(bad + ": expected a number");
      *static_cast<double*>(f.field) = v;
      return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace

Status ParseFlags(int argc, const char* const* argv, Params* params) {
  std::vector<Flag> flags = Flags(params);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      return Status::Error("unexpected argument '" + arg + "'; flags look like --name=value");
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags) if (name == f.name) flag = &f;
    if (flag == nullptr) return Status::Error("unknown flag --" + name + " (see --help)");
    if (!has_value) {
      const bool next_is_value = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0;
      if (flag->kind == Kind::kBool && !next_is_value) {
        value = "true";
      } else if (!next_is_value) {
        return Status::Error("flag --" + name + " needs a value");
      } else {
        value = argv[++i];
      }
    }
    MD_RETURN_IF_ERROR(SetFlag(*flag, value));
  }
  return Status::Ok();
}

Status Params::Validate() const {
  if (manifest.empty()) return Status::Error("--manifest is required");
  if (runtime_lib.empty()) return Status::Error("--runtime_lib is required (liblitert-lm.so)");
  if (jsonl.empty()) return Status::Error("--jsonl is required");
  if (summary.empty()) return Status::Error("--summary is required");
  if (num_threads == 0 || num_threads < -1) {
    return Status::Error("--num_threads must be -1 (runtime decides) or >= 1");
  }
  if (warmup_runs < 0) return Status::Error("--warmup_runs must be >= 0");
  if (num_runs < 1) return Status::Error("--num_runs must be >= 1");
  if (run_delay < 0) return Status::Error("--run_delay must be >= 0 seconds");
  if (keyframe_interval < 0) {
    return Status::Error("--keyframe_interval must be >= 1 (0: the manifest's)");
  }
  if (!frames.empty() && random_input) {
    return Status::Error("--frames and --random_input exclude each other; pass one");
  }
  if (use_gpu && use_nnapi) return Status::Error("--use_gpu and --use_nnapi exclude each other");
  if (!swap_graph.empty() && swap_after_run < 0) {
    return Status::Error("--swap_graph needs --swap_after_run N (N >= 0)");
  }
  if (enable_op_profiling && op_profile.empty()) {
    return Status::Error("--enable_op_profiling needs --op_profile=FILE for its JSON");
  }
  if (record_sensors && sysfs_root.empty()) {
    return Status::Error("--sysfs_root must not be empty (default /sys)");
  }
  if (update_build_priority != "idle" && update_build_priority != "normal") {
    return Status::Error("--update_build_priority must be idle or normal, not '" +
                         update_build_priority + "'");
  }
  if (update_port < -1 || update_port > 65535) {
    return Status::Error("--update_port must be a TCP port (0: any free one) or -1 (off)");
  }
  if (updates_enabled() && !swap_graph.empty()) {
    return Status::Error("--swap_graph and the --update_* sources exclude each other");
  }
  if (!updates_enabled() &&
      (!update_key_file.empty() || update_blocking || !update_state_file.empty())) {
    return Status::Error("--update_key_file/--update_blocking/--update_state_file need an "
                         "update source "
                         "(--update_dir, --update_schedule or --update_port)");
  }
  if (updates_enabled() && update_key_file.empty() && !insecure_updates) {
    return Status::Error("updates need --update_key_file (the device's HMAC key) and "
                         "--update_device_id; pass --insecure_updates to accept unauthenticated "
                         "packets instead (not for deployments)");
  }
  if (!update_key_file.empty() && insecure_updates) {
    return Status::Error("--update_key_file and --insecure_updates exclude each other");
  }
  if (!update_key_file.empty() && update_device_id.empty()) {
    return Status::Error("--update_key_file needs --update_device_id (32 hex digits): packets "
                         "are bound to one device");
  }
  if (!update_device_id.empty() &&
      (update_device_id.size() != 32 ||
       update_device_id.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)) {
    return Status::Error("--update_device_id must be 32 hex digits (16 bytes), not '" +
                         update_device_id + "'");
  }
  if (!updates_enabled() && (!update_device_id.empty() || insecure_updates)) {
    return Status::Error("--update_device_id/--insecure_updates need an update source "
                         "(--update_dir, --update_schedule or --update_port)");
  }
  return Status::Ok();
}

std::string Usage() {
  Params defaults;
  std::ostringstream out;
  out << "usage: mobdistill-engine --manifest=PATH --runtime_lib=PATH --jsonl=PATH "
         "--summary=PATH [flags]\n";
  for (const Flag& f : Flags(&defaults)) {
    out << "  --" << f.name << " (" << f.help << ") default: ";
    switch (f.kind) {
      case Kind::kString: out << "\"" << *static_cast<std::string*>(f.field) << "\""; break;
      case Kind::kBool: out << (*static_cast<bool*>(f.field) ? "true" : "false"); break;
      case Kind::kInt: out << *static_cast<int32_t*>(f.field); break;
      case Kind::kDouble: out << *static_cast<double*>(f.field); break;
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace mobdistill
