// ClusterMember: see cluster_member.h.
#include "server/cluster_member.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace fkv {

namespace {
int64_t WallMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void Trampoline(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
  ClusterMember::OnRebalance(rk, static_cast<int>(err), parts, opaque);
}

// A consumer or producer with these settings; nullptr and *err on failure.
rd_kafka_t* NewClient(rd_kafka_type_t type, const std::vector<std::pair<std::string, std::string>>& props,
                      void* rebalance_opaque, std::string* err) {
  char buf[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : props)
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), buf, sizeof buf) != RD_KAFKA_CONF_OK) {
      *err = "kafka-property " + k + ": " + buf;
      rd_kafka_conf_destroy(conf);
      return nullptr;
    }
  if (rebalance_opaque != nullptr) {
    rd_kafka_conf_set_rebalance_cb(conf, &Trampoline);
    rd_kafka_conf_set_opaque(conf, rebalance_opaque);
  }
  rd_kafka_t* rk = rd_kafka_new(type, conf, buf, sizeof buf);
  if (rk == nullptr) *err = std::string("cannot create a Kafka client: ") + buf;
  return rk;
}

// What a map says, to see whether a new one differs.
std::string Describe(const ClusterMap& m) {
  std::string s;
  for (const ClusterNode& n : m.nodes()) {
    s += n.id + "@" + n.ip + ":" + std::to_string(n.port) + (n.myself ? "*" : "") + "=";
    for (int p : n.partitions) s += std::to_string(p) + ",";
    s += ";";
  }
  return s;
}
}  // namespace

ClusterMember::ClusterMember(ClusterSettings s, OnChange on_change)
    : s_(std::move(s)), on_change_(std::move(on_change)), membership_(s_.node_id, s_.partitions),
      map_(std::make_shared<ClusterMap>(s_.partitions, std::vector<ClusterNode>{})) {}

ClusterMember::~ClusterMember() { Stop(); }

std::string ClusterMember::Start() {
  std::string err;
  std::vector<std::pair<std::string, std::string>> common = {{"bootstrap.servers", s_.brokers}, {"log_level", "3"}};
  auto consumer_props = common;
  consumer_props.insert(consumer_props.end(), {{"group.id", s_.group},
                                               {"enable.auto.commit", "false"},
                                               {"enable.auto.offset.store", "false"},
                                               {"auto.offset.reset", "earliest"},
                                               // Incremental rebalances: a node joining or leaving
                                               // moves only the partitions that change owner.
                                               {"partition.assignment.strategy", "cooperative-sticky"}});
  for (const auto& kv : s_.properties)
    if (kv.first != "group.instance.id") consumer_props.push_back(kv);
  consumer_ = NewClient(RD_KAFKA_CONSUMER, consumer_props, this, &err);
  if (consumer_ == nullptr) return err;
  rd_kafka_poll_set_consumer(consumer_);
  auto members_props = common;
  members_props.insert(members_props.end(), {{"group.id", "featurekv-members-" + s_.node_id},
                                             {"enable.auto.commit", "false"},
                                             {"enable.auto.offset.store", "false"},
                                             {"fetch.wait.max.ms", "20"}});
  members_ = NewClient(RD_KAFKA_CONSUMER, members_props, nullptr, &err);
  if (members_ == nullptr) return err;
  rd_kafka_poll_set_consumer(members_);
  auto producer_props = common;
  producer_props.insert(producer_props.end(), {{"enable.idempotence", "true"}, {"linger.ms", "0"}});
  producer_ = NewClient(RD_KAFKA_PRODUCER, producer_props, nullptr, &err);
  if (producer_ == nullptr) return err;
  rd_kafka_topic_partition_list_t* one = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(one, s_.members_topic.c_str(), 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_resp_err_t e = rd_kafka_assign(members_, one);
  rd_kafka_topic_partition_list_destroy(one);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string("cannot read the membership topic: ") + rd_kafka_err2str(e);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, s_.repartition_topic.c_str(), RD_KAFKA_PARTITION_UA);
  e = rd_kafka_subscribe(consumer_, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string("cannot join the repartition group: ") + rd_kafka_err2str(e);
  thread_ = std::thread([this] { Run(); });
  return "";
}

void ClusterMember::Stop() {
  if (!thread_.joinable() && consumer_ == nullptr) return;
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  for (rd_kafka_t** c : {&consumer_, &members_}) {
    if (*c == nullptr) continue;
    rd_kafka_consumer_close(*c);
    rd_kafka_destroy(*c);
    *c = nullptr;
  }
  if (producer_ != nullptr) {
    rd_kafka_flush(producer_, 2000);
    rd_kafka_destroy(producer_);
    producer_ = nullptr;
  }
}

std::shared_ptr<const ClusterMap> ClusterMember::map() const {
  std::lock_guard lk(mu_);
  return map_;
}

void ClusterMember::OnRebalance(rd_kafka_s* rk, int err, rd_kafka_topic_partition_list_s* parts, void* opaque) {
  auto* self = static_cast<ClusterMember*>(opaque);
  const int64_t now = WallMs();
  const bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  auto& claims = self->claims_;
  auto claimed = [&](int p) { return std::find_if(claims.begin(), claims.end(), [&](auto& c) { return c.first == p; }); };
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    self->DrainMembers();  // claim with the latest epochs this node can know of
    if (!cooperative) claims.clear();  // (eager: `parts` is the whole assignment)
    for (int i = 0; i < parts->cnt; i++) {
      const int p = parts->elems[i].partition;
      if (p >= 0 && p < self->s_.partitions && claimed(p) == claims.end())
        claims.emplace_back(p, self->membership_.NextEpoch(p));
    }
    std::sort(claims.begin(), claims.end());
    if (cooperative) {
      if (rd_kafka_error_t* e = rd_kafka_incremental_assign(rk, parts)) rd_kafka_error_destroy(e);
    } else {
      rd_kafka_assign(rk, parts);
    }
    spdlog::info("cluster: {} repartition partitions assigned, {} owned", parts->cnt, claims.size());
  } else {
    for (int i = 0; i < parts->cnt; i++)
      if (auto it = claimed(parts->elems[i].partition); it != claims.end()) claims.erase(it);
    if (cooperative) {
      if (rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, parts)) rd_kafka_error_destroy(e);
    } else {
      rd_kafka_assign(rk, nullptr);
      claims.clear();
    }
    spdlog::info("cluster: {} repartition partitions revoked, {} owned", parts->cnt, claims.size());
  }
  self->Publish(now);
}

void ClusterMember::Publish(int64_t now) {
  MemberRecord r{s_.node_id, s_.ip, s_.port, now, claims_};
  std::string v = EncodeMember(r);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      producer_, RD_KAFKA_V_TOPIC(s_.members_topic.c_str()), RD_KAFKA_V_PARTITION(0),
      RD_KAFKA_V_KEY(s_.node_id.data(), s_.node_id.size()), RD_KAFKA_V_VALUE(v.data(), v.size()),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) spdlog::warn("cluster: membership produce failed: {}", rd_kafka_err2str(e));
  rd_kafka_poll(producer_, 0);
}

void ClusterMember::DrainMembers() {
  for (int n = 0; n < 10000; n++) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(members_, 0);
    if (m == nullptr) return;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      MemberRecord r;
      if (DecodeMember(std::string_view(static_cast<const char*>(m->payload), m->payload ? m->len : 0), &r)) {
        membership_.Apply(r);
        records_.fetch_add(1, std::memory_order_relaxed);
      } else {
        spdlog::warn("cluster: a membership record that is not one (offset {}): skipped", m->offset);
      }
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      spdlog::warn("cluster: membership topic: {}", rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
  }
}

void ClusterMember::Rebuild(int64_t now, bool force) {
  auto next = std::make_shared<const ClusterMap>(membership_.Map(now, s_.node_timeout_ms));
  std::string desc = Describe(*next);
  if (!force && desc == last_desc_) return;
  last_desc_ = std::move(desc);
  {
    std::lock_guard lk(mu_);
    map_ = next;
  }
  changes_.fetch_add(1, std::memory_order_relaxed);
  on_change_(std::move(next));
}

void ClusterMember::Run() {
  int64_t last_publish = 0;
  while (!stop_.load()) {
    // The repartition group's records are not read yet (the rebalance
    // callback runs in this poll).
    if (rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_, 20)) rd_kafka_message_destroy(m);
    DrainMembers();
    const int64_t now = WallMs();
    if (now - last_publish >= 1000) {
      Publish(now);
      last_publish = now;
    }
    rd_kafka_poll(producer_, 0);
    Rebuild(now, false);
  }
  // Leaving: the partitions go to the others now, not after the session timeout.
  rd_kafka_consumer_close(consumer_);
  rd_kafka_destroy(consumer_);
  consumer_ = nullptr;
  claims_.clear();
  Publish(WallMs());
  rd_kafka_flush(producer_, 2000);
}

}  // namespace fkv
