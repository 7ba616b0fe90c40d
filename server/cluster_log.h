// Cluster mode's direct writes through the repartition topic
// (docs/architecture.md, "Cluster mode"): FEVENT on any node becomes
// repartition records, sent to the partitions owning the events' entity
// keys and applied by their owners like the sources' messages; the reply
// waits until Kafka has acknowledged every record.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ingest/repartition.h"

struct rd_kafka_s;

namespace fkv {

class ClusterLog {
 public:
  // `origin`: the records' source topic, unique to this node ("FEVENT/<node id>").
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
  uint64_t sent() const { return sent_.load(std::memory_order_relaxed); }
  struct Pending;  // (the delivery callback's)

 private:
  void Run();
  std::string brokers_, topic_, origin_;
  std::vector<std::pair<std::string, std::string>> properties_;
  rd_kafka_s* producer_ = nullptr;
  std::mutex send_mu_;   // numbering and producing in one order
  int64_t last_seq_ = 0; // under send_mu_
  bool closed_ = false;  // under send_mu_: Stop has begun
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
};

}  // namespace fkv
