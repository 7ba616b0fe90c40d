// featurekv-mock-kafka [--brokers N] [--partitions P] [--topic T ...]:
// runs librdkafka's built-in mock cluster in its own process, prints its
// bootstrap address alone on the first line of standard output, and runs
// until SIGTERM or SIGINT. For tests, benchmarks and the demo (docs/operations.md, "Kafka tools").
//
// Standard input takes control commands, one per line, each answered with a
// line "ok" or "error: ..." on standard output:
//   down            takes every broker down (rd_kafka_mock_broker_set_down)
//   up              brings every broker back up
//   topic NAME P    creates topic NAME with P partitions
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
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
// Answers the control commands of standard input until it closes.
void Control(rd_kafka_mock_cluster_t* mc, int brokers, int replication) {
  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string cmd, name;
    in >> cmd;
    std::string reply = "ok";
    if (cmd == "down" || cmd == "up") {
      for (int id = 1; id <= brokers; id++) {
        rd_kafka_resp_err_t e = cmd == "down" ? rd_kafka_mock_broker_set_down(mc, id) : rd_kafka_mock_broker_set_up(mc, id);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) reply = std::string("error: ") + rd_kafka_err2str(e);
      }
    } else if (cmd == "topic") {
      int partitions = 0;
      if (!(in >> name >> partitions) || partitions < 1) {
        reply = "error: usage: topic NAME PARTITIONS";
      } else if (rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name.c_str(), partitions, replication)) {
        reply = std::string("error: ") + rd_kafka_err2str(e);
      }
    } else if (!cmd.empty()) {
      reply = "error: unknown command '" + cmd + "' (down, up, topic NAME PARTITIONS)";
    } else {
      continue;
    }
    std::printf("%s\n", reply.c_str());
    std::fflush(stdout);
  }
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
  int replication = brokers < 3 ? brokers : 3;
  for (const auto& t : topics) {
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, t.c_str(), partitions, replication);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::fprintf(stderr, "featurekv-mock-kafka: cannot create topic %s: %s\n", t.c_str(), rd_kafka_err2str(e));
      return 1;
    }
  }
  std::printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  std::fflush(stdout);
  std::fprintf(stderr, "featurekv-mock-kafka: %d broker(s), %zu topic(s) x %d partition(s); SIGTERM stops\n", brokers,
               topics.size(), partitions);
  std::thread(Control, mc, brokers, replication).detach();  // ends with standard input, or with the process
  int sig = 0;
  sigwait(&stop, &sig);
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
