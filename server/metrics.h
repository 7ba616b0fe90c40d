// The metrics endpoint (docs/operations.md, "Metrics"): HTTP/1.1 on
// `metrics-bind`:`metrics-port`, served with Boost.Beast by one thread of its
// own, never by a shard. It reads only what the shards and the ingest
// thread publish (atomics, short locks of the ingest counters), so a scrape
// never waits for a shard and a shard never waits for a scrape.
//
//   GET /metrics  Prometheus text exposition format 0.0.4
//   GET /healthz  200 from start until shutdown begins, then 503
//   GET /readyz   200 once the snapshot is loaded and every assigned Kafka
//                 partition's lag is at most `ready-max-lag`; else 503 and why
//   other paths   404; other methods 405; a malformed request 400
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "server/asio.h"

namespace fkv {

class Server;

class MetricsServer {
 public:
  explicit MetricsServer(Server* server);
  ~MetricsServer();
  // Binds address:port (port 0 picks a free one) and starts the thread.
  // Returns the bound port; throws std::runtime_error when it cannot listen.
  int Start(const std::string& address, int port);
  void Stop();

  // Longest request head accepted, and the most connections served at once
  // (more are closed as soon as they are accepted).
  static constexpr size_t kMaxHeaderBytes = 8192;
  static constexpr int kMaxSessions = 256;
  // The thread's nice value: below the shards, as the ingest threads.
  static constexpr int kNice = 10;

 private:
  friend class HttpSession;
  void Accept();
  Server* server_;
  std::atomic<int> sessions_{0};  // before io_: sessions left in io_ at its end count down
  asio::io_context io_{1};
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
  std::thread thread_;
};

// The exposition text of every featurekv_* family (any thread).
std::string MetricsText(Server& server);
// Whether /readyz answers 200; otherwise *why says what is missing.
bool Ready(Server& server, std::string* why);

}  // namespace fkv
