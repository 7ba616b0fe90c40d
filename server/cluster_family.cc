// CLUSTER and the commands cluster clients send (docs/commands.md,
// "Cluster mode"), answered from the shard's copy of the slot map.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "server/cluster.h"
#include "server/command.h"
#include "server/server.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {
constexpr std::string_view kDisabled = "ERR This instance has cluster support disabled";

bool ParseSlot(std::string_view s, int* slot) {
  int64_t v;
  if (!ParseI64(s, &v) || v < 0 || v >= kClusterSlots) return false;
  *slot = static_cast<int>(v);
  return true;
}

std::string Endpoint(const ClusterNode& n) { return n.ip + ":" + std::to_string(n.port); }

void Info(CommandContext& c, const ClusterMap& m) {
  size_t assigned = 0, size = 0;
  for (const ClusterNode& n : m.nodes()) {
    for (const SlotRange& r : m.RangesOf(n)) assigned += static_cast<size_t>(r.last - r.first + 1);
    size += n.partitions.empty() ? 0 : 1;
  }
  std::string s;
  auto line = [&](const char* k, const std::string& v) { s += std::string(k) + ":" + v + "\r\n"; };
  line("cluster_state", m.Complete() ? "ok" : "fail");
  line("cluster_slots_assigned", std::to_string(assigned));
  line("cluster_slots_ok", std::to_string(assigned));
  line("cluster_slots_pfail", "0");
  line("cluster_slots_fail", "0");
  line("cluster_known_nodes", std::to_string(m.nodes().size()));
  line("cluster_size", std::to_string(size));
  line("cluster_repartition_partitions", std::to_string(m.partitions()));
  ClusterMember* member = c.server->cluster();
  line("cluster_membership_records_read", std::to_string(member->records_read()));
  line("cluster_map_changes", std::to_string(member->map_changes()));
  c.out.Verbatim(s);
}

void Slots(CommandContext& c, const ClusterMap& m) {
  std::vector<std::pair<SlotRange, const ClusterNode*>> rows;
  for (const ClusterNode& n : m.nodes())
    for (const SlotRange& r : m.RangesOf(n)) rows.emplace_back(r, &n);
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.first.first < b.first.first; });
  c.out.Array(rows.size());
  for (auto& [r, n] : rows) {
    c.out.Array(3);
    c.out.Integer(r.first);
    c.out.Integer(r.last);
    c.out.Array(4);  // the master: ip, port, id, networking metadata (none)
    c.out.Bulk(n->ip);
    c.out.Integer(n->port);
    c.out.Bulk(n->id);
    c.out.Map(0);
  }
}

void Shards(CommandContext& c, const ClusterMap& m) {
  std::vector<const ClusterNode*> serving;
  for (const ClusterNode& n : m.nodes())
    if (!n.partitions.empty()) serving.push_back(&n);
  c.out.Array(serving.size());
  for (const ClusterNode* n : serving) {
    c.out.Map(2);
    c.out.Bulk("slots");
    auto ranges = m.RangesOf(*n);
    c.out.Array(ranges.size() * 2);
    for (const SlotRange& r : ranges) {
      c.out.Integer(r.first);
      c.out.Integer(r.last);
    }
    c.out.Bulk("nodes");
    c.out.Array(1);
    c.out.Map(7);
    c.out.Bulk("id");
    c.out.Bulk(n->id);
    c.out.Bulk("port");
    c.out.Integer(n->port);
    c.out.Bulk("ip");
    c.out.Bulk(n->ip);
    c.out.Bulk("endpoint");
    c.out.Bulk(n->ip);
    c.out.Bulk("role");
    c.out.Bulk("master");
    c.out.Bulk("replication-offset");
    c.out.Integer(0);
    c.out.Bulk("health");
    c.out.Bulk("online");
  }
}

void Nodes(CommandContext& c, const ClusterMap& m) {
  std::string s;
  for (const ClusterNode& n : m.nodes()) {
    s += n.id + " " + Endpoint(n) + "@" + std::to_string(n.port + 10000) + (n.myself ? " myself,master" : " master") +
         " - 0 " + std::to_string(c.now_ms) + " 0 connected";
    for (const SlotRange& r : m.RangesOf(n))
      s += " " + (r.first == r.last ? std::to_string(r.first) : std::to_string(r.first) + "-" + std::to_string(r.last));
    s += "\n";
  }
  c.out.Verbatim(s);
}

// COUNTKEYSINSLOT and GETKEYSINSLOT: every shard's keys of the slot (a
// walk of every key: Redis keeps an index per slot, featurekv does not).
void KeysInSlot(CommandContext& c, int slot, int64_t limit, bool count_only) {
  int n = c.server->shards().size();
  auto per = std::make_shared<std::vector<std::vector<std::string>>>(static_cast<size_t>(n));
  auto counts = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(n), 0);
  int64_t now = c.now_ms;
  c.FanOut(
      c.server->shards().All(),
      [per, counts, slot, limit, count_only, now](int shard, ShardStore& st) {
        auto& keys = (*per)[static_cast<size_t>(shard)];
        int64_t& k = (*counts)[static_cast<size_t>(shard)];
        uint64_t cur = 0;
        do {
          cur = st.Scan(cur, now, [&](Record* r) {
            if (KeySlot(r->key()) != slot) return;
            k++;
            if (!count_only && static_cast<int64_t>(keys.size()) < limit) keys.emplace_back(r->key());
          });
        } while (cur != 0);
      },
      [per, counts, limit, count_only](ReplyWriter& out) {
        if (count_only) {
          int64_t total = 0;
          for (int64_t k : *counts) total += k;
          return out.Integer(total);
        }
        std::vector<std::string> all;
        for (auto& v : *per)
          for (auto& k : v)
            if (static_cast<int64_t>(all.size()) < limit) all.push_back(std::move(k));
        out.Array(all.size());
        for (auto& k : all) out.Bulk(k);
      });
}

void Cluster(CommandContext& c) {
  std::shared_ptr<const ClusterMap> m = c.server->shards().shard(c.shard).cluster;
  std::string_view sub = c.args[1];
  if (EqualsNoCase(sub, "HELP") && c.args.size() == 2) {
    static const char* kHelp[] = {
        "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "COUNTKEYSINSLOT <slot>", "    Return the number of keys in <slot>.",
        "GETKEYSINSLOT <slot> <count>", "    Return key names stored by current node in a slot.",
        "INFO", "    Return information about the cluster.",
        "KEYSLOT <key>", "    Return the hash slot for <key>.",
        "MYID", "    Return the node id.",
        "NODES", "    Return cluster configuration seen by node.",
        "SHARDS", "    Return information about slot range mappings and the nodes associated with them.",
        "SLOTS", "    Return information about slots range mappings.",
        "HELP", "    Print this help."};
    c.out.Array(std::size(kHelp));
    for (const char* l : kHelp) c.out.Simple(l);
    return;
  }
  if (m == nullptr) return c.out.Error(kDisabled);
  const size_t argc = c.args.size();
  if (EqualsNoCase(sub, "KEYSLOT") && argc == 3) return c.out.Integer(KeySlot(c.args[2]));
  if (EqualsNoCase(sub, "MYID") && argc == 2) return c.out.Bulk(c.server->cluster()->settings().node_id);
  if (EqualsNoCase(sub, "INFO") && argc == 2) return Info(c, *m);
  if (EqualsNoCase(sub, "SLOTS") && argc == 2) return Slots(c, *m);
  if (EqualsNoCase(sub, "SHARDS") && argc == 2) return Shards(c, *m);
  if (EqualsNoCase(sub, "NODES") && argc == 2) return Nodes(c, *m);
  int slot;
  if (EqualsNoCase(sub, "COUNTKEYSINSLOT") && argc == 3) {
    if (!ParseSlot(c.args[2], &slot)) return c.out.Error("ERR Invalid slot");
    return KeysInSlot(c, slot, 0, true);
  }
  if (EqualsNoCase(sub, "GETKEYSINSLOT") && argc == 4) {
    int64_t n;
    if (!ParseI64(c.args[3], &n) || n < 0) return c.out.Error("ERR Invalid number of keys");
    if (!ParseSlot(c.args[2], &slot)) return c.out.Error("ERR Invalid slot");
    return KeysInSlot(c, slot, n, false);
  }
  c.out.Error("ERR unknown subcommand or wrong number of arguments for '" + std::string(sub) + "'. Try CLUSTER HELP.");
}

// READONLY, READWRITE, ASKING: accepted (featurekv nodes have no replicas,
// and slots move with their partitions, not by migration).
void ClusterOk(CommandContext& c) {
  if (c.server->cluster() == nullptr) return c.out.Error(kDisabled);
  c.out.Ok();
}
}  // namespace

void RegisterClusterFamily(CommandTable& t) {
  const uint32_t M = kCmdMultiShard, L = kCmdLoading | kCmdStale;
  t.Register({"cluster", -2, L | M, 0, 0, 0, Cluster, "cluster", "A container for Redis Cluster commands."});
  t.Register({"readonly", 1, kCmdFast | L, 0, 0, 0, ClusterOk, "cluster", "Enables read-only queries for a connection to a Redis Cluster replica node."});
  t.Register({"readwrite", 1, kCmdFast | L, 0, 0, 0, ClusterOk, "cluster", "Enables read-write queries for a connection to a Redis Cluster replica node."});
  t.Register({"asking", 1, kCmdFast, 0, 0, 0, ClusterOk, "cluster", "Signals that a cluster client is following an -ASK redirect."});
}

}  // namespace fkv
