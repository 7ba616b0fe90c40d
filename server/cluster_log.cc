// ClusterLog: see cluster_log.h.
#include "server/cluster_log.h"
#include "server/server.h"  // NowMs

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <algorithm>
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
  FailWaiters([](int64_t, const Waiter&) { return true; },
              "ERR the write is in the log, but the server stopped before running it: its outcome is unknown here "
              "(the slot's next owner runs it)");
}

void ClusterLog::FailWaiters(const std::function<bool(int64_t, const Waiter&)>& which, const std::string& error) {
  std::vector<WriteDone> failed;
  {
    std::lock_guard lk(wait_mu_);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (!which(it->first, it->second)) {
        ++it;
        continue;
      }
      failed.push_back(std::move(it->second.done));
      it = waiters_.erase(it);
    }
  }
  for (auto& d : failed) d("", error);
}

void ClusterLog::Applied(int64_t seq, std::string reply) {
  WriteDone done;
  {
    std::lock_guard lk(wait_mu_);
    auto it = waiters_.find(seq);
    if (it == waiters_.end()) return;  // run again after a restart, or answered already
    done = std::move(it->second.done);
    waiters_.erase(it);
  }
  done(std::move(reply), "");
}

void ClusterLog::PartitionGained(const std::vector<int>& partitions) {
  std::lock_guard lk(wait_mu_);
  owned_.insert(partitions.begin(), partitions.end());
}

void ClusterLog::PartitionLost(const std::vector<int>& partitions) {
  {
    std::lock_guard lk(wait_mu_);  // a write routed here just before is refused from now on
    for (int p : partitions) owned_.erase(p);
  }
  FailWaiters([&](int64_t, const Waiter& w) { return std::find(partitions.begin(), partitions.end(), w.partition) != partitions.end(); },
              "ERR the write is in the log, but this node stopped owning its slot before running it: its outcome is "
              "unknown here (the slot's next owner runs it)");
}

uint64_t ClusterLog::writes_pending() const {
  std::lock_guard lk(wait_mu_);
  return waiters_.size();
}

void ClusterLog::Run() {
  pthread_setname_np(pthread_self(), "fkv-cluster-log");
  // Serves the acknowledgements as they come: each reply waits for one.
  while (!stop_.load()) {
    rd_kafka_poll(producer_, 100);
    const int64_t now = NowMs();
    FailWaiters([now](int64_t, const Waiter& w) { return w.deadline_ms <= now; },
                "ERR the write is in the log, but this node did not run it within " + std::to_string(kWriteTimeoutMs / 1000) +
                    " s (its owner ingest is behind)");
  }
}

int64_t ClusterLog::NextSeq() {
  // Numbered in send order, past anything sent before, across restarts
  // too (microseconds of the wall clock, when they are ahead).
  using namespace std::chrono;
  const int64_t wall_us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  return last_seq_ = std::max(last_seq_ + 1, wall_us);
}

void ClusterLog::SendCommand(int partition, std::span<const std::string_view> args, int64_t now_ms, bool resp3,
                             WriteDone done) {
  std::unique_lock lk(send_mu_);
  if (closed_ || producer_ == nullptr) {
    lk.unlock();
    return done("", "ERR the server is shutting down");
  }
  const int64_t seq = NextSeq();
  std::string payload, buf;
  EncodeArgs(args, &payload);
  RepartitionRecord r;
  r.topic = origin_;
  r.offset = seq;
  r.now_ms = now_ms;
  r.payload = payload;
  r.command = true;
  r.resp3 = resp3;
  EncodeRepartition(r, &buf);
  {
    // Waiting before it is sent: this node's ingest may run it before the
    // acknowledgement comes. A partition lost since the command was routed
    // here is refused before anything is sent (PartitionLost answers the
    // ones registered before it).
    std::unique_lock wl(wait_mu_);
    if (!owned_.contains(partition)) {
      wl.unlock();
      lk.unlock();
      return done("", "TRYAGAIN the slot is moving");
    }
    waiters_[seq] = Waiter{partition, NowMs() + kWriteTimeoutMs, std::move(done)};
  }
  auto* p = new Pending;
  p->left.store(1);
  p->done = [this, seq](const std::string& err) {
    if (!err.empty()) FailWaiters([seq](int64_t s, const Waiter&) { return s == seq; }, "ERR " + err);
  };
  rd_kafka_resp_err_t err = rd_kafka_producev(
      producer_, RD_KAFKA_V_TOPIC(topic_.c_str()), RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_VALUE(buf.data(), buf.size()),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(p), RD_KAFKA_V_END);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    lk.unlock();
    return p->One(std::string("cannot send to the repartition topic: ") + rd_kafka_err2str(err));
  }
  sent_.fetch_add(1, std::memory_order_relaxed);
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
    const int64_t seq = NextSeq();
    RepartitionRecord r;
    r.source = e.source;
    r.topic = origin_;
    r.partition = 0;
    r.offset = seq;
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
