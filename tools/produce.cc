// featurekv-produce: the clickstream of the README demo into a Kafka topic:
// JSON events {"user_id", "product_id", "action", "timestamp"} keyed by user
// id, actions click / view / add_to_cart / purchase, at a given rate.
// Prints progress on standard error once a second and a summary at the end;
// exits non-zero if any message failed delivery.
#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>

namespace {
std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_delivered{0}, g_failed{0};

void OnSignal(int) { g_stop = true; }

void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  if (m->err) g_failed++;
  else g_delivered++;
}

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "featurekv-produce: %s\n"
               "usage: featurekv-produce --brokers HOST:PORT [--topic user_events] [--rate N/s (0 = max)]\n"
               "       [--count N (0 = until stopped)] [--users N] [--products N] [--seed N]\n"
               "       [--unit s|ms] [--property k=v ...]\n",
               why.c_str());
  std::exit(2);
}

uint64_t Number(const char* s, const char* what) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') Usage(std::string("bad ") + what + " '" + s + "'");
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  std::string brokers, topic = "user_events", unit = "s";
  uint64_t rate = 1000, count = 0, users = 1000, products = 100, seed = 1;
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // Defaults that --property may override. Idempotence: a retry after a
  // broker outage never writes a message twice.
  rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") Usage("produces clickstream events");
    if (i + 1 >= argc) Usage("missing value for " + a);
    const char* v = argv[++i];
    if (a == "--brokers") brokers = v;
    else if (a == "--topic") topic = v;
    else if (a == "--rate") rate = Number(v, "rate");
    else if (a == "--count") count = Number(v, "count");
    else if (a == "--users") users = Number(v, "users");
    else if (a == "--products") products = Number(v, "products");
    else if (a == "--seed") seed = Number(v, "seed");
    else if (a == "--unit") unit = v;
    else if (a == "--property") {
      std::string kv = v;
      size_t eq = kv.find('=');
      if (eq == std::string::npos) Usage("--property wants k=v");
      if (rd_kafka_conf_set(conf, kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
        Usage(err);
    } else Usage("unknown option " + a);
  }
  if (brokers.empty()) Usage("--brokers is required");
  if (users == 0 || products == 0) Usage("--users and --products must be positive");
  if (unit != "s" && unit != "ms") Usage("--unit is s or ms");
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers.c_str(), err, sizeof err);
  rd_kafka_conf_set_dr_msg_cb(conf, OnDelivery);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::fprintf(stderr, "featurekv-produce: %s\n", err);
    return 1;
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  std::mt19937_64 rng(seed);
  const char* actions[] = {"click", "view", "view", "view", "click", "add_to_cart", "purchase"};
  auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  uint64_t sent = 0;
  char buf[256];
  char key[32];
  while (!g_stop && (count == 0 || sent < count)) {
    if (rate > 0) {  // pace: do not run ahead of sent / rate
      auto due = start + std::chrono::microseconds(sent * 1'000'000 / rate);
      auto now = std::chrono::steady_clock::now();
      if (due > now) std::this_thread::sleep_for(due - now);
    }
    uint64_t user = rng() % users, product = rng() % products;
    const char* action = actions[rng() % (sizeof actions / sizeof actions[0])];
    auto wall = std::chrono::system_clock::now().time_since_epoch();
    long long ts = unit == "s" ? std::chrono::duration_cast<std::chrono::seconds>(wall).count()
                               : std::chrono::duration_cast<std::chrono::milliseconds>(wall).count();
    int n = std::snprintf(buf, sizeof buf, "{\"user_id\":%llu,\"product_id\":%llu,\"action\":\"%s\",\"timestamp\":%lld}",
                          static_cast<unsigned long long>(user), static_cast<unsigned long long>(product), action, ts);
    int kn = std::snprintf(key, sizeof key, "%llu", static_cast<unsigned long long>(user));
    for (;;) {
      rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key, static_cast<size_t>(kn)),
                                                RD_KAFKA_V_VALUE(buf, static_cast<size_t>(n)),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk, 10);
        continue;
      }
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        std::fprintf(stderr, "featurekv-produce: %s\n", rd_kafka_err2str(e));
        g_failed++;
      }
      break;
    }
    sent++;
    rd_kafka_poll(rk, 0);
    auto now = std::chrono::steady_clock::now();
    if (now - last_report >= std::chrono::seconds(1)) {
      last_report = now;
      double secs = std::chrono::duration<double>(now - start).count();
      std::fprintf(stderr, "featurekv-produce: %llu sent, %llu delivered, %llu failed, %.0f events/s\n",
                   static_cast<unsigned long long>(sent), static_cast<unsigned long long>(g_delivered.load()),
                   static_cast<unsigned long long>(g_failed.load()), sent / secs);
    }
  }
  rd_kafka_flush(rk, 30'000);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "featurekv-produce: done: %llu sent, %llu delivered, %llu failed in %.1f s\n",
               static_cast<unsigned long long>(sent), static_cast<unsigned long long>(g_delivered.load()),
               static_cast<unsigned long long>(g_failed.load()), secs);
  bool ok = g_failed == 0 && g_delivered == sent;
  rd_kafka_destroy(rk);
  return ok ? 0 : 1;
}
