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

// A consumer or producer with these settings; nullptr and *err on failure.
rd_kafka_t* NewClient(rd_kafka_type_t type, const std::vector<std::pair<std::string, std::string>>& props,
                      std::string* err) {
  char buf[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : props)
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), buf, sizeof buf) != RD_KAFKA_CONF_OK) {
      *err = "kafka-property " + k + ": " + buf;
      rd_kafka_conf_destroy(conf);
      return nullptr;
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
  auto members_props = common;
  members_props.insert(members_props.end(), {{"group.id", "featurekv-members-" + s_.node_id},
                                             {"enable.auto.commit", "false"},
                                             {"enable.auto.offset.store", "false"},
                                             {"fetch.wait.max.ms", "20"},
                                             {"enable.partition.eof", "true"}});
  members_ = NewClient(RD_KAFKA_CONSUMER, members_props, &err);
  if (members_ == nullptr) return err;
  rd_kafka_poll_set_consumer(members_);
  auto producer_props = common;
  producer_props.insert(producer_props.end(), {{"enable.idempotence", "true"}, {"linger.ms", "0"}});
  producer_ = NewClient(RD_KAFKA_PRODUCER, producer_props, &err);
  if (producer_ == nullptr) return err;
  rd_kafka_topic_partition_list_t* one = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(one, s_.members_topic.c_str(), 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_resp_err_t e = rd_kafka_assign(members_, one);
  rd_kafka_topic_partition_list_destroy(one);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string("cannot read the membership topic: ") + rd_kafka_err2str(e);
  // The membership so far, before this node says anything: two live nodes
  // announcing one address would send clients to the wrong one.
  const int64_t deadline = WallMs() + 10000;
  bool at_end = false;
  while (!at_end && WallMs() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(members_, 100);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      at_end = true;
    } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      MemberRecord r;
      if (DecodeMember(std::string_view(static_cast<const char*>(m->payload), m->payload ? m->len : 0), &r))
        membership_.Apply(r);
    }
    rd_kafka_message_destroy(m);
  }
  if (std::string other = membership_.AddressTakenBy(s_.ip, s_.port, WallMs(), s_.node_timeout_ms); !other.empty())
    return "node " + other + " announces " + s_.ip + ":" + std::to_string(s_.port) +
           " too (heard of within cluster-node-timeout): give each node its own cluster-announce-ip/-port";
  thread_ = std::thread([this] { Run(); });
  return "";
}

void ClusterMember::Stop() {
  if (!thread_.joinable() && members_ == nullptr) return;
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  std::lock_guard lk(state_mu_);  // Gained / Lost check the clients under it
  if (members_ != nullptr) {
    rd_kafka_consumer_close(members_);
    rd_kafka_destroy(members_);
    members_ = nullptr;
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

void ClusterMember::Gained(const std::vector<int>& partitions) {
  std::lock_guard lk(state_mu_);
  if (producer_ == nullptr) return;
  DrainMembers();  // claim with the latest epochs this node can know of
  for (int p : partitions) {
    if (p < 0 || p >= s_.partitions) continue;
    if (std::none_of(claims_.begin(), claims_.end(), [&](auto& c) { return c.first == p; }))
      claims_.emplace_back(p, membership_.NextEpoch(p));
  }
  std::sort(claims_.begin(), claims_.end());
  spdlog::info("cluster: {} repartition partitions assigned, {} owned", partitions.size(), claims_.size());
  Publish(WallMs());
}

void ClusterMember::Lost(const std::vector<int>& partitions) {
  std::lock_guard lk(state_mu_);
  if (producer_ == nullptr) return;
  std::erase_if(claims_, [&](auto& c) { return std::find(partitions.begin(), partitions.end(), c.first) != partitions.end(); });
  spdlog::info("cluster: {} repartition partitions revoked, {} owned", partitions.size(), claims_.size());
  Publish(WallMs());
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
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard lk(state_mu_);
    DrainMembers();
    const int64_t now = WallMs();
    if (now - last_publish >= 1000) {
      Publish(now);
      last_publish = now;
    }
    rd_kafka_poll(producer_, 0);
    Rebuild(now, false);
  }
  // Leaving: the owner ingest has left the group; the others see at once
  // that this node holds nothing.
  std::lock_guard lk(state_mu_);
  claims_.clear();
  Publish(WallMs());
  rd_kafka_flush(producer_, 2000);
}

}  // namespace fkv
