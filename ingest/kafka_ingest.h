// KafkaIngest: the embedded consumer thread (docs/architecture.md, "Kafka ingest"). In sidecar mode (no
// kafka-group) it assigns itself every partition of the registry's source
// topics; with kafka-group it subscribes to them in that consumer group and
// the group splits the partitions. It decodes each message through the same
// EventPlanner as FEVENT and hands the resulting updates to the shards in
// batches: one hand-off per shard per batch, never a lock a reader waits on.
// It knows nothing of Asio: the server plugs in through IngestSink.
//
// Positions: the process remembers, per partition, the offset after the last
// message it applied, and resumes there whenever the partition is assigned to
// it again, so a message is never applied twice by one process. A partition
// new to the process starts at the group's committed offset, else at the
// earliest one. Offsets are never committed as messages are applied: only a
// durable snapshot may commit them (docs/architecture.md, "Snapshots"), so the group's committed offset
// always has a saved state behind it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/repartition.h"
#include "storage/histogram.h"
#include "ingest/registry.h"
#include "storage/snapshot.h"

struct rd_kafka_message_s;  // librdkafka's types (rdkafka.h)
struct rd_kafka_s;
struct rd_kafka_topic_partition_list_s;
struct rd_kafka_topic_partition_s;

namespace fkv {

class ShardStore;

// A write command from the repartition topic (cluster mode; see
// RepartitionRecord::command), run by the partition's owner in log order.
struct LoggedCommand {
  std::vector<std::string> args;
  int64_t now_ms = 0;
  bool resp3 = false;
  std::string origin;  // the accepting node's records' source topic
  int64_t seq = 0;     // the record's number there
};

// What the consumer needs from the server. Thread-safe.
class IngestSink {
 public:
  virtual ~IngestSink() = default;
  virtual std::shared_ptr<const Registry> CurrentRegistry() = 0;
  virtual int ShardCount() = 0;  // keys map to shards by ShardOfHash (storage/shard_plan.h)
  virtual int64_t MaxEventSkewMs() = 0;
  // Runs `apply` on shard s's thread with that shard's store.
  virtual void RunOnShard(int s, std::function<void(ShardStore&)> apply) = 0;
  // The same, `micros` microseconds from now (a timer on the shard's loop).
  virtual void RunOnShardAfter(int s, int64_t micros, std::function<void(ShardStore&)> apply) = 0;
  // Commands shard s has executed so far; read on shard s's thread.
  virtual uint64_t ShardCommands(int s) = 0;
  virtual IngestStats& Stats() = 0;
  // Reads each request's joined entity on its shard (every shard in
  // parallel) and returns true when all are read (docs/architecture.md,
  // "Joins"); false, leaving them missing, when `stop` was set first (a
  // shard may be the one stopping the ingest: it must not wait for it).
  virtual bool JoinLookups(std::shared_ptr<const Registry> reg, std::vector<JoinRequest>* requests, int64_t now_ms,
                           const std::atomic<bool>& stop) = 0;
  // Cluster mode's logged writes: the shard holding every key of `cmd`, or
  // -1 when they are on several shards (or it is not a keyed write).
  virtual int LoggedShard(const LoggedCommand&) { return -1; }
  // Runs it on shard `shard`'s thread, which holds every key it touches.
  virtual void RunLogged(int /*shard*/, const LoggedCommand&) {}
  // Runs it with every shard parked; returns when it ran, or at once
  // (without running it) once `stop` is set.
  virtual void RunLoggedExclusive(const LoggedCommand&, const std::atomic<bool>& /*stop*/) {}
};

struct KafkaSettings {
  std::string brokers;        // bootstrap servers, or "mock"
  int fetch_wait_max_ms = 10;
  std::vector<std::pair<std::string, std::string>> properties;  // kafka-property
  size_t batch_max = 10000;   // messages per batch
  std::string dlq_topic;      // kafka-dlq-topic: rejected messages go there ("" = none)
  std::string group;          // kafka-group: "" = sidecar mode (assign every partition)
  // kafka-ingest-nice: the nice value added to the ingest thread and
  // librdkafka's threads, so a shard serving reads wins the CPU from them
  // (docs/operations.md, "Kafka ingest"). 0 = same as the shards.
  int nice = 10;
  // kafka-replay-rate: FREPLAY reads at most this many messages per second
  // (0 = as fast as it can, between live batches).
  uint64_t replay_rate = 0;

  // Cluster mode (docs/architecture.md, "Cluster mode"). kLocal: apply what
  // the sources bring (sidecar and group modes). kRepartition: consume the
  // registry's sources in `group`, send each accepted message as a
  // RepartitionRecord (ingest/repartition.h) to every repartition partition
  // owning one of its entity keys, and commit the source offsets to the
  // group once Kafka has the records; apply nothing. kOwner: consume
  // `repartition_topic` in `group` (cooperative-sticky); the partitions
  // assigned are the slots this node owns: apply their records,
  // de-duplicated, only for the keys of their slots.
  enum class Role { kLocal, kRepartition, kOwner };
  Role role = Role::kLocal;
  std::string repartition_topic;
  std::function<int(std::string_view key)> partition_of_key;  // the repartition partition of an entity key
  // kOwner, on the ingest thread. A partition assigned without a position
  // here is fresh: the state of its slots must go (`drop`), then it is read
  // from its beginning. Lost partitions' state goes too (`drop` false only
  // when stopping: the state stays for the shutdown snapshot).
  std::function<void(const std::vector<int>& gained, const std::vector<int>& fresh)> on_gained;
  std::function<void(const std::vector<int>& lost, bool drop)> on_lost;
  // kOwner: a gained partition is restoring until its records up to the
  // high watermark seen when it was assigned are applied; then this runs.
  std::function<void(int partition)> on_restored;
  // kOwner: a position from the snapshot for a partition not assigned
  // within this long is forgotten with its slots' state.
  int64_t orphan_grace_ms = 15000;
};

// Per-partition figures for INFO ingest.
// Lowers the calling thread's CPU priority by `nice` (Linux: a thread's own
// nice value), for the threads that must not take a CPU from the shards
// (ingest, librdkafka's, the metrics endpoint's). Failure only costs read
// latency under load: logged, not fatal.
void LowerThreadPriority(int nice);

struct PartitionFigures {
  std::string topic;
  int partition = 0;
  int64_t position = -1;  // next offset to read
  int64_t high = -1;      // high watermark
  int64_t committed = -1; // durable: acknowledged by the group, or (sidecar) in a saved snapshot
  bool assigned = false;  // currently consumed by this process
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
  bool group_mode() const { return !settings_.group.empty(); }
  // The partitions this process consumes now.
  std::vector<PartitionFigures> Partitions() const;
  // Rebalances seen (assignments and revocations), for INFO and tests.
  uint64_t rebalances() const { return rebalances_.load(std::memory_order_relaxed); }
  // Positions from a loaded snapshot: each partition resumes there (before Start).
  void SetInitialPositions(const std::vector<snap::KafkaPosition>& positions);
  // The consistent cut of a snapshot: runs cut(positions) on the ingest
  // thread between two batches, with the positions after the last message
  // handed to the shards; whatever cut posts to the shards is queued behind
  // every batch those positions cover, and before any later one. Without a
  // running ingest thread it runs at once.
  void RequestCut(std::function<void(std::vector<snap::KafkaPosition>)> cut);
  // After a snapshot holding `positions` is durable: records them as
  // committed and, in group mode, commits them to the group.
  void CommitOffsets(const std::vector<snap::KafkaPosition>& positions);
  // kOwner: the de-duplication marks at the cut (called where RequestCut's
  // callback runs), and those a loaded snapshot kept (before Start).
  std::vector<snap::DedupMark> PersistentMarks() const;
  void RestoreMarks(const std::vector<snap::DedupMark>& marks);
  // kOwner: records dropped as already applied (a fail-over's re-sends);
  // kRepartition: records sent to the repartition topic.
  uint64_t duplicates_dropped() const { return dup_dropped_.load(std::memory_order_relaxed); }
  uint64_t commands_run() const { return commands_run_.load(std::memory_order_relaxed); }  // logged writes
  uint64_t commands_parked() const { return commands_parked_.load(std::memory_order_relaxed); }  // of them, with every shard parked
  uint64_t records_sent() const { return records_sent_.load(std::memory_order_relaxed); }
  KafkaSettings::Role role() const { return settings_.role; }
  // librdkafka's rebalance callback (group mode); opaque is the KafkaIngest.
  static void OnRebalance(rd_kafka_s* rk, int err, rd_kafka_topic_partition_list_s* parts, void* opaque);
  // librdkafka's offset commit callback: records what the group acknowledged.
  static void OnCommitted(int err, rd_kafka_topic_partition_list_s* offsets, void* opaque);
  // Messages dropped because this process had already applied their offset.
  uint64_t stale_dropped() const { return stale_dropped_.load(std::memory_order_relaxed); }
  uint64_t messages() const { return messages_.load(std::memory_order_relaxed); }
  uint64_t dead_lettered() const { return dlq_sent_.load(std::memory_order_relaxed); }
  // Batches consumed (positions advanced) but not yet wholly applied: one
  // while a batch is planned, then one per shard it went to. Read after the
  // positions, 0 means every position read before is servable.
  int batches_in_flight() const { return in_flight_.load(std::memory_order_acquire); }
  // Batches handed to `shard` and not yet wholly applied by it (any thread).
  int shard_batches(int shard) const { return shard_depth_[static_cast<size_t>(shard)].load(std::memory_order_relaxed); }
  // Event-to-servable delay percentiles (ms) over the last 10,000 events.
  void DelayPercentiles(double* p50, double* p99, double* max) const;
  // Every event-to-servable delay since start (the /metrics histogram; the
  // percentiles above cover the last ones only).
  void DelayHistogram(HistogramSnapshot* h, double* sum_seconds) const;
  // On shard `shard`'s thread: applies at once every update handed to that
  // shard and not applied yet. The snapshot cut calls it before the shard's
  // section begins, so the section holds every batch the cut's positions
  // cover, however it was sliced.
  void ApplyPending(int shard, ShardStore& store) { ApplyQueued(shard, store, false); }

  // ---- Replay (FREPLAY; docs/architecture.md, "Replay") ----
  // A view with `backfill: true` is held: live ingest applies nothing to it
  // until a replay releases it. The replay starts on the ingest thread
  // between two batches: the positions live ingest has reached then are its
  // end, and from the next batch on live ingest applies to the view. The
  // replay reads the source's partitions from the first offset at or after
  // `from_ms` (offsetsForTimes, else the earliest, filtering by timestamp)
  // up to that end, and applies to the released views only the messages
  // whose Kafka timestamp is in [from_ms, to_ms). So each message reaches a
  // view once: by the replay below the end, live at or after it.
  struct ReplayRequest {
    std::string source;
    int64_t from_ms = 0;
    int64_t to_ms = 0;               // 0: no upper bound
    std::vector<std::string> views;  // empty: every held view of the source
  };
  struct ReplayFigures {
    std::string status = "none";  // none, starting, running, done, cancelled, failed, interrupted
    bool resumed = false;          // resumed from a snapshot
    ReplayRequest req;
    std::vector<std::string> views;  // the views it fills
    uint64_t read = 0;          // messages read below the end
    uint64_t applied = 0;       // events applied (in range, accepted by a view)
    uint64_t out_of_range = 0;  // messages outside [from_ms, to_ms)
    uint64_t rejected = 0;      // in range, refused by every view it fills
    int partitions = 0, partitions_done = 0;
    int64_t started_ms = 0, finished_ms = 0;
    std::string error;
  };
  // Validates and queues a replay; "" or the error text (ERR ...).
  std::string StartReplay(ReplayRequest r);
  // Stops the running replay; false when none runs. The views stay released
  // with what was replayed so far.
  bool CancelReplay();
  ReplayFigures replay() const;
  // The backfill views released so far.
  std::set<std::string> released() const;
  // What a snapshot keeps: the released views and, while a replay runs, its
  // cursor (consistent with the cut: both are taken on the ingest thread
  // between batches, or with the thread stopped).
  snap::ReplayState PersistentReplay() const;
  // Before Start: what the loaded snapshot kept; a replay it was cut in the
  // middle of resumes when ingest starts.
  void RestoreReplay(const snap::ReplayState& st);
  // A registry change (reload): released views the registry no longer has
  // are forgotten at once, so one added back is held again.
  void OnRegistryChange(const Registry& reg);

 private:
  void Run();
  // Polls up to batch_max messages into batch_ (waits up to 100 ms for the first).
  void Poll(int wait_ms);
  // Plans batch_ and hands it to the shards; empties batch_.
  void ProcessBatch(EventPlanner& planner);
  // Plans events (source index, payload) into *updates, why[i] the result
  // of item i; the lookups of the items whose source joins are done first,
  // in one round to the shards (docs/architecture.md, "Joins").
  struct PlanItem {
    int src;
    std::string_view json;
    MessageMeta msg;  // the key and tombstone flag (a table source reads them)
    int64_t now_ms = 0;    // kOwner: the clock it was first planned with (0: the batch's)
    int keep_partition = -1;  // kOwner: only the updates of this repartition partition's keys
  };
  static PlanItem ItemOf(int src, const rd_kafka_message_s* m);
  void PlanEvents(EventPlanner& planner, const std::shared_ptr<const Registry>& reg_ptr, const std::vector<PlanItem>& items, int64_t now,
                  int64_t skew, UpdateBatch* updates, IngestStats* stats, const std::vector<char>* mask,
                  std::vector<std::string>* why, std::vector<size_t>* ends = nullptr);
  // The cluster roles' halves of ProcessBatch (the messages are positioned).
  // The records' events as items and their write commands, each with the
  // number of items before it (the commands run between those events).
  void OwnerItems(const std::vector<rd_kafka_message_s*>& msgs, const Registry& reg, std::vector<PlanItem>* items,
                  std::vector<int64_t>* kafka_ts,
                  std::vector<std::pair<size_t, std::shared_ptr<const LoggedCommand>>>* commands);
  // Runs one logged write in log order (after the batches handed over).
  void RunCommand(std::shared_ptr<const LoggedCommand> cmd);
  void SendRecords(const std::vector<rd_kafka_message_s*>& item_msg, const std::vector<PlanItem>& items,
                   const std::vector<std::string>& why, const std::vector<size_t>& ends, const UpdateBatch& updates,
                   const Registry& reg, int64_t now);
  void CommitSourcePositions(bool sync);
  void CheckRestored();
  void DropOrphans();
  // Waits (bounded) until every batch handed to the shards has been applied.
  void WaitApplied();
  // Follows the registry: sidecar mode (re)assigns, group mode (re)subscribes.
  std::string SyncTopics();
  // Once a second: topics the registry names, watermarks, and the start of
  // partitions with nothing consumed yet. Only with no polled message held.
  void RefreshPartitions();
  // Under mu_, with batch_ empty: partitions with no position yet take
  // librdkafka's fetch position.
  void FillUnknownPositions();
  std::string AssignAll(const std::set<std::string>& topics);
  void OnAssigned(rd_kafka_topic_partition_list_s* parts);
  // Under mu_: the figures of an assigned partition, marked assigned.
  PartitionFigures& AssignedFigures(const rd_kafka_topic_partition_s* tp);
  void OnRevoked(rd_kafka_topic_partition_list_s* parts);
  // Counts a rejected message, keeps a sample, sends it to the DLQ topic.
  void DeadLetter(rd_kafka_message_s* m, const std::string& source, const std::string& reason, IngestStats* stats);
  void RecordDelays(const std::vector<int64_t>& kafka_ts_ms, int64_t servable_ms);
  // Hands a planned batch to the shards: on each, slices of about
  // kSliceMicros of work posted one after another, so a read queued behind
  // ingest waits for one slice, not the batch (docs/architecture.md, "Kafka
  // ingest"). While the shard also executes commands, each slice is followed
  // by a rest as long as the slice: applies take at most half of a serving
  // shard's time and the thread keeps sleeping, so the OS wakes it at once
  // for a read. `events` (accepted events) are counted as applied once every
  // slice of every shard has run.
  static constexpr int64_t kSliceMicros = 100;
  struct BatchInFlight;
  void ApplyBatch(UpdateBatch updates, const std::shared_ptr<const Registry>& reg,
                  std::vector<int64_t> kafka_ts_ms, uint64_t events);
  void HandOver(int shard, std::shared_ptr<BatchInFlight> b);  // into the shard's queue
  // On a shard's thread: applies its queue until it is empty or, when
  // `sliced`, about kSliceMicros have passed.
  void ApplyQueued(int shard, ShardStore& store, bool sliced);
  void Pump(int shard, ShardStore& store);
  // Per shard, the batches handed to it and not yet wholly applied, in
  // order, each with the position reached. Each is touched only by its
  // shard's thread.
  struct ShardQueue {
    std::deque<std::pair<std::shared_ptr<BatchInFlight>, size_t>> pending;
    bool pump_posted = false;
    uint64_t commands_seen = 0;  // the shard's command count at the last slice
  };
  std::vector<ShardQueue> shard_queues_;
  std::unique_ptr<std::atomic<int>[]> shard_depth_;  // per shard: handed over, not yet applied there

  KafkaSettings settings_;
  IngestSink* sink_;
  std::string bootstrap_;
  struct Handles;
  std::unique_ptr<Handles> h_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> messages_{0};
  std::atomic<uint64_t> dlq_sent_{0};
  std::atomic<uint64_t> rebalances_{0};
  std::atomic<uint64_t> stale_dropped_{0};  // messages at or before an applied position
  std::atomic<uint64_t> dup_dropped_{0}, records_sent_{0}, commands_run_{0}, commands_parked_{0};
  // kOwner, ingest thread only: per repartition partition, its marks; the
  // high watermarks restoring partitions must reach; when snapshot-restored
  // positions were left unassigned.
  std::map<int, DedupMarks> marks_;
  std::map<int, int64_t> restore_target_;
  std::map<int, int64_t> orphan_since_;
  int64_t last_commit_ms_ = 0;  // kRepartition
  std::atomic<uint64_t> delivery_failed_{0};  // kRepartition: records Kafka refused (commits stop)
  std::vector<rd_kafka_message_s*> batch_;  // polled, not yet planned (ingest thread only)
  EventPlanner* planner_ = nullptr;         // the ingest thread's, for the rebalance callback
  std::set<std::string> topics_;            // assigned (sidecar) or subscribed (group)
  std::mutex cut_mu_;
  bool thread_running_ = false;  // under cut_mu_
  std::vector<std::function<void(std::vector<snap::KafkaPosition>)>> cuts_;  // under cut_mu_
  std::vector<snap::KafkaPosition> KnownPositions();
  // Replay, on the ingest thread.
  struct Replay;
  std::unique_ptr<Replay> replay_;
  void StartPendingReplay();
  void ReplayStep(EventPlanner& planner);
  void EndReplay(const std::string& status, const std::string& error, bool keep_cursor = false);
  void FinishReplay();  // waits until every replayed batch is applied, then "done"
  void PruneReleased(const Registry& reg);  // under replay_mu_
  bool replay_throttled_ = false;  // kafka-replay-rate held the last step back
  void SaveCheckpoint();  // replay_'s cursor into checkpoint_
  // The live planner's view mask: held views are 0 (nullptr: none held).
  const std::vector<char>* LiveMask(const Registry& reg);
  std::vector<char> live_mask_;
  mutable std::mutex replay_mu_;
  std::set<std::string> released_;           // under replay_mu_
  bool replay_pending_ = false;              // under replay_mu_: StartReplay queued one
  bool replay_cancel_ = false;               // under replay_mu_
  ReplayFigures replay_figs_;                // under replay_mu_
  snap::ReplayState checkpoint_;             // under replay_mu_: the running replay's cursor
  snap::ReplayState resume_;                 // under replay_mu_: from the snapshot, until started
  void RunCuts();
  std::atomic<int> in_flight_{0};  // batches handed to shards, not yet applied
  // Wakes the ingest thread when in_flight_ drops (or on stop) instead of
  // polling it: a small batch is applied in ~100 us, less than a sleep.
  std::mutex flow_mu_;
  std::condition_variable flow_cv_;
  void ReleaseInFlight();
  // Waits up to `limit_ms` until in_flight_ <= n (or stop); false on timeout.
  bool WaitInFlightAtMost(int n, int64_t limit_ms);
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, PartitionFigures> parts_;
  mutable std::mutex delay_mu_;  // the shards record delays without waiting on mu_
  HistogramSnapshot delay_hist_;  // under delay_mu_
  int64_t delay_sum_ms_ = 0;      // under delay_mu_
  std::vector<double> delays_;  // ring of recent delays, ms (under delay_mu_)
  size_t delay_pos_ = 0;
};

}  // namespace fkv
