// mobdistill-update-verify: decodes (and optionally applies) update packets with the same code the
// engine links, printing one JSON line per packet. Exit 0: all accepted, 1: any rejected, 2: usage.
//
//   mobdistill-update-verify --base-sha256 HEX [--hmac-key-hex HEX] [--last-sequence N] [--chain]
//                            [--model BASE.tflite --table TABLE.txt [--out PATCHED.tflite]] UPDATE...
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
  std::vector<uint8_t> base_sha256, hmac_key;
  uint64_t last_sequence = 0;
  bool chain = false;
  std::string model, table, out;
  std::vector<std::string> updates;
};

int Usage(const char* why) {
  std::fprintf(stderr, "mobdistill-update-verify: %s\nusage: mobdistill-update-verify "
               "--base-sha256 HEX [--hmac-key-hex HEX] [--last-sequence N] [--chain] "
               "[--model FILE --table FILE [--out FILE]] UPDATE...\n", why);
  return 2;
}

bool Parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--chain") { a->chain = true; continue; }
    if (flag.rfind("--", 0) != 0) { a->updates.push_back(flag); continue; }
    if (!has_value) return false;
    const std::string value = argv[++i];
    if (flag == "--base-sha256") { if (!mu::ParseHex(value, &a->base_sha256)) return false; }
    else if (flag == "--hmac-key-hex") { if (!mu::ParseHex(value, &a->hmac_key)) return false; }
    else if (flag == "--last-sequence") a->last_sequence = std::strtoull(value.c_str(), nullptr, 10);
    else if (flag == "--model") a->model = value;
    else if (flag == "--table") a->table = value;
    else if (flag == "--out") a->out = value;
    else return false;
  }
  return a->base_sha256.size() == mu::kSha256Bytes && !a->updates.empty() &&
         a->model.empty() == a->table.empty() && (a->out.empty() || !a->model.empty());
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!Parse(argc, argv, &a)) return Usage("bad or missing arguments");
  std::vector<uint8_t> pristine, current;
  mu::TensorTable table;
  if (!a.model.empty() && (!mu::ReadFile(a.model, &pristine) || !mu::ReadTable(a.table, &table))) {
    return Usage("cannot read --model or --table");
  }
  current = pristine;
  int rc = 0;
  uint64_t last = a.last_sequence;
  for (const std::string& path : a.updates) {
    std::vector<uint8_t> bytes;
    mu::UpdatePacket packet;
    mu::Status s = mu::ReadFile(path, &bytes)
        ? mu::DecodeUpdatePacket(bytes.data(), bytes.size(), a.base_sha256.data(),
                                 a.hmac_key.data(), a.hmac_key.size(), last, &packet)
        : mu::Status{mu::StatusCode::kInvalidArgument, "cannot read " + path};
    size_t n_values = 0;
    for (const auto& t : packet.tensors) n_values += t.values.size();
    std::vector<uint8_t> model = packet.mode == mu::Mode::kCumulative ? current : pristine;
    if (s.ok() && !a.model.empty()) s = mu::ApplyPatches(&model, table, packet);
    if (s.ok() && a.chain) { last = packet.sequence; current = model; }
    if (s.ok() && !a.out.empty()) mu::WriteFile(a.out, model);
    std::printf("{\"file\": \"%s\", \"status\": \"%s\", \"message\": \"%s\", \"sequence\": %llu, "
                "\"mode\": \"%s\", \"tensors\": %zu, \"values\": %zu, \"patched_sha256\": \"%s\"}\n",
                JsonEscape(path).c_str(), mu::StatusCodeName(s.code), JsonEscape(s.message).c_str(),
                static_cast<unsigned long long>(packet.sequence),
                packet.mode == mu::Mode::kCumulative ? "cumulative" : "base_relative",
                packet.tensors.size(), n_values,
                s.ok() && !a.model.empty() ? mu::ToHex(mu::Sha256(model.data(), model.size()).data(), 32).c_str() : "");
    if (!s.ok()) rc = 1;
  }
  return rc;
}
