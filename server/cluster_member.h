// A node's membership in a featurekv cluster (docs/architecture.md,
// "Cluster mode"): the repartition partitions the node's owner ingest is
// assigned in the repartition topic's consumer group are the slots it
// owns; its thread publishes the node's address and claims to the
// membership topic when they change and every second, and reads that topic
// from its start to know every node's slots.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "server/cluster.h"

struct rd_kafka_s;

namespace fkv {

struct ClusterSettings {
  std::string brokers;
  std::string repartition_topic;
  std::string members_topic;
  std::string node_id, ip;
  int port = 0;
  int partitions = 16;             // of the repartition topic
  int64_t node_timeout_ms = 15000;
  std::vector<std::pair<std::string, std::string>> properties;  // kafka-property, for the consumer
};

class ClusterMember {
 public:
  using OnChange = std::function<void(std::shared_ptr<const ClusterMap>)>;
  ClusterMember(ClusterSettings s, OnChange on_change);
  ~ClusterMember();
  // Creates the clients and starts the thread; "" or what went wrong.
  std::string Start();
  // Publishes that this node holds none (the owner ingest has left the
  // group) and stops.
  void Stop();
  // The owner ingest's rebalances (any thread): claims taken and released.
  void Gained(const std::vector<int>& partitions);
  void Lost(const std::vector<int>& partitions);
  std::shared_ptr<const ClusterMap> map() const;
  const ClusterSettings& settings() const { return s_; }
  // How many membership records were read, and map changes seen (INFO).
  uint64_t records_read() const { return records_.load(); }
  uint64_t map_changes() const { return changes_.load(); }

 private:
  void Run();
  void DrainMembers();
  void Publish(int64_t now);
  void Rebuild(int64_t now, bool force);

  ClusterSettings s_;
  OnChange on_change_;
  std::mutex state_mu_;  // the clients, membership_ and claims_: the thread's and the rebalances'
  rd_kafka_s* members_ = nullptr;   // reads the membership topic
  rd_kafka_s* producer_ = nullptr;  // writes it
  Membership membership_;
  std::vector<std::pair<int, uint64_t>> claims_;  // what this node claims now
  std::string last_desc_;
  mutable std::mutex mu_;
  std::shared_ptr<const ClusterMap> map_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> records_{0}, changes_{0};
};

}  // namespace fkv
