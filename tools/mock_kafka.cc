// featurekv-mock-kafka [--brokers N] [--partitions P] [--topic T ...]:
// runs librdkafka's built-in mock cluster in its own process, prints its
// bootstrap address alone on the first line of standard output, and runs
// until SIGTERM or SIGINT. For tests, benchmarks and the demo (spec §8).
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr, "featurekv-mock-kafka: %s\nusage: featurekv-mock-kafka [--brokers N] [--partitions P] [--topic T ...]\n", why);
  std::exit(2);
}

int PositiveInt(const char* s, const char* what) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 1 || v > 10000) Usage((std::string("bad ") + what + " '" + s + "'").c_str());
  return static_cast<int>(v);
}
}  // namespace

int main(int argc, char** argv) {
  int brokers = 1, partitions = 1;
  std::vector<std::string> topics;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") Usage("runs a Kafka mock cluster");
    if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
    if (a == "--brokers") brokers = PositiveInt(argv[++i], "broker count");
    else if (a == "--partitions") partitions = PositiveInt(argv[++i], "partition count");
    else if (a == "--topic") topics.emplace_back(argv[++i]);
    else Usage(("unknown option " + a).c_str());
  }
  // Block the stop signals first; sigwait below takes them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::fprintf(stderr, "featurekv-mock-kafka: %s\n", err);
    return 1;
  }
  rd_kafka_mock_cluster_t* mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (mc == nullptr) {
    std::fprintf(stderr, "featurekv-mock-kafka: cannot create the mock cluster\n");
    return 1;
  }
  for (const auto& t : topics) {
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, t.c_str(), partitions, brokers < 3 ? brokers : 3);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "featurekv-mock-kafka: cannot create topic %s: %s\n", t.c_str(), rd_kafka_err2str(e));
      return 1;
    }
  }
  std::printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  std::fflush(stdout);
  std::fprintf(stderr, "featurekv-mock-kafka: %d broker(s), %zu topic(s) x %d partition(s); SIGTERM stops\n", brokers,
               topics.size(), partitions);
  int sig = 0;
  sigwait(&stop, &sig);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
