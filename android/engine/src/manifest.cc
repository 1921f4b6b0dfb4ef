#include "manifest.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace mobdistill {
namespace {

using nlohmann::json;

// Typed field access that never throws: a missing or mistyped field becomes a Status naming it.
template <typename T>
Status Get(const json& obj, const char* key, const std::string& where, T* out) {
  if (!obj.is_object() || !obj.contains(key)) {
    return Status::Error("manifest: " + where + " has no field '" + key + "'");
  }
  const json& v = obj.at(key);
  try {
    *out = v.get<T>();
  } catch (const std::exception&) {
    return Status::Error("manifest: " + where + "." + key + " has the wrong type (" +
                         v.type_name() + ")");
  }
  return Status::Ok();
}

Status ParseTensor(const json& j, const std::string& where, TensorSpec* t) {
  MD_RETURN_IF_ERROR(Get(j, "name", where, &t->name));
  MD_RETURN_IF_ERROR(Get(j, "shape", where + "." + t->name, &t->shape));
  MD_RETURN_IF_ERROR(Get(j, "dtype", where + "." + t->name, &t->dtype));
  if (j.contains("layout")) MD_RETURN_IF_ERROR(Get(j, "layout", where, &t->layout));
  if (j.contains("role")) MD_RETURN_IF_ERROR(Get(j, "role", where, &t->role));
  if (t->dtype != "float32") {
    return Status::Error("manifest: tensor " + where + "." + t->name + " has dtype " + t->dtype +
                         "; the engine supports float32 I/O only");
  }
  return Status::Ok();
}

Status ParseSignature(const json& j, SignatureSpec* s) {
  MD_RETURN_IF_ERROR(Get(j, "name", "signatures[]", &s->name));
  for (const char* side : {"inputs", "outputs"}) {
    json arr;
    MD_RETURN_IF_ERROR(Get(j, side, "signatures." + s->name, &arr));
    if (!arr.is_array()) return Status::Error("manifest: signatures." + s->name + "." + side +
                                              " is not a list");
    for (const json& t : arr) {
      TensorSpec spec;
      MD_RETURN_IF_ERROR(ParseTensor(t, s->name + "." + side, &spec));
      (std::string(side) == "inputs" ? s->inputs : s->outputs).push_back(spec);
    }
  }
  return Status::Ok();
}

Status ParseMemory(const json& j, MemorySpec* m) {
  MD_RETURN_IF_ERROR(Get(j, "queue_length", "memory", &m->queue_length));
  MD_RETURN_IF_ERROR(Get(j, "init_signature", "memory", &m->init_signature));
  MD_RETURN_IF_ERROR(Get(j, "step_signature", "memory", &m->step_signature));
  std::string policy = "first_frame_plus_fifo", pad = "repeat_oldest";
  if (j.contains("policy")) MD_RETURN_IF_ERROR(Get(j, "policy", "memory", &policy));
  if (j.contains("pad")) MD_RETURN_IF_ERROR(Get(j, "pad", "memory", &pad));
  if (policy != "first_frame_plus_fifo" || pad != "repeat_oldest") {
    return Status::Error("manifest: memory policy '" + policy + "' / pad '" + pad +
                         "' is not supported (first_frame_plus_fifo / repeat_oldest)");
  }
  if (m->queue_length < 1) return Status::Error("manifest: memory.queue_length must be >= 1");
  json carry;
  MD_RETURN_IF_ERROR(Get(j, "carry", "memory", &carry));
  for (const json& c : carry) {
    std::string o, i;
    MD_RETURN_IF_ERROR(Get(c, "output", "memory.carry[]", &o));
    MD_RETURN_IF_ERROR(Get(c, "input", "memory.carry[]", &i));
    m->carry.emplace_back(o, i);
  }
  if (m->carry.empty()) return Status::Error("manifest: memory.carry is empty");
  return Status::Ok();
}

Status ParseSchedule(const json& j, ScheduleSpec* s) {
  std::string kind;
  int version = 0;
  MD_RETURN_IF_ERROR(Get(j, "kind", "schedule", &kind));
  MD_RETURN_IF_ERROR(Get(j, "version", "schedule", &version));
  if (kind != "keyframe_delta" || version != 1) {
    return Status::Error("manifest: schedule kind '" + kind + "' version " +
                         std::to_string(version) + " is not supported by this engine "
                         "(keyframe_delta version 1)");
  }
  MD_RETURN_IF_ERROR(Get(j, "period", "schedule", &s->period));
  MD_RETURN_IF_ERROR(Get(j, "keyframe_signature", "schedule", &s->keyframe_signature));
  MD_RETURN_IF_ERROR(Get(j, "delta_signature", "schedule", &s->delta_signature));
  if (s->period < 1) return Status::Error("manifest: schedule.period must be >= 1");
  json carry;
  MD_RETURN_IF_ERROR(Get(j, "carry", "schedule", &carry));
  if (!carry.is_array()) return Status::Error("manifest: schedule.carry is not a list");
  for (const json& c : carry) {
    std::string o, i;
    MD_RETURN_IF_ERROR(Get(c, "output", "schedule.carry[]", &o));
    MD_RETURN_IF_ERROR(Get(c, "input", "schedule.carry[]", &i));
    s->carry.emplace_back(o, i);
  }
  if (s->carry.empty()) return Status::Error("manifest: schedule.carry is empty");
  return Status::Ok();
}

// Both signatures make the logits and every carried output; the delta signature reads the frame
// and the carried inputs only, each exactly one carried output's size.
Status ValidateSchedule(const Manifest& m) {
  const ScheduleSpec& s = m.schedule;
  const SignatureSpec* key = m.Signature(s.keyframe_signature);
  const SignatureSpec* delta = m.Signature(s.delta_signature);
  if (!key || !delta) {
    return Status::Error("manifest: schedule names signatures '" + s.keyframe_signature +
                         "' and '" + s.delta_signature + "' but they are not listed");
  }
  for (const SignatureSpec* sig : {key, delta}) {
    if (!sig->InputWithRole("frame") || !sig->Output(m.output_name)) {
      return Status::Error("manifest: schedule signature " + sig->name +
                           " needs an input with role frame and the output '" + m.output_name +
                           "'");
    }
  }
  for (const auto& c : s.carry) {
    const TensorSpec* key_out = key->Output(c.first);
    const TensorSpec* delta_out = delta->Output(c.first);
    const TensorSpec* in = delta->Input(c.second);
    if (!key_out || !delta_out || !in) {
      return Status::Error("manifest: schedule.carry " + c.first + "->" + c.second +
                           " does not name outputs of " + key->name + "/" + delta->name +
                           " and an input of " + delta->name);
    }
    if (key_out->NumElements() != in->NumElements() ||
        delta_out->NumElements() != in->NumElements()) {
      return Status::Error("manifest: schedule.carry " + c.first + "->" + c.second +
                           ": output and input differ in size");
    }
  }
  const std::string& frame = delta->InputWithRole("frame")->name;
  for (const TensorSpec& in : delta->inputs) {
    bool fed = in.name == frame;
    for (const auto& c : s.carry) fed = fed || in.name == c.second;
    if (!fed) {
      return Status::Error("manifest: " + delta->name + " input " + in.name +
                           " is neither the frame nor carried (schedule.carry)");
    }
  }
  return Status::Ok();
}

std::string JoinPath(const std::string& dir, const std::string& file) {
  if (file.empty() || file[0] == '/' || dir.empty()) return file;
  return dir + "/" + file;
}

Status Validate(const Manifest& m) {
  if (m.height <= 0 || m.width <= 0) return Status::Error("manifest: model.resolution invalid");
  if (m.has_memory && m.has_schedule) {
    return Status::Error("manifest: a model has a memory queue or a keyframe schedule, not both");
  }
  if (m.has_schedule) return ValidateSchedule(m);
  if (m.has_memory) {
    const SignatureSpec* init = m.Signature(m.memory.init_signature);
    const SignatureSpec* step = m.Signature(m.memory.step_signature);
    if (!init || !step) {
      return Status::Error("manifest: memory names signatures '" + m.memory.init_signature +
                           "' and '" + m.memory.step_signature + "' but they are not listed");
    }
    for (const auto& c : m.memory.carry) {
      const TensorSpec* in = step->Input(c.second);
      if (!init->Output(c.first) || !step->Output(c.first) || !in) {
        return Status::Error("manifest: memory.carry " + c.first + "->" + c.second +
                             " does not name outputs of init/step and an input of step");
      }
      if (in->shape.empty() || in->shape[0] != m.memory.queue_length) {
        return Status::Error("manifest: step input " + c.second +
                             " does not lead with queue_length " +
                             std::to_string(m.memory.queue_length));
      }
      if (step->Output(c.first)->NumElements() * m.memory.queue_length != in->NumElements()) {
        return Status::Error("manifest: step input " + c.second + " is not queue_length x " +
                             c.first);
      }
    }
    if (!step->Output(m.output_name)) {
      return Status::Error("manifest: step has no output '" + m.output_name + "'");
    }
    if (!init->InputWithRole("frame") || !init->InputWithRole("mask") ||
        !step->InputWithRole("frame")) {
      return Status::Error("manifest: init needs inputs with roles frame and mask, step a frame");
    }
  } else {
    const SignatureSpec* s = m.Signature("serving_default");
    if (!s) return Status::Error("manifest: stateless model has no 'serving_default' signature");
    if (!s->Input("frame") || !s->Output(m.output_name)) {
      return Status::Error("manifest: serving_default needs input 'frame' and output '" +
                           m.output_name + "'");
    }
  }
  return Status::Ok();
}

}  // namespace

int64_t TensorSpec::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorSpec* SignatureSpec::Input(const std::string& n) const {
  for (const auto& t : inputs) if (t.name == n) return &t;
  return nullptr;
}
const TensorSpec* SignatureSpec::Output(const std::string& n) const {
  for (const auto& t : outputs) if (t.name == n) return &t;
  return nullptr;
}
const TensorSpec* SignatureSpec::InputWithRole(const std::string& role) const {
  for (const auto& t : inputs) if (t.role == role || (t.role.empty() && t.name == role)) return &t;
  return nullptr;
}
const SignatureSpec* Manifest::Signature(const std::string& name) const {
  for (const auto& s : signatures) if (s.name == name) return &s;
  return nullptr;
}

Status ParseManifest(const std::string& text, const std::string& dir, Manifest* out) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Error("manifest: not valid JSON");
  std::string schema;
  MD_RETURN_IF_ERROR(Get(j, "schema", "manifest", &schema));
  if (schema != "mobdistill.manifest") {
    return Status::Error("manifest: schema is '" + schema + "', expected 'mobdistill.manifest'");
  }
  int version = 0;
  MD_RETURN_IF_ERROR(Get(j, "schema_version", "manifest", &version));
  if (version != Manifest::kSchemaVersion) {
    return Status::Error("manifest: schema_version " + std::to_string(version) +
                         " is not supported by this engine (it reads version 1); re-export "
                         "with a matching mobdistill or update the engine");
  }
  Manifest m;
  json model;
  MD_RETURN_IF_ERROR(Get(j, "model", "manifest", &model));
  MD_RETURN_IF_ERROR(Get(model, "name", "model", &m.model_name));
  std::vector<int> res;
  MD_RETURN_IF_ERROR(Get(model, "resolution", "model", &res));
  if (res.size() != 2) return Status::Error("manifest: model.resolution must be [H, W]");
  m.height = res[0];
  m.width = res[1];

  json artifacts;
  MD_RETURN_IF_ERROR(Get(j, "artifacts", "manifest", &artifacts));
  for (const json& a : artifacts) {
    std::string format;
    MD_RETURN_IF_ERROR(Get(a, "format", "artifacts[]", &format));
    if (format != "tflite") continue;
    std::string file;
    MD_RETURN_IF_ERROR(Get(a, "file", "artifacts[tflite]", &file));
    MD_RETURN_IF_ERROR(Get(a, "sha256", "artifacts[tflite]", &m.tflite_sha256));
    m.tflite_file = JoinPath(dir, file);
    break;
  }
  if (m.tflite_file.empty()) return Status::Error("manifest: no tflite artifact listed");

  json sigs;
  MD_RETURN_IF_ERROR(Get(j, "signatures", "manifest", &sigs));
  for (const json& s : sigs) {
    SignatureSpec spec;
    MD_RETURN_IF_ERROR(ParseSignature(s, &spec));
    m.signatures.push_back(spec);
  }
  if (j.contains("preprocessing")) {
    const json& p = j.at("preprocessing");
    if (p.contains("input_range")) {
      std::vector<double> r;
      MD_RETURN_IF_ERROR(Get(p, "input_range", "preprocessing", &r));
      if (r.size() != 2 || !(r[1] > r[0])) {
        return Status::Error("manifest: preprocessing.input_range must be [lo, hi] with hi > lo");
      }
      m.input_lo = r[0];
      m.input_hi = r[1];
    }
    if (p.contains("channel_order")) {
      std::string order;
      MD_RETURN_IF_ERROR(Get(p, "channel_order", "preprocessing", &order));
      if (order != "RGB") return Status::Error("manifest: channel_order " + order +
                                               " unsupported (frames are RGB)");
    }
  }
  if (j.contains("output") && j.at("output").is_object()) {
    const json& o = j.at("output");
    if (o.contains("name")) MD_RETURN_IF_ERROR(Get(o, "name", "output", &m.output_name));
    if (o.contains("num_classes")) {
      MD_RETURN_IF_ERROR(Get(o, "num_classes", "output", &m.num_classes));
    }
  }
  if (j.contains("memory") && !j.at("memory").is_null()) {
    m.has_memory = true;
    MD_RETURN_IF_ERROR(ParseMemory(j.at("memory"), &m.memory));
  }
  if (j.contains("schedule") && !j.at("schedule").is_null()) {
    m.has_schedule = true;
    MD_RETURN_IF_ERROR(ParseSchedule(j.at("schedule"), &m.schedule));
  }
  if (j.contains("parameter_map") && j.at("parameter_map").is_object() &&
      j.at("parameter_map").contains("entries")) {
    const json& entries = j.at("parameter_map").at("entries");
    if (!entries.is_array()) return Status::Error("manifest: parameter_map.entries is not a list");
    for (const json& e : entries) {
      ParameterEntry p;
      MD_RETURN_IF_ERROR(Get(e, "tensor_index", "parameter_map.entries[]", &p.tensor_index));
      MD_RETURN_IF_ERROR(Get(e, "buffer_offset", "parameter_map.entries[]", &p.buffer_offset));
      MD_RETURN_IF_ERROR(Get(e, "buffer_size", "parameter_map.entries[]", &p.buffer_size));
      MD_RETURN_IF_ERROR(Get(e, "dtype", "parameter_map.entries[]", &p.dtype));
      m.parameters.push_back(p);
    }
  }
  MD_RETURN_IF_ERROR(Validate(m));
  *out = std::move(m);
  return Status::Ok();
}

Status ReadFileBytes(const std::string& path, std::vector<uint8_t>* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status::Error("cannot open " + path);
  out->clear();
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) out->insert(out->end(), chunk, chunk + n);
  bool err = std::ferror(f) != 0;
  std::fclose(f);
  if (err) return Status::Error("error reading " + path);
  return Status::Ok();
}

Status LoadManifest(const std::string& path, Manifest* out) {
  std::vector<uint8_t> bytes;
  Status s = ReadFileBytes(path, &bytes);
  if (!s.ok()) return Status::Error("cannot read --manifest " + path);
  std::string dir;
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) dir = path.substr(0, slash);
  MD_RETURN_IF_ERROR(ParseManifest(std::string(bytes.begin(), bytes.end()), dir, out));
  out->path = path;
  return Status::Ok();
}

}  // namespace mobdistill
