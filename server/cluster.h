// Cluster mode (docs/architecture.md, "Cluster mode"): Redis Cluster's key
// slots, and the map of which node owns which slots. Slots are cut into
// contiguous ranges, one per partition of the repartition topic; the node
// a partition is assigned to owns its range.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fkv {

inline constexpr int kClusterSlots = 16384;

// CRC16 (XMODEM) of the key, or of its hash tag: the part between the first
// '{' and the next '}' when that part is not empty; mod 16384.
uint16_t KeySlot(std::string_view key);

// Partition p of n owns slots [first, last].
struct SlotRange {
  int first = 0, last = -1;
};
SlotRange PartitionSlots(int p, int nparts);
int PartitionOfSlot(int slot, int nparts);
inline int PartitionOfKey(std::string_view key, int nparts) { return PartitionOfSlot(KeySlot(key), nparts); }

struct ClusterNode {
  std::string id;  // 40 hex digits, as Redis's node ids
  std::string ip;
  int port = 0;
  bool myself = false;
  std::vector<int> partitions;  // of the repartition topic, ascending
};

// Who owns what, at one moment. Immutable: a change makes a new one.
class ClusterMap {
 public:
  ClusterMap(int nparts, std::vector<ClusterNode> nodes);
  int partitions() const { return nparts_; }
  const std::vector<ClusterNode>& nodes() const { return nodes_; }
  // The node owning the slot, or nullptr when no node has its partition.
  const ClusterNode* OwnerOfSlot(int slot) const;
  const ClusterNode* Myself() const;
  bool OwnsSlot(int slot) const {
    const ClusterNode* n = OwnerOfSlot(slot);
    return n != nullptr && n->myself;
  }
  // Every partition has an owner (CLUSTER INFO's cluster_state:ok).
  bool Complete() const;
  // The owned slot ranges of a node, merged where its partitions are
  // adjacent (CLUSTER SLOTS, CLUSTER SHARDS, CLUSTER NODES).
  std::vector<SlotRange> RangesOf(const ClusterNode& n) const;

 private:
  int nparts_;
  std::vector<ClusterNode> nodes_;
  std::vector<int> owner_;  // partition -> index in nodes_, -1 for none
};

// One record of the membership topic: a node's address and the
// repartition partitions it claims, each with the claim's epoch.
struct MemberRecord {
  std::string id, ip;
  int port = 0;
  int64_t time_ms = 0;  // the sender's clock: a node silent for cluster-node-timeout is gone
  std::vector<std::pair<int, uint64_t>> claims;  // (partition, epoch)
};
std::string EncodeMember(const MemberRecord& r);  // JSON
bool DecodeMember(std::string_view json, MemberRecord* out);

// The membership log read in order (docs/architecture.md, "Cluster mode"):
// a claim of partition p with an epoch at least p's current one makes its
// sender the owner (a later claim wins a tie: the log orders them); a
// node's record without a partition it owned releases it; a node not heard
// of for the timeout owns nothing.
class Membership {
 public:
  Membership(std::string my_id, int nparts);
  void Apply(const MemberRecord& r);
  // The epoch a new claim of p takes: one past the latest seen.
  uint64_t NextEpoch(int p) const { return epoch_[static_cast<size_t>(p)] + 1; }
  uint64_t EpochOf(int p) const { return epoch_[static_cast<size_t>(p)]; }
  ClusterMap Map(int64_t now_ms, int64_t node_timeout_ms) const;
  // Another node heard of within the timeout announcing this address: its
  // id, else "".
  std::string AddressTakenBy(const std::string& ip, int port, int64_t now_ms, int64_t node_timeout_ms) const;

 private:
  struct Node {
    std::string ip;
    int port = 0;
    int64_t seen_ms = 0;
  };
  std::string my_id_;
  int nparts_;
  std::map<std::string, Node> nodes_;
  std::vector<std::string> owner_;  // partition -> node id, "" for none
  std::vector<uint64_t> epoch_;
};

// The node id in `path` (made and written there when the file is absent):
// 40 hex digits, as Redis's. Throws std::runtime_error when it can be
// neither read nor written.
std::string ReadOrMakeNodeId(const std::string& path);

struct CommandSpec;
// Where a command runs in cluster mode, as Redis Cluster decides: "" to run
// here (no keys, or every key in one slot this node owns), else the error
// reply: "CROSSSLOT ..." (keys of several slots), "MOVED <slot> <ip>:<port>"
// (the slot is another node's), "CLUSTERDOWN ..." (no node has it),
// "TRYAGAIN ..." (the map names this node but its state of the slot's
// partition is not servable yet: `held`, per partition, may be null).
enum class PartitionHeld : uint8_t { kNo = 0, kRestoring = 1, kServing = 2 };
std::string ClusterRoute(const ClusterMap& map, const CommandSpec& spec, const std::vector<std::string_view>& args,
                         const std::atomic<PartitionHeld>* held = nullptr);

}  // namespace fkv
