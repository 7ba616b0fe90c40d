// KafkaIngest: the embedded consumer thread (spec §4). In sidecar mode (no
// kafka-group) it assigns itself every partition of the registry's source
// topics from the beginning, decodes each message through the same
// EventPlanner as FEVENT and hands the resulting updates to the shards in
// batches: one hand-off per shard per batch, never a lock a reader waits on.
// It knows nothing of Asio: the server plugs in through IngestSink.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/registry.h"

struct rd_kafka_message_s;  // librdkafka's message (rdkafka.h)

namespace fkv {

class ShardStore;

// What the consumer needs from the server. Thread-safe.
class IngestSink {
 public:
  virtual ~IngestSink() = default;
  virtual std::shared_ptr<const Registry> CurrentRegistry() = 0;
  virtual int ShardCount() = 0;
  virtual int ShardOfHash(uint64_t hash) = 0;
  virtual int64_t MaxEventSkewMs() = 0;
  // Runs `apply` on shard s's thread with that shard's store.
  virtual void RunOnShard(int s, std::function<void(ShardStore&)> apply) = 0;
  virtual IngestStats& Stats() = 0;
};

struct KafkaSettings {
  std::string brokers;        // bootstrap servers, or "mock"
  int fetch_wait_max_ms = 10;
  std::vector<std::pair<std::string, std::string>> properties;  // kafka-property
  size_t batch_max = 10000;   // messages per batch
  std::string dlq_topic;      // kafka-dlq-topic: rejected messages go there ("" = none)
};

// Per-partition figures for INFO ingest.
struct PartitionFigures {
  std::string topic;
  int partition = 0;
  int64_t position = -1;  // next offset to read
  int64_t high = -1;      // high watermark
};

class KafkaIngest {
 public:
  KafkaIngest(KafkaSettings settings, IngestSink* sink);
  ~KafkaIngest();
  // Connects (starting the in-process mock cluster for "mock"), assigns the
  // partitions and starts the thread. Returns an error text or "".
  std::string Start();
  void Stop();
  std::string bootstrap() const { return bootstrap_; }
  std::vector<PartitionFigures> Partitions() const;
  uint64_t messages() const { return messages_.load(std::memory_order_relaxed); }
  uint64_t dead_lettered() const { return dlq_sent_.load(std::memory_order_relaxed); }
  // Event-to-servable delay percentiles (ms) over the last 10,000 events.
  void DelayPercentiles(double* p50, double* p99, double* max) const;

 private:
  void Run();
  std::string Assign();
  // Counts a rejected message, keeps a sample, sends it to the DLQ topic.
  void DeadLetter(rd_kafka_message_s* m, const std::string& reason, IngestStats* stats);
  void RecordDelays(const std::vector<int64_t>& kafka_ts_ms, int64_t servable_ms);
  void ApplyBatch(std::vector<ViewUpdate> updates, const std::shared_ptr<const Registry>& reg,
                  std::vector<int64_t> kafka_ts_ms);

  KafkaSettings settings_;
  IngestSink* sink_;
  std::string bootstrap_;
  struct Handles;
  std::unique_ptr<Handles> h_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> messages_{0};
  std::atomic<uint64_t> dlq_sent_{0};
  std::atomic<int> in_flight_{0};  // batches handed to shards, not yet applied
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, PartitionFigures> parts_;
  std::vector<double> delays_;  // ring of recent delays, ms
  size_t delay_pos_ = 0;
};

}  // namespace fkv
