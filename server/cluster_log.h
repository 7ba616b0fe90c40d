// Cluster mode's direct writes through the repartition topic
// (docs/architecture.md, "Cluster mode"): FEVENT on any node becomes
// repartition records, sent to the partitions owning the events' entity
// keys and applied by their owners like the sources' messages; the reply
// waits until Kafka has acknowledged every record. A keyed write command
// (SET, HSET, FSET, ...) becomes one record, to the partition owning its
// slot (this node, which the client was routed to); its reply is what the
// command answered when this node's owner ingest ran it from the log.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ingest/repartition.h"

struct rd_kafka_s;

namespace fkv {

class ClusterLog {
 public:
  // `origin`: the records' source topic, unique to this node ("writes/<node id>").
  ClusterLog(std::string brokers, std::string topic, std::string origin,
             std::vector<std::pair<std::string, std::string>> properties);
  ~ClusterLog();
  std::string Start();  // "" or what went wrong
  void Stop();          // waits (bounded) for what was sent
  // One event to send: its source, value, and the repartition partitions it
  // goes to (those owning its entity keys).
  struct Event {
    std::string source;
    std::string_view payload;
    std::vector<int> partitions;
  };
  // Sends them, each record numbered after every earlier one of this node
  // (the owner's de-duplication mark); done("") once Kafka has all of
  // them, done(error) if it refused one (an event sent to several
  // partitions may then be applied by some of its owners). done runs on this log's thread
  // (or at once when there is nothing to send).
  void Send(const std::vector<Event>& events, int64_t now_ms, std::function<void(std::string)> done);
  // One write command to `partition`: done(reply, "") with the reply bytes
  // once this node has run it from the log (Applied), or done("", error)
  // when Kafka refused it, the partition moved before it ran here, it did
  // not run within kWriteTimeoutMs, or the server stops. done runs on this
  // log's thread or on the thread calling Applied/PartitionLost. An error
  // carries its code ("ERR ...", "TRYAGAIN ...").
  using WriteDone = std::function<void(std::string reply, std::string error)>;
  void SendCommand(int partition, std::span<const std::string_view> args, int64_t now_ms, bool resp3, WriteDone done);
  // The owner ingest ran record `seq` of this node's origin: its reply.
  void Applied(int64_t seq, std::string reply);
  // Partitions this node owns from now on / no longer owns: a write to a
  // partition not owned is refused unsent, and the writes still waiting to
  // run here are answered with an error (their next owner runs them).
  void PartitionGained(const std::vector<int>& partitions);
  void PartitionLost(const std::vector<int>& partitions);
  const std::string& origin() const { return origin_; }
  uint64_t sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t writes_pending() const;
  static constexpr int64_t kWriteTimeoutMs = 30000;
  struct Pending;  // (the delivery callback's)

 private:
  void Run();
  int64_t NextSeq();  // under send_mu_
  std::string brokers_, topic_, origin_;
  std::vector<std::pair<std::string, std::string>> properties_;
  rd_kafka_s* producer_ = nullptr;
  std::mutex send_mu_;   // numbering and producing in one order
  int64_t last_seq_ = 0; // under send_mu_
  bool closed_ = false;  // under send_mu_: Stop has begun
  struct Waiter {
    int partition;
    int64_t deadline_ms;
    WriteDone done;
  };
  void FailWaiters(const std::function<bool(int64_t, const Waiter&)>& which, const std::string& error);
  mutable std::mutex wait_mu_;
  std::map<int64_t, Waiter> waiters_;  // under wait_mu_: by record number
  std::set<int> owned_;                // under wait_mu_: partitions this node owns
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
};

}  // namespace fkv
