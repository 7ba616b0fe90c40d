#include "server/cluster.h"

#include <simdjson.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <stdexcept>

#include "server/acl.h"

namespace fkv {

namespace {
constexpr std::array<uint16_t, 256> MakeCrc16Table() {
  std::array<uint16_t, 256> t{};
  for (int i = 0; i < 256; i++) {
    uint16_t c = static_cast<uint16_t>(i << 8);
    for (int b = 0; b < 8; b++) c = static_cast<uint16_t>(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
    t[static_cast<size_t>(i)] = c;
  }
  return t;
}
constexpr std::array<uint16_t, 256> kCrc16 = MakeCrc16Table();

uint16_t Crc16(std::string_view s) {
  uint16_t crc = 0;
  for (unsigned char ch : s) crc = static_cast<uint16_t>((crc << 8) ^ kCrc16[((crc >> 8) ^ ch) & 0xff]);
  return crc;
}
}  // namespace

uint16_t KeySlot(std::string_view key) {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return static_cast<uint16_t>(Crc16(key) & (kClusterSlots - 1));
}

SlotRange PartitionSlots(int p, int nparts) {
  return {static_cast<int>(static_cast<int64_t>(p) * kClusterSlots / nparts),
          static_cast<int>(static_cast<int64_t>(p + 1) * kClusterSlots / nparts) - 1};
}

int PartitionOfSlot(int slot, int nparts) {
  // The p with PartitionSlots(p).first <= slot <= .last.
  int p = static_cast<int>((static_cast<int64_t>(slot) * nparts) / kClusterSlots);
  while (p + 1 < nparts && PartitionSlots(p + 1, nparts).first <= slot) p++;
  while (p > 0 && PartitionSlots(p, nparts).first > slot) p--;
  return p;
}

ClusterMap::ClusterMap(int nparts, std::vector<ClusterNode> nodes)
    : nparts_(nparts), nodes_(std::move(nodes)), owner_(static_cast<size_t>(nparts), -1) {
  for (size_t i = 0; i < nodes_.size(); i++)
    for (int p : nodes_[i].partitions)
      if (p >= 0 && p < nparts_) owner_[static_cast<size_t>(p)] = static_cast<int>(i);
}

const ClusterNode* ClusterMap::OwnerOfSlot(int slot) const {
  if (nparts_ <= 0 || slot < 0 || slot >= kClusterSlots) return nullptr;
  int i = owner_[static_cast<size_t>(PartitionOfSlot(slot, nparts_))];
  return i < 0 ? nullptr : &nodes_[static_cast<size_t>(i)];
}

const ClusterNode* ClusterMap::Myself() const {
  for (const ClusterNode& n : nodes_)
    if (n.myself) return &n;
  return nullptr;
}

bool ClusterMap::Complete() const {
  if (nparts_ <= 0) return false;
  for (int i : owner_)
    if (i < 0) return false;
  return true;
}

std::vector<SlotRange> ClusterMap::RangesOf(const ClusterNode& n) const {
  std::vector<SlotRange> out;
  for (int p = 0; p < nparts_; p++) {
    if (owner_[static_cast<size_t>(p)] < 0 || &nodes_[static_cast<size_t>(owner_[static_cast<size_t>(p)])] != &n) continue;
    SlotRange r = PartitionSlots(p, nparts_);
    if (!out.empty() && out.back().last + 1 == r.first) out.back().last = r.last;
    else out.push_back(r);
  }
  return out;
}

std::string ReadOrMakeNodeId(const std::string& path) {
  auto hex40 = [](const std::string& s) {
    return s.size() == 40 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
  };
  {
    std::ifstream in(path);
    std::string id;
    if (in && in >> id) {
      if (!hex40(id)) throw std::runtime_error(path + ": not a node id (40 hex digits): '" + id.substr(0, 64) + "'");
      return id;
    }
  }
  std::random_device rd;
  std::string id;
  static const char* kHex = "0123456789abcdef";
  while (id.size() < 40) id += kHex[rd() & 15];
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << id << "\n";
    if (!out.flush()) throw std::runtime_error("cannot write the node id to " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write the node id to " + path);
  return id;
}

std::string EncodeMember(const MemberRecord& r) {
  std::string out = "{\"id\":\"" + r.id + "\",\"ip\":\"" + r.ip + "\",\"port\":" + std::to_string(r.port) +
                    ",\"time\":" + std::to_string(r.time_ms) + ",\"claims\":[";
  for (size_t i = 0; i < r.claims.size(); i++)
    out += (i ? ",[" : "[") + std::to_string(r.claims[i].first) + "," + std::to_string(r.claims[i].second) + "]";
  return out + "]}";
}

bool DecodeMember(std::string_view json, MemberRecord* out) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) return false;
  std::string_view id, ip;
  int64_t port = 0, time = 0;
  simdjson::dom::array claims;
  if (root["id"].get(id) || root["ip"].get(ip) || root["port"].get(port) || root["time"].get(time) ||
      root["claims"].get(claims))
    return false;
  if (id.empty() || port <= 0 || port > 65535) return false;
  out->id = std::string(id);
  out->ip = std::string(ip);
  out->port = static_cast<int>(port);
  out->time_ms = time;
  out->claims.clear();
  for (simdjson::dom::element c : claims) {
    simdjson::dom::array pair;
    if (c.get(pair) || pair.size() != 2) return false;
    int64_t p = 0;
    uint64_t e = 0;
    if (pair.at(0).get(p) || pair.at(1).get(e) || p < 0) return false;
    out->claims.emplace_back(static_cast<int>(p), e);
  }
  return true;
}

Membership::Membership(std::string my_id, int nparts)
    : my_id_(std::move(my_id)), nparts_(nparts), owner_(static_cast<size_t>(nparts)), epoch_(static_cast<size_t>(nparts), 0) {}

void Membership::Apply(const MemberRecord& r) {
  Node& n = nodes_[r.id];
  n.ip = r.ip;
  n.port = r.port;
  n.seen_ms = std::max(n.seen_ms, r.time_ms);
  std::vector<char> claimed(static_cast<size_t>(nparts_), 0);
  for (auto [p, e] : r.claims) {
    if (p >= nparts_) continue;
    const auto i = static_cast<size_t>(p);
    if (e >= epoch_[i]) {
      owner_[i] = r.id;
      epoch_[i] = e;
      claimed[i] = 1;
    }
  }
  for (size_t i = 0; i < owner_.size(); i++)
    if (owner_[i] == r.id && !claimed[i]) owner_[i].clear();  // released (or its claim was outdone)
}

ClusterMap Membership::Map(int64_t now_ms, int64_t node_timeout_ms) const {
  std::vector<ClusterNode> nodes;
  std::map<std::string, size_t> index;
  for (const auto& [id, n] : nodes_) {
    const bool me = id == my_id_;
    if (!me && n.seen_ms + node_timeout_ms < now_ms) continue;  // gone
    index[id] = nodes.size();
    nodes.push_back(ClusterNode{id, n.ip, n.port, me, {}});
  }
  for (int p = 0; p < nparts_; p++) {
    auto it = index.find(owner_[static_cast<size_t>(p)]);
    if (it != index.end()) nodes[it->second].partitions.push_back(p);
  }
  return ClusterMap(nparts_, std::move(nodes));
}

std::string Membership::AddressTakenBy(const std::string& ip, int port, int64_t now_ms, int64_t node_timeout_ms) const {
  for (const auto& [id, n] : nodes_)
    if (id != my_id_ && n.ip == ip && n.port == port && n.seen_ms + node_timeout_ms >= now_ms) return id;
  return "";
}

std::string ClusterRoute(const ClusterMap& map, const CommandSpec& spec, const std::vector<std::string_view>& args,
                         const std::atomic<PartitionHeld>* held) {
  if ((spec.flags & kCmdAnySlot) != 0) return "";  // its handler routes each key (no walk here)
  int slot = -1;
  bool cross = false;
  ForEachKeyArg(spec, args, [&](std::string_view k) {
    const int s = KeySlot(k);
    if (slot >= 0 && s != slot) cross = true;
    slot = s;
  });
  if (slot < 0) return "";
  if (cross) return "CROSSSLOT Keys in request don't hash to the same slot";
  const ClusterNode* owner = map.OwnerOfSlot(slot);
  if (owner == nullptr) return "CLUSTERDOWN Hash slot not served";
  if (owner->myself) {
    const int p = PartitionOfSlot(slot, map.partitions());
    const PartitionHeld h = held != nullptr ? held[p].load(std::memory_order_acquire) : PartitionHeld::kServing;
    if (h == PartitionHeld::kRestoring) return "TRYAGAIN Slot " + std::to_string(slot) + " is being restored from the log";
    if (h == PartitionHeld::kNo) return "TRYAGAIN Slot " + std::to_string(slot) + " is moving";
    return "";
  }
  return "MOVED " + std::to_string(slot) + " " + owner->ip + ":" + std::to_string(owner->port);
}

}  // namespace fkv
