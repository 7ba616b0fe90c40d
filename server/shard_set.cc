// ShardSet: see shard_set.h.
#include "server/shard_set.h"

#include <unistd.h>

#include "server/command.h"

namespace fkv {

namespace {
thread_local int tl_shard = -1;
}

ShardSet::ShardSet(int n) {
  for (int i = 0; i < n; i++) {
    auto s = std::make_unique<Shard>();
    s->id = i;
    s->command_stats = std::make_unique<CommandStats>(CommandTable::Get().all().size());
    guards_.push_back(asio::make_work_guard(s->io));
    shards_.push_back(std::move(s));
  }
}

ShardSet::~ShardSet() {
  Stop();
  Join();
}

void ShardSet::Start(const std::function<void(Shard&)>& on_start) {
  for (auto& sp : shards_) {
    Shard* s = sp.get();
    s->thread = std::thread([s, on_start] {
      tl_shard = s->id;
      s->tid.store(static_cast<int>(gettid()), std::memory_order_release);
      on_start(*s);
      s->io.run();
      s->finished.store(true, std::memory_order_release);
    });
  }
}

void ShardSet::RunOn(const std::vector<int>& shards, std::function<void(int, ShardStore&)> f,
                     std::function<void()> then) {
  if (shards.empty()) return then();
  struct State {
    std::atomic<size_t> remaining;
    std::function<void(int, ShardStore&)> f;
    std::function<void()> then;
  };
  auto st = std::make_shared<State>();
  st->remaining = shards.size();
  st->f = std::move(f);
  st->then = std::move(then);
  for (int s : shards) {
    Post(s, [this, st, s] {
      st->f(s, shard(s).store);
      if (st->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) st->then();
    });
  }
}

void ShardSet::Stop() {
  for (auto& s : shards_) s->io.stop();
}

void ShardSet::Join() {
  for (auto& s : shards_)
    if (s->thread.joinable()) s->thread.join();
}

int ShardSet::CurrentShard() { return tl_shard; }

}  // namespace fkv
