// mobdistill-update-verify: decodes (and optionally applies) update packets with the same code the
// engine links, printing one JSON line per packet. Exit 0: all accepted, 1: any rejected, 2: usage.
//
//   mobdistill-update-verify --base-sha256 HEX --device-id HEX --table TABLE.txt
//                            [--hmac-key-file KEY | --insecure] [--last-sequence N] [--chain]
//                            [--model BASE.tflite [--out PATCHED.tflite]] UPDATE...
// Without a key every packet is refused (bad_hmac), as in the engine, unless --insecure is given.
// The decode limits come from --table (the deployed model's tensor table), as in the engine; a
// file larger than those limits allow is refused (too_large) without being read.
// Without --chain every packet is checked on its own against --last-sequence and the base model;
// with --chain they are applied in order (sequence and, for cumulative packets, model carry over).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace mu = mobdistill::update;

namespace {

struct Args {
  std::vector<uint8_t> base_sha256, device_id, hmac_key;
  bool insecure = false;
  uint64_t last_sequence = 0;
  bool chain = false;
  std::string key_file, model, table, out;
  std::vector<std::string> updates;
};

int Usage(const char* why) {
  std::fprintf(stderr, "mobdistill-update-verify: %s\nusage: mobdistill-update-verify "
               "--base-sha256 HEX --device-id HEX --table FILE [--hmac-key-file FILE | "
               "--insecure] [--last-sequence N] [--chain] [--model FILE [--out FILE]] UPDATE...\n",
               why);
  return 2;
}

bool Parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--chain") { a->chain = true; continue; }
    if (flag == "--insecure") { a->insecure = true; continue; }
    if (flag.rfind("--", 0) != 0) { a->updates.push_back(flag); continue; }
    if (!has_value) return false;
    const std::string value = argv[++i];
    if (flag == "--base-sha256") { if (!mu::ParseHex(value, &a->base_sha256)) return false; }
    else if (flag == "--device-id") { if (!mu::ParseHex(value, &a->device_id)) return false; }
    else if (flag == "--hmac-key-file") a->key_file = value;
    else if (flag == "--last-sequence") a->last_sequence = std::strtoull(value.c_str(), nullptr, 10);
    else if (flag == "--model") a->model = value;
    else if (flag == "--table") a->table = value;
    else if (flag == "--out") a->out = value;
    else return false;
  }
  return a->base_sha256.size() == mu::kSha256Bytes && a->device_id.size() == mu::kDeviceIdBytes &&
         !a->updates.empty() && !a->table.empty() && (a->out.empty() || !a->model.empty()) &&
         !(a->insecure && !a->key_file.empty());
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

mu::Status ReadPacket(const std::string& path, uint64_t max_bytes, std::vector<uint8_t>* bytes) {
  if (mu::FileSize(path) > max_bytes) {
    return {mu::StatusCode::kTooLarge, path + " is larger than any packet this model allows"};
  }
  if (!mu::ReadFile(path, bytes, max_bytes)) {
    return {mu::StatusCode::kInvalidArgument, "cannot read " + path};
  }
  return mu::Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!Parse(argc, argv, &a)) return Usage("bad or missing arguments");
  std::vector<uint8_t> pristine, current;
  mu::TensorTable table;
  if (!mu::ReadTable(a.table, &table)) return Usage("cannot read --table");
  if (!a.model.empty() && !mu::ReadFile(a.model, &pristine)) return Usage("cannot read --model");
  if (!a.key_file.empty() && (!mu::ReadFile(a.key_file, &a.hmac_key, 1 << 16) || a.hmac_key.empty())) {
    return Usage("cannot read --hmac-key-file (raw key bytes, not empty)");
  }
  mu::DecodeOptions options;
  options.expected_base_sha256 = a.base_sha256.data();
  options.expected_device_id = a.device_id.data();
  options.hmac_key = a.hmac_key.empty() ? nullptr : a.hmac_key.data();
  options.hmac_key_size = a.hmac_key.size();
  options.allow_unauthenticated = a.insecure;
  options.limits = mu::DecodeLimits::ForTable(table);
  current = pristine;
  int rc = 0;
  for (const std::string& path : a.updates) {
    std::vector<uint8_t> bytes;
    mu::UpdatePacket packet;
    options.last_sequence = a.last_sequence;
    mu::Status s = ReadPacket(path, options.limits.MaxPacketBytes(), &bytes);
    if (s.ok()) s = mu::DecodeUpdatePacket(bytes.data(), bytes.size(), options, &packet);
    bytes = std::vector<uint8_t>();  // release before patching: peak memory is what we report
    size_t n_values = 0;
    for (const auto& t : packet.tensors) n_values += t.values.size();
    std::vector<uint8_t> model;
    if (s.ok() && !a.model.empty()) {
      model = packet.mode == mu::Mode::kCumulative ? current : pristine;
      s = mu::ApplyPatches(&model, table, packet);
    }
    if (s.ok() && a.chain) { a.last_sequence = packet.sequence; current = model; }
    if (s.ok() && !a.out.empty()) mu::WriteFile(a.out, model);
    std::printf("{\"file\": \"%s\", \"status\": \"%s\", \"message\": \"%s\", \"sequence\": %llu, "
                "\"mode\": \"%s\", \"tensors\": %zu, \"values\": %zu, \"patched_sha256\": \"%s\"}\n",
                JsonEscape(path).c_str(), mu::StatusCodeName(s.code), JsonEscape(s.message).c_str(),
                static_cast<unsigned long long>(packet.sequence),
                packet.mode == mu::Mode::kCumulative ? "cumulative" : "base_relative",
                packet.tensors.size(), n_values,
                s.ok() && !a.model.empty() ? mu::ToHex(mu::Sha256(model.data(), model.size()).data(), 32).c_str() : "");
    std::fflush(stdout);
    if (!s.ok()) rc = 1;
  }
  return rc;
}
