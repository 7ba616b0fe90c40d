// ClusterLog: see cluster_log.h.
#include "server/cluster_log.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <chrono>

namespace fkv {

// One Send call: its reply waits for the last acknowledgement.
struct ClusterLog::Pending {
  std::atomic<int> left{0};
  std::mutex mu;
  std::string error;  // the first refusal
  std::function<void(std::string)> done;
  void One(const std::string& err) {
    if (!err.empty()) {
      std::lock_guard lk(mu);
      if (error.empty()) error = err;
    }
    if (left.fetch_sub(1) == 1) {
      std::string e;
      {
        std::lock_guard lk(mu);
        e = error;
      }
      done(e);
      delete this;
    }
  }
};

namespace {
void DeliveredTrampoline(rd_kafka_t* rk, const rd_kafka_message_t* m, void*) {
  auto* p = static_cast<ClusterLog::Pending*>(m->_private);
  (void)rk;
  if (p != nullptr) p->One(m->err ? std::string("the repartition topic refused a record: ") + rd_kafka_err2str(m->err) : "");
}
}  // namespace

ClusterLog::ClusterLog(std::string brokers, std::string topic, std::string origin,
                       std::vector<std::pair<std::string, std::string>> properties)
    : brokers_(std::move(brokers)), topic_(std::move(topic)), origin_(std::move(origin)),
      properties_(std::move(properties)) {}

ClusterLog::~ClusterLog() { Stop(); }

std::string ClusterLog::Start() {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"bootstrap.servers", brokers_}, {"enable.idempotence", "true"}, {"linger.ms", "0"}, {"log_level", "3"}})
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return std::string("cluster log: ") + err;
    }
  // kafka-property (security settings...), then: a record never times out
  // (one that did might still land, and the client's retry would count
  // twice).
  properties_.emplace_back("message.timeout.ms", "0");
  for (const auto& [k, v] : properties_)
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return "kafka-property " + k + ": " + err;
    }
  rd_kafka_conf_set_dr_msg_cb(conf, &DeliveredTrampoline);
  producer_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (producer_ == nullptr) return std::string("cannot create the cluster log's producer: ") + err;
  thread_ = std::thread([this] { Run(); });
  return "";
}

void ClusterLog::Stop() {
  {
    std::lock_guard lk(send_mu_);  // a Send under way finishes first; later ones are refused
    closed_ = true;
  }
  if (producer_ == nullptr) return;
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  rd_kafka_flush(producer_, 5000);  // acknowledgements still due run their replies here
  rd_kafka_destroy(producer_);
  producer_ = nullptr;
}

void ClusterLog::Run() {
  pthread_setname_np(pthread_self(), "fkv-cluster-log");
  // Serves the acknowledgements as they come: each reply waits for one.
  while (!stop_.load()) rd_kafka_poll(producer_, 100);
}

void ClusterLog::Send(const std::vector<Event>& events, int64_t now_ms, std::function<void(std::string)> done) {
  size_t records = 0;
  for (const Event& e : events) records += e.partitions.size();
  if (records == 0) return done("");
  std::unique_lock lk(send_mu_);
  if (closed_ || producer_ == nullptr) {
    lk.unlock();
    return done("the server is shutting down");
  }
  auto* p = new Pending;
  p->left.store(static_cast<int>(records));
  p->done = std::move(done);
  std::string buf;
  for (const Event& e : events) {
    // Numbered in send order, past anything sent before, across restarts
    // too (microseconds of the wall clock, when they are ahead).
    using namespace std::chrono;
    const int64_t wall_us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
    last_seq_ = std::max(last_seq_ + 1, wall_us);
    RepartitionRecord r;
    r.source = e.source;
    r.topic = origin_;
    r.partition = 0;
    r.offset = last_seq_;
    r.now_ms = now_ms;
    r.payload = e.payload;
    buf.clear();
    EncodeRepartition(r, &buf);
    for (int part : e.partitions) {
      rd_kafka_resp_err_t err = rd_kafka_producev(
          producer_, RD_KAFKA_V_TOPIC(topic_.c_str()), RD_KAFKA_V_PARTITION(part), RD_KAFKA_V_VALUE(buf.data(), buf.size()),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(p), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        p->One(std::string("cannot send to the repartition topic: ") + rd_kafka_err2str(err));
        continue;
      }
      sent_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

}  // namespace fkv
