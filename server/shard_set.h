// ShardSet: N shards, each one thread running its own io_context and owning
// one ShardStore and the connections accepted onto it (shared-nothing, as
// Dragonfly). Work for a key is posted to the thread of ShardOf(hash).
// Post() is thread-safe; a Shard's members are touched only by its thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <unordered_set>
#include <vector>

#include "server/asio.h"
#include "server/cluster.h"
#include "server/peer_client.h"
#include "server/command_stats.h"
#include "ingest/registry.h"
#include "storage/shard_plan.h"
#include "storage/shard_store.h"

namespace fkv {

class Connection;

// Counters written by one thread only, read by any (INFO).
struct alignas(64) ThreadCounters {
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> writes{0};  // write commands: changes for the save rules
  std::atomic<uint64_t> net_input{0};
  std::atomic<uint64_t> net_output{0};
  void Add(std::atomic<uint64_t>& c, uint64_t n) { c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
};

struct Shard {
  int id = 0;
  asio::io_context io{1};
  ShardStore store;
  std::shared_ptr<const Registry> registry;  // this thread's view of the current registry
  std::shared_ptr<const ClusterMap> cluster;  // cluster mode: this thread's view of who owns which slots
  std::unique_ptr<PeerClients> peers;          // cluster mode: this thread's connections to the other nodes
  std::unordered_set<Connection*> clients;  // connections whose home is here
  // Connections whose replies wait to be written after every connection
  // ready in this loop pass has run (docs/architecture.md, "Replies").
  std::vector<std::shared_ptr<Connection>> flush_queue;
  std::vector<std::shared_ptr<Connection>> durable_queue;  // those whose writes wait for appendfsync always
  bool flush_posted = false;
  ThreadCounters counters;
  std::unique_ptr<CommandStats> command_stats;  // by CommandTable index
  SlowLog slowlog;
  // The store's figures, published by the shard's cron (hz times a second)
  // for readers on other threads (the /metrics endpoint).
  std::atomic<uint64_t> pub_keys{0}, pub_entities{0}, pub_expired{0};
  // How late the last cron tick ran (microseconds): the time work queued
  // ahead of it on this shard's loop kept it waiting.
  std::atomic<int64_t> pub_loop_lag_us{0};
  std::chrono::steady_clock::time_point cron_due;
  std::unique_ptr<asio::steady_timer> cron;  // active expiry, client timeouts
  std::thread thread;
  std::atomic<bool> finished{false};
  std::atomic<int> tid{0};  // the thread's kernel id (INFO cpu reads its times)  // set by the thread when its loop has returned
};

class ShardSet {
 public:
  explicit ShardSet(int n);
  ~ShardSet();

  int size() const { return static_cast<int>(shards_.size()); }
  // Picks the shard of a key hash (storage/shard_plan.h).
  int ShardOf(uint64_t hash) const { return ShardOfHash(hash, size()); }
  Shard& shard(int i) { return *shards_[static_cast<size_t>(i)]; }
  // Every shard index, for commands that fan out to all of them.
  std::vector<int> All() const {
    std::vector<int> v(shards_.size());
    for (size_t i = 0; i < v.size(); i++) v[i] = static_cast<int>(i);
    return v;
  }
  template <class F>
  void Post(int i, F&& f) {
    if (tl_inline_posts_) return f();  // inside EXEC: the caller holds every shard it touches
    asio::post(shards_[static_cast<size_t>(i)]->io, std::forward<F>(f));
  }
  // While one lives on a thread, Post (and so RunOn, FanOut and Defer) runs
  // its work at once on that thread: EXEC runs a transaction's commands so,
  // holding every shard they touch (server/transaction.h).
  struct InlinePosts {
    InlinePosts() : was_(tl_inline_posts_) { tl_inline_posts_ = true; }
    ~InlinePosts() { tl_inline_posts_ = was_; }
    InlinePosts(const InlinePosts&) = delete;
    InlinePosts& operator=(const InlinePosts&) = delete;
    bool was_;
  };
  static bool inline_posts() { return tl_inline_posts_; }
  // Runs f() on shard i's thread `micros` microseconds from now (a timer on
  // its loop; dropped, not run, if the loop stops first).
  template <class F>
  void PostAfter(int i, int64_t micros, F&& f) {
    auto t = std::make_shared<asio::steady_timer>(shards_[static_cast<size_t>(i)]->io,
                                                  std::chrono::microseconds(micros));
    t->async_wait([t, f = std::forward<F>(f)](const boost::system::error_code&) mutable { f(); });
  }
  // Runs f(shard, store) on each of `shards` (distinct), in parallel on their
  // threads; then then() once, on the thread of the last one to finish.
  // Any thread may call it; commands that chain steps over shards use it
  // with CommandContext::Defer.
  void RunOn(const std::vector<int>& shards, std::function<void(int, ShardStore&)> f, std::function<void()> then);
  // Starts one thread per shard; `on_start(shard)` runs first on each.
  void Start(const std::function<void(Shard&)>& on_start);
  void Stop();  // stops every io_context at once (any thread)
  void Join();
  // Every shard's command statistics (for SumCommandStats; any thread).
  std::vector<const CommandStats*> AllCommandStats() const {
    std::vector<const CommandStats*> v;
    for (const auto& s : shards_) v.push_back(s->command_stats.get());
    return v;
  }
  // The shard whose thread is calling, or -1 for other threads.
  static int CurrentShard();

 private:
  // Defined here (constant-initialized, visible to every user) so access
  // needs no TLS wrapper call across translation units.
  static inline thread_local bool tl_inline_posts_ = false;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
};

}  // namespace fkv
