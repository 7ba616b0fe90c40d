// Config: the server's directives (Redis style: `name value...` lines in a
// file, then `--name value` overrides on the command line). Start-up parsing
// throws ConfigError naming the file, line and problem. Live directives
// (CONFIG SET) are read by every thread: hot ones are atomics, the rest sit
// behind a mutex. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/duration.h"

namespace fkv {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses Redis memory units: 100, 1k (1000), 1kb (1024), 1m, 1mb, 1g, 1gb.
bool ParseMemory(std::string_view s, uint64_t* out);

class Config {
 public:
  Config();

  // Loads a config file (throws ConfigError).
  void LoadFile(const std::string& path);
  // Applies "--name value..." arguments (throws ConfigError).
  void ApplyArgs(const std::vector<std::string>& args);
  // Sets one directive from its words. `live` = at run time (CONFIG SET):
  // immutable directives are refused. Returns an error text or "".
  std::string Set(std::string_view name, const std::vector<std::string>& values, bool live);
  // CONFIG GET: every (name, value) whose name matches the glob.
  std::vector<std::pair<std::string, std::string>> Get(std::string_view pattern) const;
  std::string GetString(std::string_view name) const;

  // Start-up values (immutable after start).
  int port() const { return port_; }
  const std::vector<std::string>& bind() const { return bind_; }
  int shards() const { return shards_; }
  int hz() const { return hz_.load(std::memory_order_relaxed); }
  std::string config_file() const { return config_file_; }

  // Live values, read on hot paths.
  uint64_t maxclients() const { return maxclients_.load(std::memory_order_relaxed); }
  uint64_t maxmemory() const { return maxmemory_.load(std::memory_order_relaxed); }
  uint64_t proto_max_bulk_len() const { return proto_max_bulk_len_.load(std::memory_order_relaxed); }
  uint64_t client_query_buffer_limit() const { return qbuf_limit_.load(std::memory_order_relaxed); }
  int64_t max_event_skew_ms() const { return max_event_skew_ms_.load(std::memory_order_relaxed); }
  // OBJECT ENCODING names a hash `listpack` within these bounds (as Redis).
  uint64_t hash_max_listpack_entries() const { return hash_max_listpack_entries_.load(std::memory_order_relaxed); }
  uint64_t hash_max_listpack_value() const { return hash_max_listpack_value_.load(std::memory_order_relaxed); }
  // The slow log and latency tracking (docs/operations.md, "Metrics").
  int64_t slowlog_log_slower_than() const { return slowlog_slower_than_.load(std::memory_order_relaxed); }
  uint64_t slowlog_max_len() const { return slowlog_max_len_.load(std::memory_order_relaxed); }
  bool latency_tracking() const { return latency_tracking_.load(std::memory_order_relaxed); }
  // appendfsync: 0 always, 1 everysec, 2 no.
  enum class Fsync : uint8_t { kAlways, kEverySec, kNo };
  Fsync appendfsync() const { return appendfsync_.load(std::memory_order_relaxed); }
  std::vector<double> latency_percentiles() const {
    std::lock_guard lk(mu_);
    return percentiles_;
  }
  // The conf file's `user` directives, in order ("user <name> <rules...>").
  std::vector<std::string> user_lines() const {
    std::lock_guard lk(mu_);
    return user_lines_;
  }

 struct Directive;  // one entry of the directive table (config.cc)

 private:
  const Directive* Find(std::string_view name) const;
  void SyncAtomics(bool live);

  mutable std::mutex mu_;
  std::map<std::string, std::string> values_;  // canonical text of each directive
  std::vector<std::string> kafka_properties_;  // "k v" pairs, repeatable
  std::vector<std::string> user_lines_;        // "user <name> <rules...>", repeatable
  std::string config_file_;

  int port_ = 6380;
  std::vector<std::string> bind_{"127.0.0.1"};
  int shards_ = 1;
  std::atomic<int> hz_{10};
  std::atomic<uint64_t> maxclients_{10000};
  std::atomic<uint64_t> maxmemory_{0};
  std::atomic<uint64_t> proto_max_bulk_len_{512ull << 20};
  std::atomic<uint64_t> qbuf_limit_{1ull << 30};
  std::atomic<int64_t> slowlog_slower_than_{10000};
  std::atomic<uint64_t> slowlog_max_len_{128};
  std::atomic<bool> latency_tracking_{true};
  std::atomic<Fsync> appendfsync_{Fsync::kEverySec};
  std::vector<double> percentiles_{50, 99, 99.9};  // under mu_
  std::atomic<int64_t> max_event_skew_ms_{300'000};
  std::atomic<uint64_t> hash_max_listpack_entries_{512}, hash_max_listpack_value_{64};
};

}  // namespace fkv
