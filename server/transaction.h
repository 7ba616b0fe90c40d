// Transactions: MULTI / EXEC / DISCARD / WATCH / UNWATCH (docs/commands.md,
// "Transactions"). A connection in MULTI queues its commands; EXEC runs
// them with nothing else interleaved:
//
// - when every key of the transaction (queued and watched) is on one shard,
//   on that shard's thread, in one task (a shard runs one task at a time);
// - otherwise on the ExclusiveRunner's thread while every shard is parked
//   (each shard's thread waits in a task of its own queue), so the
//   transaction may touch every store; commands that normally hop between
//   shards (FanOut, Defer, ShardSet::Post) run inline there.
//
// WATCH remembers a digest of each key's value and expiry; EXEC checks them
// first, on the same thread and with the same exclusion as the commands.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "server/command.h"

namespace fkv {

class ShardSet;
class ShardStore;

struct Transaction {
  struct Queued {
    const CommandSpec* spec;
    std::vector<std::string> args;
  };
  struct Watch {
    std::string key;
    uint64_t digest;  // KeyDigest at WATCH
  };
  static constexpr int kNoShard = -2, kManyShards = -1;
  bool active = false;  // between MULTI and EXEC / DISCARD
  bool dirty = false;   // a command was refused while queueing: EXEC aborts
  std::vector<Queued> queued;
  std::vector<Watch> watched;
  // The one shard every key so far (queued and watched) is on; kNoShard
  // before any; kManyShards once two differ or a command may touch any.
  int shard = kNoShard;
  void Touch(int s) { shard = shard == kNoShard || shard == s ? s : kManyShards; }
  void Clear() {
    active = dirty = false;
    queued.clear();
    watched.clear();
    shard = kNoShard;
  }
};

// Queues a command (MULTI) and notes the shards of its keys.
void Enqueue(ShardSet& set, Transaction& tx, const CommandSpec* spec, const ArgList& args);

// A digest of the live record at key (type, value and expiry), 0 when the
// key does not exist. On the key's shard.
uint64_t KeyDigest(ShardStore& st, std::string_view key, uint64_t hash, int64_t now_ms);

// Runs the command of c again on the ExclusiveRunner's thread while every
// shard is parked (as a transaction over many shards), replying when it is
// done: for a command that must read other shards' stores inline (FEVENT
// of a source whose views join). c's handler must not call this again
// when ShardSet::inline_posts() is on.
void RunExclusive(CommandContext& c);

// Runs bodies on a thread of its own, one at a time, each while every
// shard's thread is parked.
class ExclusiveRunner {
 public:
  ExclusiveRunner(ShardSet& set, std::function<bool()> stopping);
  ~ExclusiveRunner();
  // body(true) once every shard is parked (they resume when it returns);
  // body(false) when the server stops before they all were.
  void Run(std::function<void(bool)> body);

 private:
  void Loop();
  void RunOne(const std::function<void(bool)>& body);
  ShardSet& set_;
  std::function<bool()> stopping_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void(bool)>> q_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fkv
