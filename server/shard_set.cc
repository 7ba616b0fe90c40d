// ShardSet: see shard_set.h.
#include "server/shard_set.h"

namespace fkv {

namespace {
thread_local int tl_shard = -1;
}

ShardSet::ShardSet(int n) {
  for (int i = 0; i < n; i++) {
    auto s = std::make_unique<Shard>();
    s->id = i;
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
      on_start(*s);
      s->io.run();
      s->finished.store(true, std::memory_order_release);
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
