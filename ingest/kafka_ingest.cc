// KafkaIngest: see kafka_ingest.h.
#include "ingest/kafka_ingest.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <spdlog/spdlog.h>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "storage/key_table.h"
#include "storage/shard_plan.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {
int64_t WallMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}
constexpr size_t kDelayRing = 10000;
}  // namespace

void LowerThreadPriority(int nice) {
  if (nice <= 0) return;
  pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  errno = 0;
  int cur = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (errno != 0) cur = 0;
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), std::min(19, cur + nice)) != 0)
    spdlog::debug("cannot lower a thread's priority: {}", std::strerror(errno));
}

// librdkafka's interceptors: every thread it starts for a handle runs at the
// ingest thread's priority.
static rd_kafka_resp_err_t OnThreadStart(rd_kafka_t*, rd_kafka_thread_type_t, const char*, void* opaque) {
  LowerThreadPriority(static_cast<int>(reinterpret_cast<intptr_t>(opaque)));
  return RD_KAFKA_RESP_ERR_NO_ERROR;
}
static rd_kafka_resp_err_t OnNew(rd_kafka_t* rk, const rd_kafka_conf_t*, void* opaque, char*, size_t) {
  return rd_kafka_interceptor_add_on_thread_start(rk, "featurekv-nice", &OnThreadStart, opaque);
}
static void NiceThreadsOf(rd_kafka_conf_t* conf, int nice) {
  if (nice > 0)
    rd_kafka_conf_interceptor_add_on_new(conf, "featurekv-nice", &OnNew,
                                         reinterpret_cast<void*>(static_cast<intptr_t>(nice)));
}

static void RebalanceTrampoline(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                                void* opaque) {
  KafkaIngest::OnRebalance(rk, static_cast<int>(err), parts, opaque);
}

static void CommitTrampoline(rd_kafka_t*, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* offsets,
                             void* opaque) {
  KafkaIngest::OnCommitted(static_cast<int>(err), offsets, opaque);
}

struct KafkaIngest::Handles {
  rd_kafka_t* mock_host = nullptr;
  rd_kafka_mock_cluster_t* mock = nullptr;
  rd_kafka_t* consumer = nullptr;
  rd_kafka_t* dlq = nullptr;  // producer of the dead-letter topic
  rd_kafka_t* repart = nullptr;  // kRepartition: the idempotent producer of the repartition topic
};

static void RepartitionDelivered(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
  spdlog::error("cluster: a repartition record was not delivered ({}): source offsets are no longer committed, "
                "a restart sends again from the last commit", rd_kafka_err2str(m->err));
  static_cast<std::atomic<uint64_t>*>(opaque)->fetch_add(1);
}

namespace {
std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}
}  // namespace

// A running replay (ingest thread only).
struct KafkaIngest::Replay {
  rd_kafka_t* consumer = nullptr;
  std::string source, topic;
  int64_t from_ms = 0, to_ms = 0;
  std::vector<std::string> views;
  std::map<int, int64_t> end;   // partition -> the live position at the start (exclusive)
  std::map<int, int64_t> next;  // partition -> the next offset to read
  std::set<int> done;
  uint64_t read_total = 0;  // messages below the ends read, for kafka-replay-rate
  std::chrono::steady_clock::time_point started;
  ~Replay() {
    if (consumer != nullptr) {
      rd_kafka_consumer_close(consumer);
      rd_kafka_destroy(consumer);
    }
  }
};

KafkaIngest::KafkaIngest(KafkaSettings settings, IngestSink* sink)
    : settings_(std::move(settings)), sink_(sink), h_(std::make_unique<Handles>()) {
  shard_queues_.resize(static_cast<size_t>(sink_->ShardCount()));
  shard_depth_ = std::make_unique<std::atomic<int>[]>(shard_queues_.size());
  for (size_t i = 0; i < shard_queues_.size(); i++) shard_depth_[i].store(0, std::memory_order_relaxed);
}

KafkaIngest::~KafkaIngest() { Stop(); }

std::string KafkaIngest::Start() {
  char err[512];
  auto reg = sink_->CurrentRegistry();
  if (settings_.brokers == "mock") {
    rd_kafka_conf_t* mc = rd_kafka_conf_new();
    rd_kafka_conf_set(mc, "log_level", "3", err, sizeof err);  // no CONFWARN about its missing brokers
    h_->mock_host = rd_kafka_new(RD_KAFKA_PRODUCER, mc, err, sizeof err);
    if (h_->mock_host == nullptr) return std::string("cannot start the mock cluster: ") + err;
    h_->mock = rd_kafka_mock_cluster_new(h_->mock_host, 1);
    if (h_->mock == nullptr) return "cannot start the mock cluster";
    for (const auto& s : reg->sources()) rd_kafka_mock_topic_create(h_->mock, s.topic.c_str(), 4, 1);
    if (!settings_.dlq_topic.empty()) rd_kafka_mock_topic_create(h_->mock, settings_.dlq_topic.c_str(), 1, 1);
    bootstrap_ = rd_kafka_mock_cluster_bootstraps(h_->mock);
  } else {
    bootstrap_ = settings_.brokers;
  }
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const std::string& k, const std::string& v) -> std::string {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return "kafka-property " + k + ": " + err;
    return "";
  };
  std::string e;
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"bootstrap.servers", bootstrap_},
           {"group.id", settings_.group.empty() ? "featurekv-sidecar" : settings_.group},
           // The owner's partitions are its slots: a node joining or
           // leaving moves only those that change owner.
           {"partition.assignment.strategy",
            settings_.role == KafkaSettings::Role::kOwner ? "cooperative-sticky" : "range,roundrobin"},
           {"enable.auto.commit", "false"},
           {"enable.auto.offset.store", "false"},
           {"auto.offset.reset", "earliest"},
           {"fetch.wait.max.ms", std::to_string(settings_.fetch_wait_max_ms)},
           // librdkafka 2.0 stops fetching for ~1 s once its shared queue
           // passes this: it must hold more than a second of a backlog
           // (docs/operations.md, "Backlogs").
           {"queued.min.messages", "1000000"},
           {"log_level", "3"}}) {
    if (!(e = set(k, v)).empty()) {
      rd_kafka_conf_destroy(conf);
      return e;
    }
  }
  for (auto& [k, v] : settings_.properties)
    if (!(e = set(k, v)).empty()) {
      rd_kafka_conf_destroy(conf);
      return e;
    }
  if (group_mode()) {
    // Registering a rebalance callback lets OnRevoked apply the batch in hand
    // before the partitions go, and OnAssigned resume at our own positions.
    rd_kafka_conf_set_rebalance_cb(conf, &RebalanceTrampoline);
    rd_kafka_conf_set_opaque(conf, this);
    rd_kafka_conf_set_offset_commit_cb(conf, &CommitTrampoline);
  }
  NiceThreadsOf(conf, settings_.nice);
  h_->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (h_->consumer == nullptr) return std::string("cannot create the Kafka consumer: ") + err;
  rd_kafka_poll_set_consumer(h_->consumer);
  if (!settings_.dlq_topic.empty()) {
    rd_kafka_conf_t* pc = rd_kafka_conf_new();
    rd_kafka_conf_set(pc, "bootstrap.servers", bootstrap_.c_str(), err, sizeof err);
    rd_kafka_conf_set(pc, "linger.ms", "5", err, sizeof err);
    rd_kafka_conf_set(pc, "log_level", "3", err, sizeof err);
    NiceThreadsOf(pc, settings_.nice);
    h_->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof err);
    if (h_->dlq == nullptr) return std::string("cannot create the dead-letter producer: ") + err;
  }
  if (settings_.role == KafkaSettings::Role::kRepartition) {
    rd_kafka_conf_t* pc = rd_kafka_conf_new();
    for (const auto& [k, v] : settings_.properties)  // kafka-property (security settings...); what follows wins
      if (rd_kafka_conf_set(pc, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(pc);
        return "kafka-property " + k + ": " + err;
      }
    // No record may fail while a later one of the same source partition
    // is delivered: the owner's mark would pass it (docs/architecture.md,
    // "Cluster mode"). So records never time out, and a failure is fatal
    // to the producer (every later record fails too).
    for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", bootstrap_},
                                                                        {"enable.idempotence", "true"},
                                                                        {"enable.gapless.guarantee", "true"},
                                                                        {"message.timeout.ms", "0"},
                                                                        {"linger.ms", "2"},
                                                                        {"log_level", "3"}})
      rd_kafka_conf_set(pc, k.c_str(), v.c_str(), err, sizeof err);
    rd_kafka_conf_set_dr_msg_cb(pc, &RepartitionDelivered);
    rd_kafka_conf_set_opaque(pc, &delivery_failed_);
    NiceThreadsOf(pc, settings_.nice);
    h_->repart = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof err);
    if (h_->repart == nullptr) return std::string("cannot create the repartition producer: ") + err;
  }
  std::string a = SyncTopics();
  if (!a.empty()) spdlog::warn("kafka: {} (will retry)", a);
  {
    std::lock_guard lk(cut_mu_);
    thread_running_ = true;
  }
  thread_ = std::thread([this] { Run(); });
  return "";
}

void KafkaIngest::SetInitialPositions(const std::vector<snap::KafkaPosition>& positions) {
  std::lock_guard lk(mu_);
  for (const auto& p : positions) {
    if (settings_.role == KafkaSettings::Role::kOwner) {
      if (p.topic != settings_.repartition_topic) continue;  // (a snapshot of another mode)
      orphan_since_[p.partition] = WallMs();
    }
    PartitionFigures& f = parts_[{p.topic, p.partition}];
    f.topic = p.topic;
    f.partition = p.partition;
    f.position = p.offset;
    f.committed = p.offset;  // it is durable: it came from a snapshot
  }
}

std::vector<snap::KafkaPosition> KafkaIngest::KnownPositions() {
  std::lock_guard lk(mu_);
  std::vector<snap::KafkaPosition> v;
  for (auto& [k, f] : parts_)
    if (f.position >= 0) v.push_back({f.topic, f.partition, f.position});
  return v;
}

void KafkaIngest::RequestCut(std::function<void(std::vector<snap::KafkaPosition>)> cut) {
  {
    std::lock_guard lk(cut_mu_);
    if (thread_running_) {
      cuts_.push_back(std::move(cut));
      return;
    }
  }
  cut(KnownPositions());
}

void KafkaIngest::RunCuts() {
  std::vector<std::function<void(std::vector<snap::KafkaPosition>)>> cuts;
  {
    std::lock_guard lk(cut_mu_);
    cuts.swap(cuts_);
  }
  for (auto& c : cuts) c(KnownPositions());
}

void KafkaIngest::CommitOffsets(const std::vector<snap::KafkaPosition>& positions) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(positions.size()) + 1);
  {
    std::lock_guard lk(mu_);
    for (const auto& p : positions) {
      auto it = parts_.find({p.topic, p.partition});
      if (it == parts_.end()) continue;
      if (!group_mode()) it->second.committed = p.offset;  // durable in the snapshot: that is all there is
      else if (it->second.assigned)
        rd_kafka_topic_partition_list_add(list, p.topic.c_str(), p.partition)->offset = p.offset;
    }
  }
  if (group_mode() && list->cnt > 0 && h_->consumer != nullptr) {
    rd_kafka_resp_err_t e = rd_kafka_commit(h_->consumer, list, 1);  // async: never blocks the caller
    if (e) spdlog::warn("kafka: commit of {} offset(s) failed: {}", list->cnt, rd_kafka_err2str(e));
  }
  rd_kafka_topic_partition_list_destroy(list);
}

std::string KafkaIngest::SyncTopics() {
  std::set<std::string> want;
  if (settings_.role == KafkaSettings::Role::kOwner) want.insert(settings_.repartition_topic);
  else
    for (const auto& s : sink_->CurrentRegistry()->sources()) want.insert(s.topic);
  if (want == topics_) return "";
  if (!group_mode()) return AssignAll(want);
  rd_kafka_resp_err_t err;
  if (want.empty()) {
    err = rd_kafka_unsubscribe(h_->consumer);
  } else {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(want.size()));
    for (const auto& t : want) rd_kafka_topic_partition_list_add(list, t.c_str(), RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(h_->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
  }
  if (err) return std::string("subscribe failed: ") + rd_kafka_err2str(err);
  std::string names;
  for (const auto& t : want) names += (names.empty() ? "" : ", ") + t;
  spdlog::info("kafka: group {} subscribed to {} topic(s) [{}] at {}", settings_.group, want.size(), names, bootstrap_);
  topics_ = want;
  return "";
}

// Sidecar mode: every partition of every wanted topic, resuming at our own
// positions; topics the registry no longer names are dropped with theirs.
std::string KafkaIngest::AssignAll(const std::set<std::string>& want) {
  std::string missing;
  std::set<std::string> have;
  for (const auto& t : want) {
    if (topics_.count(t)) {
      have.insert(t);
      continue;
    }
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(h_->consumer, t.c_str(), nullptr);
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(h_->consumer, 0, rkt, &md, 500);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topics[0].partition_cnt > 0) {
      std::lock_guard lk(mu_);
      for (int p = 0; p < md->topics[0].partition_cnt; p++) {
        PartitionFigures& f = parts_[{t, md->topics[0].partitions[p].id}];
        f.topic = t;
        f.partition = md->topics[0].partitions[p].id;
      }
      have.insert(t);
    } else {
      missing += (missing.empty() ? "" : ", ") + t;
    }
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
  }
  if (have != topics_) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(parts_.size()) + 1);
    size_t n = 0;
    {
      std::lock_guard lk(mu_);
      for (auto it = parts_.begin(); it != parts_.end();) {
        if (!have.count(it->second.topic)) {
          it = parts_.erase(it);  // the registry dropped this topic
          continue;
        }
        PartitionFigures& f = it->second;
        f.assigned = true;
        auto* tp = rd_kafka_topic_partition_list_add(list, f.topic.c_str(), f.partition);
        tp->offset = f.position >= 0 ? f.position : RD_KAFKA_OFFSET_BEGINNING;
        n++;
        ++it;
      }
    }
    // The batch in hand may hold messages of a dropped topic: apply it first.
    if (planner_ != nullptr) ProcessBatch(*planner_);
    rd_kafka_resp_err_t err = rd_kafka_assign(h_->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err) return std::string("assign failed: ") + rd_kafka_err2str(err);
    topics_ = have;
    spdlog::info("kafka: consuming {} partition(s) of {} topic(s) from {}", n, have.size(), bootstrap_);
  }
  return missing.empty() ? "" : "topic(s) not found yet: " + missing;
}

void KafkaIngest::OnRebalance(rd_kafka_s* rk, int err, rd_kafka_topic_partition_list_s* parts, void* opaque) {
  auto* self = static_cast<KafkaIngest*>(opaque);
  self->rebalances_.fetch_add(1, std::memory_order_relaxed);
  bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    self->OnAssigned(parts);
    rd_kafka_error_t* e = nullptr;
    if (cooperative) e = rd_kafka_incremental_assign(rk, parts);
    else if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR) spdlog::error("kafka: assign failed");
    if (e) {
      spdlog::error("kafka: incremental assign failed: {}", rd_kafka_error_string(e));
      rd_kafka_error_destroy(e);
    }
    return;
  }
  // Revoked (or an error): apply what we hold of these partitions, then let go.
  self->OnRevoked(parts);
  if (cooperative) {
    if (rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, parts)) rd_kafka_error_destroy(e);
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

void KafkaIngest::OnCommitted(int err, rd_kafka_topic_partition_list_s* offsets, void* opaque) {
  auto* self = static_cast<KafkaIngest*>(opaque);
  if (err) spdlog::warn("kafka: offset commit failed: {}", rd_kafka_err2str(static_cast<rd_kafka_resp_err_t>(err)));
  std::lock_guard lk(self->mu_);
  for (int i = 0; offsets && i < offsets->cnt; i++) {
    const rd_kafka_topic_partition_t& tp = offsets->elems[i];
    auto it = self->parts_.find({tp.topic, tp.partition});
    if (it != self->parts_.end() && tp.err == RD_KAFKA_RESP_ERR_NO_ERROR && tp.offset >= 0)
      it->second.committed = tp.offset;  // acknowledged by the group coordinator
  }
}

PartitionFigures& KafkaIngest::AssignedFigures(const rd_kafka_topic_partition_s* tp) {
  PartitionFigures& f = parts_[{tp->topic, tp->partition}];
  f.topic = tp->topic;
  f.partition = tp->partition;
  f.assigned = true;
  return f;
}

void KafkaIngest::OnAssigned(rd_kafka_topic_partition_list_s* parts) {
  if (settings_.role == KafkaSettings::Role::kOwner) {
    // A partition this process holds a position of has its slots' state
    // here up to that position: resume there. Any other starts from the
    // beginning of the log, on no state (docs/architecture.md, "Cluster mode").
    std::vector<int> gained, fresh;
    {
      std::lock_guard lk(mu_);
      for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t* tp = &parts->elems[i];
        PartitionFigures& f = AssignedFigures(tp);
        orphan_since_.erase(tp->partition);
        gained.push_back(tp->partition);
        if (f.position >= 0) {
          tp->offset = f.position;
        } else {
          tp->offset = RD_KAFKA_OFFSET_BEGINNING;
          f.position = 0;
          marks_[tp->partition].Clear();
          fresh.push_back(tp->partition);
        }
      }
    }
    if (settings_.on_gained) settings_.on_gained(gained, fresh);  // (not servable until restored)
    for (int p : gained) {
      int64_t lo = 0, hi = -1;
      if (rd_kafka_query_watermark_offsets(h_->consumer, settings_.repartition_topic.c_str(), p, &lo, &hi, 5000) !=
          RD_KAFKA_RESP_ERR_NO_ERROR)
        hi = INT64_MAX;  // unknown: restoring until RefreshPartitions learns it
      restore_target_[p] = hi;
    }
    spdlog::info("cluster: {} repartition partition(s) assigned, {} of them new to this node (restored from the log)",
                 gained.size(), fresh.size());
    return;
  }
  // Partitions new to this process start at the group's committed offset
  // (a durable snapshot of some member holds everything before it), else at
  // the earliest one. Asked here, once per assignment, so the position is
  // known (INFO, snapshots) before the first message arrives.
  rd_kafka_topic_partition_list_t* fresh = rd_kafka_topic_partition_list_new(parts->cnt);
  {
    std::lock_guard lk(mu_);
    for (int i = 0; i < parts->cnt; i++) {
      auto it = parts_.find({parts->elems[i].topic, parts->elems[i].partition});
      if (it == parts_.end() || it->second.position < 0)
        rd_kafka_topic_partition_list_add(fresh, parts->elems[i].topic, parts->elems[i].partition);
    }
  }
  if (fresh->cnt > 0 && rd_kafka_committed(h_->consumer, fresh, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
    for (int i = 0; i < fresh->cnt; i++) fresh->elems[i].offset = RD_KAFKA_OFFSET_INVALID;  // librdkafka decides
  std::lock_guard lk(mu_);
  int resumed = 0, committed = 0;
  for (int i = 0; i < parts->cnt; i++) {
    rd_kafka_topic_partition_t* tp = &parts->elems[i];
    PartitionFigures& f = AssignedFigures(tp);
    if (f.position >= 0) {
      tp->offset = f.position;  // what we applied is in our store: never twice
      resumed++;
      continue;
    }
    rd_kafka_topic_partition_t* c = rd_kafka_topic_partition_list_find(fresh, tp->topic, tp->partition);
    if (c && c->offset >= 0) {
      tp->offset = f.position = f.committed = c->offset;
      committed++;
    } else if (c && c->offset == RD_KAFKA_OFFSET_INVALID) {
      tp->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
  }
  rd_kafka_topic_partition_list_destroy(fresh);
  spdlog::info("kafka: group {} assigned {} partition(s): {} resume at this process's own position, {} at the "
               "group's committed offset, {} from the beginning",
               settings_.group, parts->cnt, resumed, committed, parts->cnt - resumed - committed);
}

void KafkaIngest::OnRevoked(rd_kafka_topic_partition_list_s* parts) {
  // Called inside rd_kafka_consumer_poll on the ingest thread (or in Stop's
  // close): the messages polled so far were delivered while we owned their
  // partitions, so they are applied now, before the partitions go.
  if (planner_ != nullptr) ProcessBatch(*planner_);
  WaitApplied();
  if (settings_.role == KafkaSettings::Role::kRepartition) CommitSourcePositions(true);
  if (settings_.role == KafkaSettings::Role::kOwner) {
    // The slots go to another node, which restores them from the log: what
    // this one holds of them is forgotten (kept when stopping: the shutdown
    // snapshot was cut before, and the state leaves with the process).
    const bool drop = !stop_.load();
    std::vector<int> lost;
    {
      std::lock_guard lk(mu_);
      for (int i = 0; i < parts->cnt; i++) {
        const int p = parts->elems[i].partition;
        lost.push_back(p);
        auto it = parts_.find({parts->elems[i].topic, p});
        if (it == parts_.end()) continue;
        if (drop) {
          parts_.erase(it);
          marks_.erase(p);
        } else {
          it->second.assigned = false;
        }
      }
    }
    for (int p : lost) restore_target_.erase(p);
    if (settings_.on_lost) settings_.on_lost(lost, drop);
    spdlog::info("cluster: {} repartition partition(s) revoked", lost.size());
    return;
  }
  std::lock_guard lk(mu_);
  for (int i = 0; i < parts->cnt; i++) {
    auto it = parts_.find({parts->elems[i].topic, parts->elems[i].partition});
    if (it != parts_.end()) it->second.assigned = false;  // its position stays: resume there if it comes back
  }
  spdlog::info("kafka: group {} revoked {} partition(s)", settings_.group, parts->cnt);
}

void KafkaIngest::Poll(int wait_ms) {
  if (rd_kafka_message_t* m = rd_kafka_consumer_poll(h_->consumer, wait_ms)) batch_.push_back(m);
  while (!batch_.empty() && batch_.size() < settings_.batch_max) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(h_->consumer, 0);
    if (m == nullptr) break;
    batch_.push_back(m);
  }
}

void KafkaIngest::WaitApplied() {
  // Not while stopping: Stop may run on a shard thread, and what was posted
  // is applied by the shards before they stop anyway.
  WaitInFlightAtMost(0, 5000);
}

void KafkaIngest::RefreshPartitions() {
  std::string e = SyncTopics();
  if (!e.empty()) spdlog::debug("kafka: {}", e);
  std::lock_guard lk(mu_);
  for (auto& [k, f] : parts_) {
    int64_t lo = 0, hi = 0;
    if (f.assigned && rd_kafka_get_watermark_offsets(h_->consumer, f.topic.c_str(), f.partition, &lo, &hi) ==
                          RD_KAFKA_RESP_ERR_NO_ERROR)
      f.high = std::max(hi, f.position);  // the cached watermark may trail what we consumed
  }
  FillUnknownPositions();
}

void KafkaIngest::FillUnknownPositions() {
  rd_kafka_topic_partition_list_t* unknown = rd_kafka_topic_partition_list_new(4);
  for (auto& [k, f] : parts_)
    if (f.assigned && f.position < 0) rd_kafka_topic_partition_list_add(unknown, f.topic.c_str(), f.partition);
  // Nothing consumed yet: the fetch position (from the group's committed
  // offset or the earliest one) is where this process's state begins.
  if (unknown->cnt > 0 && rd_kafka_position(h_->consumer, unknown) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < unknown->cnt; i++) {
      auto it = parts_.find({unknown->elems[i].topic, unknown->elems[i].partition});
      if (it != parts_.end() && unknown->elems[i].offset >= 0) it->second.position = unknown->elems[i].offset;
    }
  }
  rd_kafka_topic_partition_list_destroy(unknown);
}

void KafkaIngest::Run() {
  pthread_setname_np(pthread_self(), "fkv-ingest");  // top -H, /proc/<pid>/task/*/comm
  LowerThreadPriority(settings_.nice);
  EventPlanner planner;
  planner_ = &planner;
  auto last_check = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    Poll(replay_ && !replay_throttled_ ? 0 : replay_ ? 10 : 100);  // a replay reads while live ingest has nothing
    ProcessBatch(planner);
    if (!restore_target_.empty()) CheckRestored();
    // Once a second, with nothing polled held back (ProcessBatch emptied
    // batch_): librdkafka's position counts every message it returned, so
    // asked while polled messages wait it would pass them, and they would be
    // dropped as already applied.
    auto now_tp = std::chrono::steady_clock::now();
    if (now_tp - last_check > std::chrono::seconds(1)) {
      last_check = now_tp;
      RefreshPartitions();
      if (settings_.role == KafkaSettings::Role::kOwner) DropOrphans();
    }
    if (settings_.role == KafkaSettings::Role::kRepartition) CommitSourcePositions(false);
    StartPendingReplay();  // between batches: its end is what live ingest handed over
    if (replay_) ReplayStep(planner);
    RunCuts();  // between batches: the snapshot cut sees exactly what was handed over
    // Bounded hand-off: do not run ahead of the shards by more than a few batches.
    WaitInFlightAtMost(2 * sink_->ShardCount(), 10000);
  }
  ProcessBatch(planner);  // what was polled is applied, not lost
  if (replay_) EndReplay("interrupted", "server shutting down (it resumes from the last snapshot)");
  planner_ = nullptr;
  {
    std::lock_guard lk(cut_mu_);
    thread_running_ = false;
  }
  RunCuts();
}

void KafkaIngest::ProcessBatch(EventPlanner& planner) {
  if (batch_.empty()) return;
  in_flight_.fetch_add(1);  // before any position moves: held until the shards have the batch
  std::vector<rd_kafka_message_t*> msgs;
  msgs.swap(batch_);
  auto reg = sink_->CurrentRegistry();
  int64_t now = WallMs();
  int64_t skew = sink_->MaxEventSkewMs();
  IngestStats& stats = sink_->Stats();
  const std::vector<char>* mask = LiveMask(*reg);
  UpdateBatch updates;
  std::vector<int64_t> kafka_ts;
  uint64_t applied = 0;
  // Positions first, one short lock per run of messages of one partition
  // (INFO takes the same lock on a shard: it must never wait for a whole
  // batch). Our own position is the truth: a message before it is already in
  // the store (or its partition is no longer ours) and must not count again.
  // Dropped messages become nullptr.
  for (size_t i = 0; i < msgs.size();) {
    rd_kafka_message_t* first = msgs[i];
    if (first->err) {
      if (first->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) spdlog::warn("kafka: {}", rd_kafka_message_errstr(first));
      rd_kafka_message_destroy(first);
      msgs[i++] = nullptr;
      continue;
    }
    size_t j = i + 1;  // the run: the same topic and partition, no errors
    while (j < msgs.size() && !msgs[j]->err && msgs[j]->rkt == first->rkt && msgs[j]->partition == first->partition)
      j++;
    std::lock_guard lk(mu_);
    auto it = parts_.find({rd_kafka_topic_name(first->rkt), first->partition});
    PartitionFigures* f = it == parts_.end() || !it->second.assigned ? nullptr : &it->second;
    for (; i < j; i++) {
      if (f == nullptr || msgs[i]->offset < f->position) {
        stale_dropped_.fetch_add(1, std::memory_order_relaxed);
        rd_kafka_message_destroy(msgs[i]);
        msgs[i] = nullptr;
        continue;
      }
      f->position = msgs[i]->offset + 1;
    }
    // The fetch just brought the partition's watermark into librdkafka's
    // cache: lag (INFO, /metrics, /readyz) is known from the first batch on,
    // not only at the once-a-second refresh.
    int64_t lo = 0, hi = 0;
    if (f != nullptr && rd_kafka_get_watermark_offsets(h_->consumer, f->topic.c_str(), f->partition, &lo, &hi) ==
                            RD_KAFKA_RESP_ERR_NO_ERROR)
      f->high = std::max(hi, f->position);
  }
  std::vector<PlanItem> items;
  std::vector<rd_kafka_message_t*> item_msg;
  if (settings_.role == KafkaSettings::Role::kOwner) {
    std::vector<std::pair<size_t, std::shared_ptr<const LoggedCommand>>> commands;
    OwnerItems(msgs, *reg, &items, &kafka_ts, &commands);
    // The events between two write commands are one batch, handed over
    // before the command runs: each shard applies them in log order.
    size_t from = 0;
    std::vector<PlanItem> part;
    std::vector<std::string> why;
    auto apply_items = [&](size_t to, bool last) {
      if (to == from && !last) return;
      const std::vector<PlanItem>* segment = &items;
      if (from != 0 || to != items.size()) {
        part.assign(items.begin() + static_cast<std::ptrdiff_t>(from), items.begin() + static_cast<std::ptrdiff_t>(to));
        segment = &part;
      }
      UpdateBatch batch;
      PlanEvents(planner, reg, *segment, now, skew, &batch, &stats, mask, &why);
      uint64_t ok = 0;
      for (size_t i = 0; i < segment->size(); i++) {
        if (why[i].empty()) ok++;
        else stats.Reject(reg->sources()[static_cast<size_t>((*segment)[i].src)].name, why[i]);
      }
      ApplyBatch(std::move(batch), reg, last ? std::move(kafka_ts) : std::vector<int64_t>{}, ok);
      from = to;
    };
    for (auto& [before, cmd] : commands) {
      apply_items(before, false);
      RunCommand(std::move(cmd));
    }
    apply_items(items.size(), true);
    for (rd_kafka_message_t* m : msgs)
      if (m != nullptr) rd_kafka_message_destroy(m);
    return ReleaseInFlight();
  }
  for (rd_kafka_message_t* m : msgs) {
    if (m == nullptr) continue;
    const char* topic = rd_kafka_topic_name(m->rkt);
    messages_.fetch_add(1, std::memory_order_relaxed);
    bool planned = false;
    for (size_t si = 0; si < reg->sources().size(); si++) {
      if (reg->sources()[si].topic != topic) continue;
      planned = true;
      items.push_back(ItemOf(static_cast<int>(si), m));
      item_msg.push_back(m);
    }
    if (!planned) DeadLetter(m, topic, "no_source", &stats);
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    if (ts > 0) kafka_ts.push_back(ts);
  }
  std::vector<std::string> why;
  if (settings_.role == KafkaSettings::Role::kRepartition) {
    // Planned here only to learn each event's entity keys (the owners count
    // what their views skip): nothing is applied on this node.
    std::vector<size_t> ends;
    PlanEvents(planner, reg, items, now, skew, &updates, nullptr, mask, &why, &ends);
    for (size_t i = 0; i < items.size(); i++)
      if (!why[i].empty())
        DeadLetter(item_msg[i], reg->sources()[static_cast<size_t>(items[i].src)].name, why[i], &stats);
    SendRecords(item_msg, items, why, ends, updates, *reg, now);
    for (rd_kafka_message_t* m : msgs)
      if (m != nullptr) rd_kafka_message_destroy(m);
    if (h_->dlq) rd_kafka_poll(h_->dlq, 0);
    return ReleaseInFlight();
  }
  PlanEvents(planner, reg, items, now, skew, &updates, &stats, mask, &why);
  for (size_t i = 0; i < items.size(); i++) {
    if (why[i].empty()) applied++;
    else DeadLetter(item_msg[i], reg->sources()[static_cast<size_t>(items[i].src)].name, why[i], &stats);
  }
  for (rd_kafka_message_t* m : msgs)
    if (m != nullptr) rd_kafka_message_destroy(m);
  if (h_->dlq) rd_kafka_poll(h_->dlq, 0);
  ApplyBatch(std::move(updates), reg, std::move(kafka_ts), applied);
  ReleaseInFlight();
}

KafkaIngest::PlanItem KafkaIngest::ItemOf(int src, const rd_kafka_message_t* m) {
  PlanItem it{src, std::string_view(static_cast<const char*>(m->payload), m->payload ? m->len : 0), {}};
  it.msg.tombstone = m->payload == nullptr;
  it.msg.has_key = m->key != nullptr && m->key_len > 0;
  if (it.msg.has_key) it.msg.key = std::string_view(static_cast<const char*>(m->key), m->key_len);
  return it;
}

void KafkaIngest::PlanEvents(EventPlanner& planner, const std::shared_ptr<const Registry>& reg_ptr,
                             const std::vector<PlanItem>& items, int64_t now, int64_t skew, UpdateBatch* updates,
                             IngestStats* stats, const std::vector<char>* mask, std::vector<std::string>* why,
                             std::vector<size_t>* ends) {
  const Registry& reg = *reg_ptr;
  auto joined = [&](const PlanItem& it) { return reg.sources()[static_cast<size_t>(it.src)].has_joins; };
  thread_local BatchJoins joins;
  joins.Clear();
  if (std::any_of(items.begin(), items.end(), joined)) {
    UpdateBatch scratch;  // the collecting pass: only the lookups it asks for count
    for (const PlanItem& it : items)
      if (joined(it)) {
        planner.Plan(reg, it.src, it.json, now, skew, &scratch, nullptr, mask, &joins, &it.msg);
        scratch.clear();
      }
    // Stopping (a shard may be waiting for this thread): the lookups left
    // unanswered are missing, for a state no snapshot will hold (a shutdown
    // snapshot is cut before the ingest stops).
    if (!joins.requests.empty() && !sink_->JoinLookups(reg_ptr, &joins.requests, now, stop_))
      spdlog::warn("kafka: stopping: joins of the last batch left unanswered");
    joins.collecting = false;
  }
  why->clear();
  for (const PlanItem& it : items) {
    const size_t before = updates->size();
    why->push_back(planner.Plan(reg, it.src, it.json, it.now_ms != 0 ? it.now_ms : now, skew, updates, stats, mask,
                                joined(it) ? &joins : nullptr, &it.msg));
    if (it.keep_partition >= 0)
      updates->KeepFrom(before, [&](std::string_view key) { return settings_.partition_of_key(key) == it.keep_partition; });
    if (ends != nullptr) ends->push_back(updates->size());
  }
  joins.Clear();
}

void KafkaIngest::ReleaseInFlight() {
  in_flight_.fetch_sub(1);
  { std::lock_guard lk(flow_mu_); }  // a waiter between its check and its wait gets the notify
  flow_cv_.notify_all();
}

bool KafkaIngest::WaitInFlightAtMost(int n, int64_t limit_ms) {
  std::unique_lock lk(flow_mu_);
  return flow_cv_.wait_for(lk, std::chrono::milliseconds(limit_ms),
                           [&] { return in_flight_.load() <= n || stop_.load(); });
}

void KafkaIngest::DeadLetter(rd_kafka_message_s* m, const std::string& source, const std::string& reason,
                             IngestStats* stats) {
  stats->Reject(source, reason);
  const char* topic = rd_kafka_topic_name(m->rkt);
  std::string origin = std::string(topic) + "/" + std::to_string(m->partition) + "@" + std::to_string(m->offset);
  stats->Sample(RejectSample{reason, origin, WallMs(),
                             std::string(static_cast<const char*>(m->payload), m->payload ? m->len : 0)});
  if (h_->dlq == nullptr) return;
  std::string part = std::to_string(m->partition), off = std::to_string(m->offset);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      h_->dlq, RD_KAFKA_V_TOPIC(settings_.dlq_topic.c_str()), RD_KAFKA_V_KEY(m->key, m->key_len),
      RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADER("featurekv-reason", reason.data(), static_cast<ssize_t>(reason.size())),
      RD_KAFKA_V_HEADER("featurekv-topic", topic, -1),
      RD_KAFKA_V_HEADER("featurekv-partition", part.data(), static_cast<ssize_t>(part.size())),
      RD_KAFKA_V_HEADER("featurekv-offset", off.data(), static_cast<ssize_t>(off.size())), RD_KAFKA_V_END);
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR) dlq_sent_.fetch_add(1, std::memory_order_relaxed);
  else spdlog::warn("kafka: dead-letter produce failed: {}", rd_kafka_err2str(e));
}

struct KafkaIngest::BatchInFlight {
  std::shared_ptr<const ShardPlan> plan;
  UpdateBatch updates;
  std::shared_ptr<const Registry> reg;  // the updates point into it: it lives until they are applied
  std::vector<int64_t> kafka_ts;
  uint64_t events = 0;
  std::vector<IngestStatsViewCount> by_view;  // counted when the batch is servable
  std::atomic<int> shards_left{0};
  std::shared_ptr<const LoggedCommand> cmd;  // else: a logged write to run (no updates)
};

void KafkaIngest::ApplyBatch(UpdateBatch updates, const std::shared_ptr<const Registry>& reg,
                             std::vector<int64_t> kafka_ts, uint64_t events) {
  auto b = std::make_shared<BatchInFlight>();
  b->plan = std::make_shared<const ShardPlan>(updates.PlanShards(sink_->ShardCount()));
  b->updates = std::move(updates);
  b->reg = reg;
  b->kafka_ts = std::move(kafka_ts);
  b->events = events;
  b->by_view = b->updates.CountByView();
  b->shards_left = static_cast<int>(b->plan->shards().size());
  if (b->plan->shards().empty()) {
    sink_->Stats().events_applied.fetch_add(events, std::memory_order_relaxed);
    return RecordDelays(b->kafka_ts, WallMs());
  }
  for (int s : b->plan->shards()) HandOver(s, b);
}

void KafkaIngest::HandOver(int s, std::shared_ptr<BatchInFlight> b) {
  in_flight_.fetch_add(1);
  shard_depth_[static_cast<size_t>(s)].fetch_add(1, std::memory_order_relaxed);
  sink_->RunOnShard(s, [this, b = std::move(b), s](ShardStore& store) {
    ShardQueue& q = shard_queues_[static_cast<size_t>(s)];
    q.pending.emplace_back(b, 0);
    if (!q.pump_posted) {
      q.pump_posted = true;
      Pump(s, store);
    }
  });
}

void KafkaIngest::RunCommand(std::shared_ptr<const LoggedCommand> cmd) {
  if (const int s = sink_->LoggedShard(*cmd); s >= 0) {
    auto b = std::make_shared<BatchInFlight>();
    b->cmd = std::move(cmd);
    b->shards_left = 1;
    return HandOver(s, std::move(b));
  }
  // Keys on several shards: once everything before it is applied (this
  // batch holds one unit of in_flight_), with every shard parked.
  while (!WaitInFlightAtMost(1, 1000) && !stop_.load()) {
  }
  if (stop_.load()) return;  // (the shutdown snapshot was cut before)
  // Counted before it runs: its reply (sent from inside the run) never
  // reaches a client before the count INFO shows.
  commands_run_.fetch_add(1, std::memory_order_relaxed);
  commands_parked_.fetch_add(1, std::memory_order_relaxed);
  sink_->RunLoggedExclusive(*cmd, stop_);
}

void KafkaIngest::Pump(int shard, ShardStore& store) {
  auto t0 = std::chrono::steady_clock::now();
  ApplyQueued(shard, store, true);
  ShardQueue& q = shard_queues_[static_cast<size_t>(shard)];
  if (q.pending.empty()) {
    q.pump_posted = false;
    return;
  }
  auto next = [this, shard](ShardStore& st) { Pump(shard, st); };
  uint64_t commands = sink_->ShardCommands(shard);
  if (commands != q.commands_seen) {  // serving too: rest as long as the slice took
    q.commands_seen = commands;
    auto used = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    return sink_->RunOnShardAfter(shard, std::max<int64_t>(1, used.count()), next);
  }
  // Otherwise the next slice goes behind whatever was queued meanwhile.
  sink_->RunOnShard(shard, next);
}

void KafkaIngest::ApplyQueued(int shard, ShardStore& store, bool sliced) {
  using Clock = std::chrono::steady_clock;
  constexpr size_t kCheckEvery = 16;  // updates between two clock reads
  ShardQueue& q = shard_queues_[static_cast<size_t>(shard)];
  IngestStats& stats = sink_->Stats();
  int64_t now = WallMs();
  auto deadline = Clock::now() + std::chrono::microseconds(kSliceMicros);
  bool out_of_time = false;
  while (!out_of_time && !q.pending.empty()) {
    auto& [b, from] = q.pending.front();
    if (b->cmd) {  // a logged write, in its place among the batches
      commands_run_.fetch_add(1, std::memory_order_relaxed);  // (before: see RunCommand)
      sink_->RunLogged(shard, *b->cmd);
      q.pending.pop_front();
      shard_depth_[static_cast<size_t>(shard)].fetch_sub(1, std::memory_order_relaxed);
      ReleaseInFlight();
      continue;
    }
    auto keys = b->plan->indexes(shard);
    size_t k = from;
    while (k < keys.size()) {
      size_t stop = std::min(keys.size(), k + kCheckEvery);
      for (; k < stop; k++) {
        PrefetchAhead(store, b->updates, keys, k);
        if (!ApplyViewUpdate(store, b->updates, keys[k], now, &stats)) stats.ViewSkip(*b->updates[keys[k]].view_name, "wrongtype");
      }
      if (sliced && Clock::now() >= deadline) {
        out_of_time = true;
        break;
      }
    }
    from = k;
    if (k < keys.size()) break;
    if (b->shards_left.fetch_sub(1) == 1) {  // the whole batch is servable now
      stats.events_applied.fetch_add(b->events, std::memory_order_relaxed);
      stats.ViewsApplied(b->by_view);
      RecordDelays(b->kafka_ts, now);
    }
    q.pending.pop_front();
    shard_depth_[static_cast<size_t>(shard)].fetch_sub(1, std::memory_order_relaxed);
    ReleaseInFlight();
  }
}

void KafkaIngest::RecordDelays(const std::vector<int64_t>& kafka_ts_ms, int64_t servable_ms) {
  std::lock_guard lk(delay_mu_);
  for (int64_t t : kafka_ts_ms) {
    double d = static_cast<double>(servable_ms - t);
    delay_hist_.Add(static_cast<uint64_t>(std::max<int64_t>(0, servable_ms - t)) * 1'000'000);  // ms -> ns
    delay_sum_ms_ += std::max<int64_t>(0, servable_ms - t);
    if (delays_.size() < kDelayRing) delays_.push_back(d);
    else delays_[delay_pos_++ % kDelayRing] = d;
  }
}

std::vector<PartitionFigures> KafkaIngest::Partitions() const {
  std::lock_guard lk(mu_);
  std::vector<PartitionFigures> v;
  for (auto& [k, f] : parts_)
    if (f.assigned) v.push_back(f);
  return v;
}

void KafkaIngest::DelayHistogram(HistogramSnapshot* h, double* sum_seconds) const {
  std::lock_guard lk(delay_mu_);
  *h = delay_hist_;
  *sum_seconds = static_cast<double>(delay_sum_ms_) / 1000.0;
}

void KafkaIngest::DelayPercentiles(double* p50, double* p99, double* max) const {
  std::vector<double> d;
  {
    std::lock_guard lk(delay_mu_);
    d = delays_;
  }
  *p50 = *p99 = *max = 0;
  if (d.empty()) return;
  // Selection, not a sort: INFO runs on a shard, between its reads.
  auto at = [&](size_t i) {
    std::nth_element(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(i), d.end());
    return d[i];
  };
  *max = *std::max_element(d.begin(), d.end());
  *p99 = at(std::min(d.size() - 1, d.size() * 99 / 100));
  *p50 = at(d.size() / 2);
}

void KafkaIngest::Stop() {
  if (stop_.exchange(true)) return;
  {
    std::lock_guard lk(flow_mu_);
  }
  flow_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (h_->consumer) {
    rd_kafka_consumer_close(h_->consumer);  // leaves the group (OnRevoked runs here)
    rd_kafka_destroy(h_->consumer);
    h_->consumer = nullptr;
  }
  if (h_->dlq) {
    rd_kafka_flush(h_->dlq, 5000);
    rd_kafka_destroy(h_->dlq);
    h_->dlq = nullptr;
  }
  if (h_->repart) {
    rd_kafka_flush(h_->repart, 5000);
    rd_kafka_destroy(h_->repart);
    h_->repart = nullptr;
  }
  if (h_->mock) rd_kafka_mock_cluster_destroy(h_->mock);
  if (h_->mock_host) rd_kafka_destroy(h_->mock_host);
  h_->mock = nullptr;
  h_->mock_host = nullptr;
}


// ---- Replay ----

std::string KafkaIngest::StartReplay(ReplayRequest r) {
  if (settings_.role != KafkaSettings::Role::kLocal) return "ERR FREPLAY is not available in cluster mode yet";
  auto reg = sink_->CurrentRegistry();
  const int si = reg->FindSource(r.source);
  if (si < 0) return "ERR unknown source '" + r.source + "'";
  if (r.to_ms != 0 && r.to_ms <= r.from_ms) return "ERR TO must be after FROM";
  std::lock_guard lk(replay_mu_);
  PruneReleased(*reg);
  if (replay_pending_ || replay_figs_.status == "running" || replay_figs_.status == "starting")
    return "ERR a replay is running (FREPLAY CANCEL stops it)";
  if (checkpoint_.running)
    return "ERR the replay into " + Join(checkpoint_.views) + " failed to resume (" + replay_figs_.error +
           "): a restart resumes it";
  std::vector<std::string> views;
  auto held = [&](const ViewDef& v) { return v.backfill && !released_.count(v.name); };
  if (r.views.empty()) {
    for (const ViewDef& v : reg->views())
      if (v.source == r.source && held(v)) views.push_back(v.name);
    if (views.empty()) return "ERR no view of source '" + r.source + "' waits for a backfill (backfill: true, not replayed yet)";
  } else {
    for (const std::string& name : r.views) {
      const ViewDef* v = nullptr;
      for (const ViewDef& d : reg->views())
        if (d.name == name) v = &d;
      if (v == nullptr) return "ERR unknown view '" + name + "' (name a version as view@N)";
      if (v->source != r.source) return "ERR view '" + name + "' reads source '" + v->source + "', not '" + r.source + "'";
      if (!v->backfill)
        return "ERR view '" + name + "' is not marked backfill: true (it takes live events: a replay would count them twice)";
      if (!held(*v)) return "ERR view '" + name + "' was already released by a replay (it takes live events now)";
      if (std::find(views.begin(), views.end(), name) == views.end()) views.push_back(name);
    }
  }
  replay_figs_ = ReplayFigures{};
  replay_figs_.status = "starting";
  replay_figs_.req = std::move(r);
  replay_figs_.views = std::move(views);
  replay_figs_.started_ms = WallMs();
  replay_pending_ = true;
  replay_cancel_ = false;
  return "";
}

bool KafkaIngest::CancelReplay() {
  std::lock_guard lk(replay_mu_);
  if (!replay_pending_ && replay_figs_.status != "running" && replay_figs_.status != "starting") return false;
  replay_cancel_ = true;
  return true;
}

KafkaIngest::ReplayFigures KafkaIngest::replay() const {
  std::lock_guard lk(replay_mu_);
  return replay_figs_;
}

std::set<std::string> KafkaIngest::released() const {
  std::lock_guard lk(replay_mu_);
  return released_;
}

snap::ReplayState KafkaIngest::PersistentReplay() const {
  std::lock_guard lk(replay_mu_);
  snap::ReplayState st = checkpoint_;
  st.released.assign(released_.begin(), released_.end());
  return st;
}

void KafkaIngest::RestoreReplay(const snap::ReplayState& st) {
  auto reg = sink_->CurrentRegistry();
  std::lock_guard lk(replay_mu_);
  released_ = std::set<std::string>(st.released.begin(), st.released.end());
  if (st.running) checkpoint_ = st;  // a cut before the resume starts keeps it
  PruneReleased(*reg);
  if (!checkpoint_.running) return;
  const snap::ReplayState& cp = checkpoint_;
  // The replay a snapshot was cut in the middle of goes on from where it
  // stood (its views are released already; live ingest applies to them).
  resume_ = cp;
  replay_figs_ = ReplayFigures{};
  replay_figs_.status = "starting";
  replay_figs_.req.source = cp.source;
  replay_figs_.req.from_ms = cp.from_ms;
  replay_figs_.req.to_ms = cp.to_ms;
  replay_figs_.views = cp.views;
  replay_figs_.started_ms = WallMs();
  replay_figs_.resumed = true;
  replay_pending_ = true;
}

void KafkaIngest::PruneReleased(const Registry& reg) {
  // A released view the registry dropped is forgotten: added again, it is
  // a new, empty view and waits for its own replay. A replay stops filling
  // it, and a kept cursor whose views are all gone is dropped.
  auto in_reg = [&](const std::string& name) {
    return std::any_of(reg.views().begin(), reg.views().end(), [&](const ViewDef& v) { return v.name == name; });
  };
  for (auto it = released_.begin(); it != released_.end();) it = in_reg(*it) ? std::next(it) : released_.erase(it);
  auto& cv = checkpoint_.views;
  cv.erase(std::remove_if(cv.begin(), cv.end(), [&](const std::string& v) { return !released_.count(v); }), cv.end());
  if (checkpoint_.running && cv.empty() && replay_figs_.status != "running" && replay_figs_.status != "starting")
    checkpoint_ = snap::ReplayState{};
}

void KafkaIngest::OnRegistryChange(const Registry& reg) {
  std::lock_guard lk(replay_mu_);
  PruneReleased(reg);
}

const std::vector<char>* KafkaIngest::LiveMask(const Registry& reg) {
  std::lock_guard lk(replay_mu_);
  PruneReleased(reg);
  bool any = false;
  live_mask_.assign(reg.views().size(), 1);
  for (size_t i = 0; i < reg.views().size(); i++)
    if (reg.views()[i].backfill && !released_.count(reg.views()[i].name)) {
      live_mask_[i] = 0;
      any = true;
    }
  return any ? &live_mask_ : nullptr;
}

void KafkaIngest::EndReplay(const std::string& status, const std::string& error, bool keep_cursor) {
  replay_.reset();
  std::lock_guard lk(replay_mu_);
  replay_figs_.status = status;
  replay_figs_.error = error;
  replay_figs_.finished_ms = WallMs();
  replay_cancel_ = false;
  // Interrupted by a shutdown, or a resume that failed for a reason that
  // may pass (the consumer, the broker), the replay stays in the snapshots
  // and resumes at the next start; otherwise it is over.
  if (status != "interrupted" && !keep_cursor) checkpoint_ = snap::ReplayState{};
  if (status == "failed") spdlog::warn("replay of {} failed: {}", replay_figs_.req.source, error);
  else spdlog::info("replay of {}: {} ({} events applied)", replay_figs_.req.source, status, replay_figs_.applied);
}

void KafkaIngest::SaveCheckpoint() {
  const Replay& r = *replay_;
  std::lock_guard lk(replay_mu_);
  checkpoint_ = snap::ReplayState{};
  checkpoint_.running = true;
  checkpoint_.source = r.source;
  checkpoint_.topic = r.topic;
  checkpoint_.from_ms = r.from_ms;
  checkpoint_.to_ms = r.to_ms;
  checkpoint_.views = r.views;
  for (const auto& [p, end] : r.end) {
    auto n = r.next.find(p);
    checkpoint_.parts.push_back({p, r.done.count(p) || n == r.next.end() ? end : std::min(n->second, end), end});
  }
  replay_figs_.partitions = static_cast<int>(r.end.size());
  replay_figs_.partitions_done = static_cast<int>(r.done.size());
}

void KafkaIngest::StartPendingReplay() {
  ReplayRequest req;
  std::vector<std::string> views;
  snap::ReplayState resume;
  {
    std::lock_guard lk(replay_mu_);
    if (!replay_pending_) return;
    replay_pending_ = false;
    req = replay_figs_.req;
    views = replay_figs_.views;
    resume = std::move(resume_);
    resume_ = snap::ReplayState{};
  }
  auto reg = sink_->CurrentRegistry();
  const int si = reg->FindSource(req.source);
  if (si < 0) return EndReplay("failed", "source '" + req.source + "' is not in the registry");
  if (!resume.running) {
    // Between FREPLAY and here a cancel, or a reload, may have come.
    std::lock_guard lk(replay_mu_);
    PruneReleased(*reg);
    std::string why = replay_cancel_ ? "cancelled before it started (its views are still held)" : "";
    for (const std::string& name : views) {
      const ViewDef* v = nullptr;
      for (const ViewDef& d : reg->views())
        if (d.name == name) v = &d;
      if (why.empty() && (v == nullptr || !v->backfill || v->source != req.source ||
                          released_.count(name)))
        why = "view '" + name + "' changed before the replay started (a reload): nothing replayed, ask again";
    }
    if (!why.empty()) {
      replay_figs_.status = replay_cancel_ ? "cancelled" : "failed";
      replay_figs_.error = why;
      replay_figs_.finished_ms = WallMs();
      replay_cancel_ = false;
      return;
    }
  }
  auto r = std::make_unique<Replay>();
  r->source = req.source;
  r->topic = reg->sources()[static_cast<size_t>(si)].topic;
  r->from_ms = req.from_ms;
  r->to_ms = req.to_ms;
  r->views = views;
  if (resume.running) {
    if (resume.topic != r->topic)
      return EndReplay("failed", "source '" + req.source + "' reads topic '" + r->topic + "' now, not '" +
                                     resume.topic + "': the views keep what was replayed");
    for (const auto& p : resume.parts) {
      r->end[p.partition] = p.end;
      r->next[p.partition] = p.next;
      if (p.next >= p.end) r->done.insert(p.partition);
    }
  } else {
    // The end: where live ingest is now in every partition of the topic it
    // consumes (batch_ is empty: that is exactly what was handed over).
    {
      std::lock_guard lk(mu_);
      FillUnknownPositions();
      for (auto& [k, f] : parts_)
        if (f.assigned && f.topic == r->topic) r->end[f.partition] = f.position;
    }
    for (auto& [p, end] : r->end) {
      int64_t lo = 0, hi = 0;
      // No message of it returned yet: live ingest reads it from the
      // earliest offset (no committed offset in group mode: a committed
      // one is a position already), so it gives the views all of it.
      if (end < 0 &&
          rd_kafka_query_watermark_offsets(h_->consumer, r->topic.c_str(), p, &lo, &hi, 5000) ==
              RD_KAFKA_RESP_ERR_NO_ERROR)
        end = lo;
      if (end < 0)
        return EndReplay("failed", "partition " + r->topic + "/" + std::to_string(p) +
                                       " has no position yet (ingest is starting): try again");
    }
    if (r->end.empty()) return EndReplay("failed", "no partition of topic '" + r->topic + "' is consumed here");
  }
  // The replay's own consumer: assigned, never in a group, never committing.
  // The user's properties (security, timeouts) first, then what the replay
  // relies on: an offset gone to retention restarts at the earliest one
  // (never at the latest: that would skip the rest silently).
  char err[512] = "";
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (auto& [k, v] : settings_.properties)
    if (k != "group.instance.id") rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err);
  bool conf_ok = true;
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", bootstrap_},
                                                                      {"group.id", "featurekv-replay"},
                                                                      {"enable.auto.commit", "false"},
                                                                      {"enable.auto.offset.store", "false"},
                                                                      {"enable.partition.eof", "true"},
                                                                      {"auto.offset.reset", "earliest"},
                                                                      {"log_level", "3"}})
    conf_ok = conf_ok && rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) == RD_KAFKA_CONF_OK;
  NiceThreadsOf(conf, settings_.nice);
  r->consumer = conf_ok ? rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err) : nullptr;
  if (r->consumer == nullptr) {
    if (!conf_ok) rd_kafka_conf_destroy(conf);
    return EndReplay("failed", std::string("cannot create the replay consumer: ") + err, resume.running);
  }
  rd_kafka_poll_set_consumer(r->consumer);
  if (!resume.running) {
    // The start: the first offset at or after from_ms. librdkafka's mock
    // cluster (and a broker without a message that new) answers -1: then
    // the earliest offset, and the timestamp filter skips what is older.
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(static_cast<int>(r->end.size()));
    for (auto& [p, end] : r->end) rd_kafka_topic_partition_list_add(parts, r->topic.c_str(), p)->offset = r->from_ms;
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(r->consumer, parts, 10000);
    std::string failed;
    for (int i = 0; i < parts->cnt && failed.empty(); i++) {
      auto& el = parts->elems[i];
      int64_t start = e == RD_KAFKA_RESP_ERR_NO_ERROR && el.err == RD_KAFKA_RESP_ERR_NO_ERROR ? el.offset : -1;
      int64_t lo = 0, hi = 0;
      if (start < 0 && rd_kafka_query_watermark_offsets(r->consumer, r->topic.c_str(), el.partition, &lo, &hi,
                                                        10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        failed = "cannot read the offsets of " + r->topic + "/" + std::to_string(el.partition);
      r->next[el.partition] = start < 0 ? lo : start;
      if (r->next[el.partition] >= r->end[el.partition]) r->done.insert(el.partition);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    if (!failed.empty()) return EndReplay("failed", failed);  // nothing released yet
  }
  rd_kafka_topic_partition_list_t* assign = rd_kafka_topic_partition_list_new(static_cast<int>(r->end.size()));
  for (auto& [p, next] : r->next)
    if (!r->done.count(p)) rd_kafka_topic_partition_list_add(assign, r->topic.c_str(), p)->offset = next;
  rd_kafka_resp_err_t ae = assign->cnt > 0 ? rd_kafka_assign(r->consumer, assign) : RD_KAFKA_RESP_ERR_NO_ERROR;
  rd_kafka_topic_partition_list_destroy(assign);
  if (ae)
    return EndReplay("failed", std::string("cannot assign the replay's partitions: ") + rd_kafka_err2str(ae),
                     resume.running);
  // Last, with nothing left to fail: the views take live events from the
  // next batch on (a resumed replay's views were released before the save).
  {
    std::lock_guard lk(replay_mu_);
    for (const std::string& v : views) released_.insert(v);
    replay_figs_.status = "running";
  }
  spdlog::info("replay of {} from {} to {} into {} view(s) {}", r->source, r->from_ms, r->to_ms, r->views.size(),
               resume.running ? "resumed from the snapshot" : "started");
  r->started = std::chrono::steady_clock::now();
  replay_ = std::move(r);
  SaveCheckpoint();
  if (replay_->done.size() == replay_->end.size()) FinishReplay();
}

void KafkaIngest::FinishReplay() {
  // "done" means applied: readable everywhere.
  while (!WaitInFlightAtMost(0, 10000) && !stop_.load()) spdlog::warn("replay: waiting for the shards to apply it");
  EndReplay(stop_.load() ? "interrupted" : "done", "");
}

void KafkaIngest::ReplayStep(EventPlanner& planner) {
  Replay& r = *replay_;
  bool cancel;
  {
    std::lock_guard lk(replay_mu_);
    cancel = replay_cancel_;
  }
  if (cancel) return EndReplay("cancelled", "");  // what was handed over applies: the views keep it
  auto reg = sink_->CurrentRegistry();
  const int si = reg->FindSource(r.source);
  if (si < 0) return EndReplay("failed", "source '" + r.source + "' left the registry");
  if (reg->sources()[static_cast<size_t>(si)].topic != r.topic)
    return EndReplay("failed", "source '" + r.source + "' reads another topic now: the views keep what was replayed");
  // The views it fills: still released (a reload that dropped one, or
  // dropped and added it again, takes it out).
  std::vector<char> mask(reg->views().size(), 0);
  bool any = false;
  {
    std::lock_guard lk(replay_mu_);
    for (size_t i = 0; i < reg->views().size(); i++) {
      const std::string& name = reg->views()[i].name;
      if (released_.count(name) && std::find(r.views.begin(), r.views.end(), name) != r.views.end()) {
        mask[i] = 1;
        any = true;
      }
    }
  }
  if (!any) return EndReplay("failed", "its views left the registry");
  // kafka-replay-rate: messages per second over the whole replay.
  size_t quota = settings_.batch_max;
  if (settings_.replay_rate > 0) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.started).count();
    const double allowed = secs * static_cast<double>(settings_.replay_rate) - static_cast<double>(r.read_total);
    quota = allowed <= 0 ? 0 : std::min(quota, static_cast<size_t>(allowed) + 1);
  }
  replay_throttled_ = quota == 0;
  if (quota == 0) return;
  const int64_t now = WallMs(), skew = sink_->MaxEventSkewMs();
  UpdateBatch updates;
  uint64_t read = 0, applied = 0, out_of_range = 0, rejected = 0;
  auto finish_partition = [&](int p) {
    if (!r.done.insert(p).second) return;
    r.next[p] = r.end[p];
    rd_kafka_topic_partition_list_t* one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, r.topic.c_str(), p);
    rd_kafka_pause_partitions(r.consumer, one);
    rd_kafka_topic_partition_list_destroy(one);
  };
  std::string failure;
  std::vector<PlanItem> items;
  std::vector<rd_kafka_message_t*> kept;
  for (size_t n = 0; n < quota && failure.empty(); n++) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(r.consumer, n == 0 ? 10 : 0);
    if (m == nullptr) break;
    const int p = m->partition;
    auto end = r.end.find(p);
    const bool ours = end != r.end.end() && !r.done.count(p);
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      // At the high watermark: live ingest can be no further than that,
      // unless the partition lost messages (a recreated topic).
      if (ours && m->offset >= end->second) finish_partition(p);
      else if (ours && m->offset >= 0 && m->offset < r.next[p])
        failure = "partition " + std::to_string(p) + " ends at offset " + std::to_string(m->offset) +
                  ", before the replay's next offset " + std::to_string(r.next[p]) + " (was the topic recreated?)";
    } else if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION || m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
               m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      failure = rd_kafka_message_errstr(m);
    } else if (m->err) {
      spdlog::warn("replay: {}", rd_kafka_message_errstr(m));
    } else if (!ours || m->offset >= end->second) {
      if (ours) finish_partition(p);  // live ingest applies from here
    } else {
      read++;
      r.read_total++;
      r.next[p] = m->offset + 1;
      rd_kafka_timestamp_type_t tt;
      const int64_t ts = rd_kafka_message_timestamp(m, &tt);
      if (ts < r.from_ms || (r.to_ms != 0 && ts >= r.to_ms)) {
        out_of_range++;
      } else {
        items.push_back(ItemOf(si, m));
        kept.push_back(m);  // planned below, all together
      }
      if (m->offset + 1 >= end->second) finish_partition(p);
    }
    if (kept.empty() || kept.back() != m) rd_kafka_message_destroy(m);
  }
  std::vector<std::string> why;
  PlanEvents(planner, reg, items, now, skew, &updates, nullptr, &mask, &why);
  for (const std::string& w : why) (w.empty() ? applied : rejected)++;
  for (rd_kafka_message_t* m : kept) rd_kafka_message_destroy(m);
  if (!updates.empty()) {
    in_flight_.fetch_add(1);
    ApplyBatch(std::move(updates), reg, {}, 0);
    ReleaseInFlight();
  }
  {
    std::lock_guard lk(replay_mu_);
    replay_figs_.read += read;
    replay_figs_.applied += applied;
    replay_figs_.out_of_range += out_of_range;
    replay_figs_.rejected += rejected;
  }
  SaveCheckpoint();  // handed over: a cut from here on holds these events and this cursor
  if (!failure.empty()) return EndReplay("failed", failure + ": the views keep what was replayed");
  if (r.done.size() == r.end.size()) FinishReplay();
}

}  // namespace fkv

// ---- Cluster mode (docs/architecture.md, "Cluster mode") ----

namespace fkv {

void KafkaIngest::SendRecords(const std::vector<rd_kafka_message_s*>& item_msg, const std::vector<PlanItem>& items,
                              const std::vector<std::string>& why, const std::vector<size_t>& ends,
                              const UpdateBatch& updates, const Registry& reg, int64_t now) {
  std::string buf;
  std::vector<int> parts;
  size_t begin = 0;
  for (size_t i = 0; i < items.size(); begin = ends[i], i++) {
    // After a failure nothing more is sent (a later record delivered would
    // carry the owner's mark past the lost one); a restart sends again
    // from the last commit.
    if (delivery_failed_.load() > 0) return;
    if (!why[i].empty()) continue;
    parts.clear();
    for (size_t u = begin; u < ends[i]; u++) parts.push_back(settings_.partition_of_key(updates.key(u)));
    std::sort(parts.begin(), parts.end());
    parts.erase(std::unique(parts.begin(), parts.end()), parts.end());
    const rd_kafka_message_t* m = item_msg[i];
    RepartitionRecord r;
    r.source = reg.sources()[static_cast<size_t>(items[i].src)].name;
    r.topic = rd_kafka_topic_name(m->rkt);
    r.partition = m->partition;
    r.offset = m->offset;
    r.now_ms = now;
    rd_kafka_timestamp_type_t tt;
    r.kafka_ts_ms = std::max<int64_t>(0, rd_kafka_message_timestamp(m, &tt));
    r.has_key = items[i].msg.has_key;
    r.tombstone = items[i].msg.tombstone;
    r.key = items[i].msg.key;
    r.payload = items[i].json;
    buf.clear();
    EncodeRepartition(r, &buf);
    for (int p : parts) {
      const std::string_view k = updates.key(begin);  // for Kafka's tools: one of the record's entity keys
      for (int tries = 0;; tries++) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            h_->repart, RD_KAFKA_V_TOPIC(settings_.repartition_topic.c_str()), RD_KAFKA_V_PARTITION(p),
            RD_KAFKA_V_KEY(k.data(), k.size()), RD_KAFKA_V_VALUE(buf.data(), buf.size()),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || stop_.load()) {
          spdlog::error("cluster: cannot send a repartition record: {}", rd_kafka_err2str(e));
          delivery_failed_.fetch_add(1);
          break;
        }
        rd_kafka_poll(h_->repart, 50);  // the producer's queue is full: let it drain
      }
      records_sent_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  rd_kafka_poll(h_->repart, 0);
}

void KafkaIngest::CommitSourcePositions(bool sync) {
  if (h_->repart == nullptr || h_->consumer == nullptr) return;
  const int64_t now = WallMs();
  if (!sync && now - last_commit_ms_ < 200) return;
  last_commit_ms_ = now;
  // Only what Kafka has acknowledged is committed: a record lost in the
  // producer would otherwise never be sent again.
  if (rd_kafka_flush(h_->repart, sync ? 10000 : 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
  if (delivery_failed_.load() > 0) return;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(8);
  {
    std::lock_guard lk(mu_);
    for (auto& [k, f] : parts_)
      if (f.assigned && f.position >= 0 && f.position != f.committed)
        rd_kafka_topic_partition_list_add(list, f.topic.c_str(), f.partition)->offset = f.position;
  }
  if (list->cnt > 0) {
    rd_kafka_resp_err_t e = rd_kafka_commit(h_->consumer, list, sync ? 0 : 1);
    if (e) spdlog::warn("cluster: commit of {} source offset(s) failed: {}", list->cnt, rd_kafka_err2str(e));
    if (sync && !e) {
      std::lock_guard lk(mu_);
      for (int i = 0; i < list->cnt; i++)
        if (auto it = parts_.find({list->elems[i].topic, list->elems[i].partition}); it != parts_.end())
          it->second.committed = list->elems[i].offset;
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
}

void KafkaIngest::OwnerItems(const std::vector<rd_kafka_message_s*>& msgs, const Registry& reg,
                             std::vector<PlanItem>* items, std::vector<int64_t>* kafka_ts,
                             std::vector<std::pair<size_t, std::shared_ptr<const LoggedCommand>>>* commands) {
  IngestStats& stats = sink_->Stats();
  std::vector<std::string_view> args;
  for (rd_kafka_message_t* m : msgs) {
    if (m == nullptr) continue;
    messages_.fetch_add(1, std::memory_order_relaxed);
    RepartitionRecord r;
    if (!DecodeRepartition(std::string_view(static_cast<const char*>(m->payload), m->payload ? m->len : 0), &r) ||
        (r.command && !DecodeArgs(r.payload, &args))) {
      stats.Reject(settings_.repartition_topic, "bad_record");
      continue;
    }
    const int si = r.command ? -1 : reg.FindSource(r.source);
    if (!r.command && si < 0) {
      stats.Reject(std::string(r.source), "no_source");
      continue;
    }
    if (!marks_[m->partition].Admit(r.topic, r.partition, r.offset)) {
      dup_dropped_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (r.command) {
      auto cmd = std::make_shared<LoggedCommand>();
      cmd->args.assign(args.begin(), args.end());
      cmd->now_ms = r.now_ms;
      cmd->resp3 = r.resp3;
      cmd->origin = std::string(r.topic);
      cmd->seq = r.offset;
      commands->emplace_back(items->size(), std::move(cmd));
      continue;
    }
    PlanItem it{si, r.payload, MessageMeta{r.key, r.has_key, r.tombstone}, r.now_ms, m->partition};
    items->push_back(it);
    if (r.kafka_ts_ms > 0) kafka_ts->push_back(r.kafka_ts_ms);
  }
}

void KafkaIngest::CheckRestored() {
  std::vector<int> done;
  {
    std::lock_guard lk(mu_);
    for (auto& [p, target] : restore_target_) {
      auto it = parts_.find({settings_.repartition_topic, p});
      if (it == parts_.end()) continue;
      if (target == INT64_MAX && it->second.high >= 0) target = it->second.high;  // learnt since
      if (it->second.position >= target) done.push_back(p);
    }
  }
  if (done.empty() || !WaitInFlightAtMost(0, 10000)) return;  // servable once applied
  for (int p : done) {
    restore_target_.erase(p);
    if (settings_.on_restored) settings_.on_restored(p);
  }
}

void KafkaIngest::DropOrphans() {
  const int64_t now = WallMs();
  std::vector<int> gone;
  {
    std::lock_guard lk(mu_);
    for (auto it = orphan_since_.begin(); it != orphan_since_.end();) {
      if (now - it->second < settings_.orphan_grace_ms) {
        ++it;
        continue;
      }
      auto f = parts_.find({settings_.repartition_topic, it->first});
      if (f != parts_.end() && !f->second.assigned) parts_.erase(f);
      marks_.erase(it->first);
      gone.push_back(it->first);
      it = orphan_since_.erase(it);
    }
  }
  if (!gone.empty()) {
    spdlog::info("cluster: {} partition(s) of the snapshot were not assigned here: their state is dropped", gone.size());
    if (settings_.on_lost) settings_.on_lost(gone, true);
  }
}

std::vector<snap::DedupMark> KafkaIngest::PersistentMarks() const {
  std::vector<snap::DedupMark> out;
  for (const auto& [p, m] : marks_)
    for (const auto& [src, next] : m.marks()) out.push_back({p, src.first, src.second, next});
  return out;
}

void KafkaIngest::RestoreMarks(const std::vector<snap::DedupMark>& marks) {
  for (const auto& m : marks) marks_[m.repartition].Set(m.topic, m.partition, m.next);
}

}  // namespace fkv
