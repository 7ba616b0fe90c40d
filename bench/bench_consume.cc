// fkv_bench_consume: the ceiling of bench/ingest. A plain librdkafka
// consumer with the same setup as featurekv's sidecar consumer (a group.id
// that is never joined, every partition assigned from the beginning, no
// commits) that only counts what it polls: librdkafka's own consume rate
// from the same cluster in the same run.
//
// usage: fkv_bench_consume --brokers HOST:PORT --count N [--topic user_events]
//            [--property k=v ...] [--timeout-s 60]
//        fkv_bench_consume --brokers HOST:PORT --delay-secs S [--topic user_events]
//            [--property k=v ...]
//
// It reads until it has N messages and every partition reported its end
// (enable.partition.eof), and fails (exit 1) unless it read exactly N and
// the partitions' watermarks hold exactly N (the mock cluster of librdkafka
// 2.0.2 keeps ~5 MiB per partition and silently drops older data).
//
// Prints one line of key=value figures; rate_msgs_s counts from the first
// message to the Nth (connection set-up and the first fetch excluded), as
// bench/ingest does for featurekv.
//
// --delay-secs S instead reads new messages only (every partition from its
// end) and prints the delay from each message's Kafka timestamp (CreateTime)
// to the moment it was polled: p50, p99 and max in ms, the consumer-side
// ceiling of featurekv's event-to-servable delay. Protocol: it prints "ready"
// on standard output once a first (warm-up) message arrived, records from a
// line "go" on standard input, and prints its figures at the end of standard
// input (S seconds at most).
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {
[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "fkv_bench_consume: %s\n"
               "usage: fkv_bench_consume --brokers HOST:PORT --count N [--topic user_events]\n"
               "       [--property k=v ...] [--timeout-s 60]\n"
               "   or: fkv_bench_consume --brokers HOST:PORT --delay-secs S [--topic user_events] [--property k=v ...]\n",
               why.c_str());
  std::exit(2);
}

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "fkv_bench_consume: FAILED: %s\n", why.c_str());
  std::exit(1);
}

double Secs(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double WallMs() {
  using namespace std::chrono;
  return static_cast<double>(duration_cast<microseconds>(system_clock::now().time_since_epoch()).count()) / 1000.0;
}

// --delay-secs: prints "ready" after the first message arrives, starts
// recording on a line "go" on standard input, stops at end of input (or after
// `secs` seconds in all); records now - CreateTime per message.
int DelayMode(rd_kafka_t* rk, double secs) {
  std::vector<double> d;
  uint64_t errors = 0;
  bool ready = false, measuring = false;
  std::string in;
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
  while (std::chrono::steady_clock::now() < end) {
    pollfd pfd{0, POLLIN, 0};
    if (::poll(&pfd, 1, 0) > 0) {
      char buf[64];
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) break;  // end of input: done
      in.append(buf, static_cast<size_t>(n));
      if (in.find("go\n") != std::string::npos && !measuring) {
        measuring = true;
        d.clear();
      }
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 10);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_timestamp_type_t tt;
      int64_t ts = rd_kafka_message_timestamp(m, &tt);
      if (measuring && ts > 0) d.push_back(WallMs() - static_cast<double>(ts));
      if (!ready) {
        ready = true;
        std::printf("ready\n");
        std::fflush(stdout);
      }
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      errors++;
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  if (d.empty()) Fail("no message arrived while measuring");
  std::sort(d.begin(), d.end());
  std::printf("messages=%zu errors=%llu delay_p50_ms=%.1f delay_p99_ms=%.1f delay_max_ms=%.1f\n", d.size(),
              static_cast<unsigned long long>(errors), d[d.size() / 2], d[std::min(d.size() - 1, d.size() * 99 / 100)],
              d.back());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  std::string brokers, topic = "user_events";
  uint64_t count = 0;
  int timeout_s = 60;
  double delay_secs = 0;
  std::vector<std::pair<std::string, std::string>> props;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") Usage("measures librdkafka's consume rate");
    if (i + 1 >= argc) Usage("missing value for " + a);
    std::string v = argv[++i];
    if (a == "--brokers") brokers = v;
    else if (a == "--topic") topic = v;
    else if (a == "--count") count = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--timeout-s") timeout_s = std::atoi(v.c_str());
    else if (a == "--delay-secs") delay_secs = std::atof(v.c_str());
    else if (a == "--property") {
      size_t eq = v.find('=');
      if (eq == std::string::npos) Usage("--property wants k=v");
      props.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else Usage("unknown option " + a);
  }
  if (brokers.empty() || (count == 0 && delay_secs <= 0)) Usage("--brokers and --count (or --delay-secs) are required");

  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // featurekv's consumer settings (ingest/kafka_ingest.cc), then --property.
  std::vector<std::pair<std::string, std::string>> all = {
      {"bootstrap.servers", brokers},   {"group.id", "fkv-bench-consume"},
      {"enable.auto.commit", "false"},  {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"}, {"fetch.wait.max.ms", "10"}, {"queued.min.messages", "1000000"},
      {"enable.partition.eof", "true"}, {"log_level", "3"}};
  all.insert(all.end(), props.begin(), props.end());
  for (auto& [k, v] : all)
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      Usage("property " + k + ": " + err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (rk == nullptr) Fail(err);
  rd_kafka_poll_set_consumer(rk);

  // Every partition of the topic, from the beginning.
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) Fail(std::string("metadata: ") + rd_kafka_err2str(e));
  if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topics[0].partition_cnt < 1)
    Fail("topic " + topic + " not found");
  int nparts = md->topics[0].partition_cnt;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(nparts);
  for (int p = 0; p < nparts; p++)
    rd_kafka_topic_partition_list_add(list, topic.c_str(), md->topics[0].partitions[p].id)->offset =
        delay_secs > 0 ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  if (delay_secs > 0) {
    e = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) Fail(std::string("assign: ") + rd_kafka_err2str(e));
    return DelayMode(rk, delay_secs);
  }

  // What the partitions hold (low..high), to check nothing was dropped.
  int64_t held = 0;
  for (int i = 0; i < list->cnt; i++) {
    int64_t lo = 0, hi = 0;
    e = rd_kafka_query_watermark_offsets(rk, topic.c_str(), list->elems[i].partition, &lo, &hi, 5000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) Fail(std::string("watermarks: ") + rd_kafka_err2str(e));
    if (lo != 0) std::fprintf(stderr, "fkv_bench_consume: partition %d starts at offset %lld (data dropped)\n",
                              list->elems[i].partition, static_cast<long long>(lo));
    held += hi - lo;
  }
  if (static_cast<uint64_t>(held) != count)
    Fail("the partitions hold " + std::to_string(held) + " messages, expected " + std::to_string(count));

  auto t_start = std::chrono::steady_clock::now();
  e = rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) Fail(std::string("assign: ") + rd_kafka_err2str(e));

  uint64_t msgs = 0, bytes = 0, errors = 0;
  int eofs = 0;
  std::vector<bool> at_eof(static_cast<size_t>(nparts) + 1, false);
  std::chrono::steady_clock::time_point t_first{}, t_last{};
  auto deadline = t_start + std::chrono::seconds(timeout_s);
  auto take = [&](rd_kafka_message_t* m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      size_t p = static_cast<size_t>(m->partition);
      if (p < at_eof.size() && !at_eof[p]) {
        at_eof[p] = true;
        eofs++;
      }
    } else if (m->err) {
      errors++;
      std::fprintf(stderr, "fkv_bench_consume: %s\n", rd_kafka_message_errstr(m));
    } else {
      if (msgs == 0) t_first = std::chrono::steady_clock::now();
      msgs++;
      bytes += m->len;
      if (msgs == count) t_last = std::chrono::steady_clock::now();
      size_t p = static_cast<size_t>(m->partition);
      if (p < at_eof.size() && at_eof[p]) {  // more data after an EOF: not done after all
        at_eof[p] = false;
        eofs--;
      }
    }
    rd_kafka_message_destroy(m);
  };
  while (!(msgs >= count && eofs == nparts) && std::chrono::steady_clock::now() < deadline) {
    if (rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100)) take(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  if (msgs != count)
    Fail("read " + std::to_string(msgs) + " messages, expected " + std::to_string(count) +
         (std::chrono::steady_clock::now() >= deadline ? " (timed out)" : ""));
  if (eofs != nparts) Fail("not every partition reached its end (timed out)");
  double s = count > 1 ? Secs(t_first, t_last) : 0;
  std::printf("messages=%llu bytes=%llu partitions=%d errors=%llu first_msg_s=%.3f secs=%.3f rate_msgs_s=%.0f rate_mb_s=%.1f\n",
              static_cast<unsigned long long>(msgs), static_cast<unsigned long long>(bytes), nparts,
              static_cast<unsigned long long>(errors), Secs(t_start, t_first), s,
              s > 0 ? static_cast<double>(count - 1) / s : 0, s > 0 ? static_cast<double>(bytes) / s / 1e6 : 0);
  return 0;
}
