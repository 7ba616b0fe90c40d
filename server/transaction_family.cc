// MULTI EXEC DISCARD WATCH UNWATCH: see transaction.h.
#include "server/transaction.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>

#include "server/aof.h"
#include "server/connection.h"
#include "server/server.h"
#include "storage/key_table.h"
#include "storage/snapshot.h"

namespace fkv {

uint64_t KeyDigest(ShardStore& st, std::string_view key, uint64_t hash, int64_t now_ms) {
  Record* r = st.Find(key, hash, now_ms);
  if (r == nullptr) return 0;
  thread_local std::string enc;
  enc.clear();
  snap::EncodeRecord(*r, &enc);
  return XXH3_64bits(enc.data(), enc.size()) | 1;  // never 0
}

ExclusiveRunner::ExclusiveRunner(ShardSet& set, std::function<bool()> stopping)
    : set_(set), stopping_(std::move(stopping)) {
  thread_ = std::thread([this] { Loop(); });
}

ExclusiveRunner::~ExclusiveRunner() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ExclusiveRunner::Run(std::function<void(bool)> body) {
  {
    std::lock_guard lk(mu_);
    q_.push_back(std::move(body));
  }
  cv_.notify_all();
}

void ExclusiveRunner::Loop() {
  for (;;) {
    std::function<void(bool)> body;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;
      body = std::move(q_.front());
      q_.pop_front();
    }
    RunOne(body);
  }
}

void ExclusiveRunner::RunOne(const std::function<void(bool)>& body) {
  struct Park {
    std::mutex mu;
    std::condition_variable cv;
    int parked = 0;
    bool released = false;
  };
  auto p = std::make_shared<Park>();
  const int n = set_.size();
  for (int i = 0; i < n; i++)
    set_.Post(i, [p] {
      std::unique_lock lk(p->mu);
      p->parked++;
      p->cv.notify_all();
      p->cv.wait(lk, [&] { return p->released; });
    });
  bool all = false;
  {
    std::unique_lock lk(p->mu);
    // A stopped shard never runs its park task: check for a shutdown now and then.
    while (!(all = p->parked == n) && !stopping_()) p->cv.wait_for(lk, std::chrono::milliseconds(100));
  }
  // The body runs its commands inline itself (RunQueued): what it posts
  // afterwards (the reply to the client) goes through the queues as usual.
  body(all);
  {
    std::lock_guard lk(p->mu);
    p->released = true;
  }
  p->cv.notify_all();
}

namespace {

// Keyless commands that touch no store: they do not pull a transaction onto
// every shard. Every other keyless command (INFO, DBSIZE, FEVENT, ...) does.
bool StoreFree(const CommandSpec* spec) {
  static const char* kNames[] = {"ping", "echo", "time", "command", "config", "select", "fviews", "finfo",
                                 "fingest", "lastsave", "unwatch"};
  for (const char* n : kNames)
    if (std::string_view(spec->name) == n) return true;
  return false;
}

}  // namespace

void Enqueue(ShardSet& set, Transaction& tx, const CommandSpec* spec, const ArgList& args) {
  tx.queued.push_back({spec, std::vector<std::string>(args.begin(), args.end())});
  if (spec->first_key <= 0 && !(spec->flags & kCmdMovableKeys)) {
    if (!StoreFree(spec)) tx.shard = Transaction::kManyShards;
    return;
  }
  ForEachKeyArg(*spec, args, [&](std::string_view key) {
    if (tx.shard != Transaction::kManyShards) tx.Touch(set.ShardOf(HashKey(key)));
  });
}

namespace {

// Runs a transaction's commands with nothing interleaved (the caller holds
// the exclusion): the watches first, then each command as the connection
// would run it, every reply into `w`. `shard` runs the keyless commands.
void RunQueued(Server* server, Connection* conn, const Transaction& tx, ReplyWriter& w, int shard) {
  ShardSet::InlinePosts inline_posts;
  ShardSet& set = server->shards();
  const int64_t now = NowMs();
  for (const auto& watch : tx.watched) {
    uint64_t h = HashKey(watch.key);
    if (KeyDigest(set.shard(set.ShardOf(h)).store, watch.key, h, now) != watch.digest) return w.NullArray();
  }
  w.Array(tx.queued.size());
  const bool tracking = server->config().latency_tracking();
  for (const auto& q : tx.queued) {
    const CommandSpec* spec = q.spec;
    ArgList args(q.args.begin(), q.args.end());
    int s = shard;
    uint64_t h = 0;
    if (spec->first_key > 0 && !(spec->flags & kCmdMultiShard) && args.size() > static_cast<size_t>(spec->first_key)) {
      h = HashKey(args[static_cast<size_t>(spec->first_key)]);
      s = set.ShardOf(h);
    }
    Shard& sh = set.shard(s);
    if (spec->flags & kCmdWrite) sh.counters.Add(sh.counters.writes, 1);
    CommandContext ctx{server, conn, spec, args, w, s, &sh.store, h, now};
    const uint64_t errors = w.errors(), t0 = MonotonicNs();
    spec->handler(ctx);
    if ((spec->flags & kCmdWrite) && !(spec->flags & kCmdMultiShard) && w.errors() == errors)
      aof::LogWrite(sh.store, aof::Kind::kCommand, now, args);
    sh.command_stats->Call(spec->index, MonotonicNs() - t0, w.errors() != errors, tracking);
  }
}

void Multi(CommandContext& c) {
  Transaction& tx = c.conn->tx();
  if (tx.active) return c.out.Error("ERR MULTI calls can not be nested");
  tx.active = true;
  c.out.Ok();
}

void Discard(CommandContext& c) {
  Transaction& tx = c.conn->tx();
  if (!tx.active) return c.out.Error("ERR DISCARD without MULTI");
  tx.Clear();
  c.out.Ok();
}

void Exec(CommandContext& c) {
  Transaction& tx = c.conn->tx();
  if (!tx.active) return c.out.Error("ERR EXEC without MULTI");
  c.conn->NoteWrite();
  if (tx.dirty) {
    tx.Clear();
    return c.out.Error("EXECABORT Transaction discarded because of previous errors.");
  }
  // One shard: the connection has come to it (Connection::Process routes
  // EXEC to the transaction's shard), so the transaction runs here, now.
  if (tx.shard == Transaction::kNoShard || tx.shard == c.shard) {
    RunQueued(c.server, c.conn, tx, c.out, c.shard);
    return tx.Clear();
  }
  auto job = std::make_shared<const Transaction>(std::move(tx));
  tx.Clear();
  Server* server = c.server;
  auto reply = c.Defer();
  auto conn = c.conn->self();
  int proto = c.conn->protocol();
  auto run = [server, conn, job, proto, reply](int shard) {
    auto buf = std::make_shared<std::string>();
    ReplyWriter w(buf.get(), proto);
    RunQueued(server, conn.get(), *job, w, shard);
    reply([buf](ReplyWriter& out) { out.buffer()->append(*buf); });
  };
  if (job->shard >= 0) return server->shards().Post(job->shard, [run, s = job->shard] { run(s); });
  server->exclusive().Run([run, reply, home = conn->home()](bool ok) {
    if (!ok) return reply([](ReplyWriter& out) { out.Error("ERR the server is shutting down"); });
    run(home);
  });
}

}  // namespace

void RunExclusive(CommandContext& c) {
  auto args = std::make_shared<std::vector<std::string>>(c.args.begin(), c.args.end());
  Server* server = c.server;
  const CommandSpec* spec = c.spec;
  auto reply = c.Defer();
  auto conn = c.conn->self();
  const int proto = c.conn->protocol();
  server->exclusive().Run([server, spec, args, reply, conn, proto](bool ok) {
    if (!ok) return reply([](ReplyWriter& out) { out.Error("ERR the server is shutting down"); });
    auto buf = std::make_shared<std::string>();
    {
      ShardSet::InlinePosts inline_posts;
      ReplyWriter w(buf.get(), proto);
      ArgList a(args->begin(), args->end());
      const int home = conn->home();
      CommandContext ctx{server, conn.get(), spec, a, w, home, &server->shards().shard(home).store, 0, NowMs()};
      spec->handler(ctx);
    }
    // Posted to the connection's home as any deferred reply: the rest of its
    // pipeline runs there, not on this thread.
    reply([buf](ReplyWriter& out) { out.buffer()->append(*buf); });
  });
}

namespace {

// WATCH key [key ...]: the digest of every key, read on its shard.
void Watch(CommandContext& c) {
  Transaction& tx = c.conn->tx();
  if (tx.active) return c.out.Error("ERR WATCH inside MULTI is not allowed");
  auto plan = c.PlanArgs(1, 1);
  auto digests = std::make_shared<std::vector<uint64_t>>(c.args.size() - 1, 0);
  auto keys = std::make_shared<std::vector<std::string>>(c.args.begin() + 1, c.args.end());
  int64_t now = c.now_ms;
  Connection* conn = c.conn;
  c.FanOut(
      plan,
      [plan, digests, keys, now](ShardStore& st, std::span<const uint32_t> idx) {
        for (uint32_t i : idx) (*digests)[i] = KeyDigest(st, (*keys)[i], plan->hash(i), now);
      },
      [conn, digests, keys, plan, set = &c.server->shards()](ReplyWriter& out) {
        Transaction& t = conn->tx();
        for (size_t i = 0; i < keys->size(); i++) t.watched.push_back({(*keys)[i], (*digests)[i]});
        for (size_t i = 0; i < keys->size(); i++) t.Touch(set->ShardOf(plan->hash(i)));
        out.Ok();
      });
}

void Unwatch(CommandContext& c) {
  c.conn->tx().watched.clear();
  c.out.Ok();
}

}  // namespace

void RegisterTransactionFamily(CommandTable& t) {
  const uint32_t X = kCmdTxControl | kCmdFast | kCmdLoading | kCmdStale;
  t.Register({"multi", 1, X, 0, 0, 0, Multi, "transactions", "Starts a transaction."});
  t.Register({"exec", 1, kCmdTxControl | kCmdLoading | kCmdStale, 0, 0, 0, Exec, "transactions",
              "Runs the commands queued since MULTI, with nothing interleaved."});
  t.Register({"discard", 1, X, 0, 0, 0, Discard, "transactions", "Drops the commands queued since MULTI."});
  t.Register({"watch", -2, kCmdTxControl | kCmdFast | kCmdMultiShard, 1, -1, 1, Watch, "transactions",
              "Makes the next EXEC abort if any of these keys changes first."});
  t.Register({"unwatch", 1, kCmdFast | kCmdLoading | kCmdStale, 0, 0, 0, Unwatch, "transactions",
              "Forgets every watched key."});
}

}  // namespace fkv
