// Repartition records and de-duplication: see repartition.h.
#include "ingest/repartition.h"

#include <cstring>

namespace fkv {

namespace {
constexpr uint8_t kVersion = 1;

void PutU64(std::string* out, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  out->append(b, 8);
}
void PutStr(std::string* out, std::string_view s) {
  PutU64(out, s.size());
  out->append(s);
}

struct Reader {
  std::string_view in;
  bool ok = true;
  uint64_t U64() {
    if (in.size() < 8) return ok = false, 0;
    uint64_t v;
    std::memcpy(&v, in.data(), 8);
    in.remove_prefix(8);
    return v;
  }
  std::string_view Str() {
    uint64_t n = U64();
    if (!ok || n > in.size()) return ok = false, std::string_view();
    std::string_view s = in.substr(0, n);
    in.remove_prefix(n);
    return s;
  }
};
}  // namespace

void EncodeRepartition(const RepartitionRecord& r, std::string* out) {
  out->push_back(static_cast<char>(kVersion));
  out->push_back(static_cast<char>((r.has_key ? 1 : 0) | (r.tombstone ? 2 : 0) | (r.command ? 4 : 0) |
                                   (r.resp3 ? 8 : 0)));
  PutStr(out, r.source);
  PutStr(out, r.topic);
  PutU64(out, static_cast<uint64_t>(static_cast<uint32_t>(r.partition)));
  PutU64(out, static_cast<uint64_t>(r.offset));
  PutU64(out, static_cast<uint64_t>(r.now_ms));
  PutU64(out, static_cast<uint64_t>(r.kafka_ts_ms));
  PutStr(out, r.key);
  PutStr(out, r.payload);
}

bool DecodeRepartition(std::string_view bytes, RepartitionRecord* r) {
  if (bytes.size() < 2 || static_cast<uint8_t>(bytes[0]) != kVersion) return false;
  const auto flags = static_cast<uint8_t>(bytes[1]);
  if (flags > 15) return false;
  Reader rd{bytes.substr(2)};
  r->has_key = (flags & 1) != 0;
  r->tombstone = (flags & 2) != 0;
  r->command = (flags & 4) != 0;
  r->resp3 = (flags & 8) != 0;
  r->source = rd.Str();
  r->topic = rd.Str();
  const uint64_t part = rd.U64();
  r->offset = static_cast<int64_t>(rd.U64());
  r->now_ms = static_cast<int64_t>(rd.U64());
  r->kafka_ts_ms = static_cast<int64_t>(rd.U64());
  r->key = rd.Str();
  r->payload = rd.Str();
  if (!rd.ok || !rd.in.empty() || part > INT32_MAX || r->offset < 0 || r->source.empty() != r->command ||
      r->topic.empty())
    return false;
  r->partition = static_cast<int32_t>(part);
  return true;
}

void EncodeArgs(std::span<const std::string_view> args, std::string* out) {
  PutU64(out, args.size());
  for (std::string_view a : args) PutStr(out, a);
}

bool DecodeArgs(std::string_view bytes, std::vector<std::string_view>* args) {
  Reader rd{bytes};
  const uint64_t n = rd.U64();
  if (!rd.ok || n == 0 || n > rd.in.size() / 8) return false;
  args->clear();
  for (uint64_t i = 0; i < n && rd.ok; i++) args->push_back(rd.Str());
  return rd.ok && rd.in.empty();
}

bool DedupMarks::Admit(std::string_view topic, int32_t partition, int64_t offset) {
  auto [it, fresh] = marks_.try_emplace(Source(std::string(topic), partition), offset + 1);
  if (fresh) return true;
  if (offset < it->second) return false;
  it->second = offset + 1;
  return true;
}

}  // namespace fkv
