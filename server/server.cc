// Server: see server.h.
#include "server/server.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <map>
#include <set>
#include <unordered_map>
#include <sstream>

#include "server/acl.h"
#include "server/allocator_stats.h"
#include "server/connection.h"
#include "server/feature_values.h"
#include "storage/key_table.h"

namespace fkv {

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int64_t NowUs() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

namespace {
// The server as seen by the Kafka consumer thread.
class ServerSink : public IngestSink {
 public:
  explicit ServerSink(Server* s) : s_(s) {}
  std::shared_ptr<const Registry> CurrentRegistry() override { return s_->registry(); }
  int ShardCount() override { return s_->shards().size(); }
  int64_t MaxEventSkewMs() override { return s_->config().max_event_skew_ms(); }
  void RunOnShard(int shard, std::function<void(ShardStore&)> apply) override {
    ShardSet* set = &s_->shards();
    set->Post(shard, [set, shard, apply = std::move(apply)] { apply(set->shard(shard).store); });
  }
  void RunOnShardAfter(int shard, int64_t micros, std::function<void(ShardStore&)> apply) override {
    ShardSet* set = &s_->shards();
    set->PostAfter(shard, micros, [set, shard, apply = std::move(apply)] { apply(set->shard(shard).store); });
  }
  uint64_t ShardCommands(int shard) override {
    return s_->shards().shard(shard).counters.commands.load(std::memory_order_relaxed);
  }
  IngestStats& Stats() override { return s_->ingest_stats; }
  bool JoinLookups(std::shared_ptr<const Registry> reg, std::vector<JoinRequest>* requests, int64_t now_ms,
                   const std::atomic<bool>& stop) override {
    // The tasks work on a copy they share: one the caller stopped waiting
    // for still has live memory (and registry) when it runs.
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      int left = 0;
      std::vector<JoinRequest> reqs;
      std::shared_ptr<const Registry> reg;
    };
    auto sh = std::make_shared<Shared>();
    sh->reg = std::move(reg);
    for (const JoinRequest& r : *requests) sh->reqs.push_back(JoinRequest{r.join, r.key, {}});
    ShardSet* set = &s_->shards();
    std::vector<std::vector<size_t>> by_shard(static_cast<size_t>(set->size()));
    for (size_t i = 0; i < sh->reqs.size(); i++)
      by_shard[static_cast<size_t>(set->ShardOf(HashKey(sh->reqs[i].key)))].push_back(i);
    for (const auto& idx : by_shard) sh->left += !idx.empty();
    for (int s = 0; s < set->size(); s++) {
      if (by_shard[static_cast<size_t>(s)].empty()) continue;
      set->Post(s, [set, s, now_ms, sh, idx = std::move(by_shard[static_cast<size_t>(s)])] {
        for (size_t i : idx) {
          JoinRequest& r = sh->reqs[i];
          ReadJoined(set->shard(s).store, *sh->reg, *r.join, r.key, HashKey(r.key), now_ms, &r.values);
        }
        std::lock_guard lk(sh->mu);
        if (--sh->left == 0) sh->cv.notify_all();
      });
    }
    std::unique_lock lk(sh->mu);
    while (sh->left > 0)
      if (!sh->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return sh->left == 0; }) && stop.load()) return false;
    for (size_t i = 0; i < requests->size(); i++) (*requests)[i].values = std::move(sh->reqs[i].values);
    return true;
  }

  int LoggedShard(const LoggedCommand& cmd) override {
    const CommandSpec* spec = CommandTable::Get().Find(cmd.args[0]);
    if (spec == nullptr || !(spec->flags & kCmdWrite)) return -1;
    ArgList args(cmd.args.begin(), cmd.args.end());
    int shard = -2;  // no key yet
    ForEachKeyArg(*spec, args, [&](std::string_view key) {
      const int k = s_->shards().ShardOf(HashKey(key));
      shard = shard == -2 || shard == k ? k : -1;
    });
    return shard < 0 ? -1 : shard;
  }
  void RunLogged(int shard, const LoggedCommand& cmd) override { Run(shard, cmd); }
  void RunLoggedExclusive(const LoggedCommand& cmd, const std::atomic<bool>& stop) override {
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
    };
    auto w = std::make_shared<Wait>();
    auto c = std::make_shared<LoggedCommand>(cmd);
    s_->exclusive().Run([this, w, c](bool ok) {
      if (ok) Run(0, *c);
      std::lock_guard lk(w->mu);
      w->done = true;
      w->cv.notify_all();
    });
    std::unique_lock lk(w->mu);
    while (!w->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return w->done; }))
      if (stop.load()) return;
  }

 private:
  // Runs a logged write as a connection would (its clock is the record's),
  // on a thread holding every shard it touches; the node that accepted it
  // gets the reply (docs/architecture.md, "Cluster mode").
  void Run(int shard, const LoggedCommand& cmd) {
    ShardSet& set = s_->shards();
    std::string reply;
    ReplyWriter w(&reply, cmd.resp3 ? 3 : 2);
    const CommandSpec* spec = CommandTable::Get().Find(cmd.args[0]);
    if (spec == nullptr || !(spec->flags & kCmdWrite)) {
      w.Error("ERR not a write command: " + cmd.args[0]);
    } else {
      // Inline posts for the handler only: the reply below must reach its
      // connection by a real post, never run inside this apply.
      ShardSet::InlinePosts inline_posts;
      ArgList args(cmd.args.begin(), cmd.args.end());
      uint64_t hash = 0;
      if (spec->first_key > 0 && !(spec->flags & kCmdMultiShard) && args.size() > static_cast<size_t>(spec->first_key)) {
        hash = HashKey(args[static_cast<size_t>(spec->first_key)]);
        shard = set.ShardOf(hash);
      }
      CommandContext ctx{s_, nullptr, spec, args, w, shard, &set.shard(shard).store, hash, cmd.now_ms};
      spec->handler(ctx);
    }
    if (ClusterLog* log = s_->cluster_log(); log != nullptr && cmd.origin == log->origin())
      log->Applied(cmd.seq, std::move(reply));
  }
  Server* s_;
};
}  // namespace

Server::Server(Config& config)
    : config_(config),
      snapshots_(std::make_unique<SnapshotManager>(this)),
      drift_(std::make_unique<DriftManager>(this)),
      aof_(std::make_unique<AofManager>(this)) {}

Server::~Server() {
  Shutdown("destructor");
  Wait();
  metrics_.reset();  // it reads the shards, the ingest and the snapshots: it goes first
  exclusive_.reset();  // it parks the shards: before they go
  aof_.reset();        // the shards are stopped: it writes and fsyncs what they logged
  StopShutdownWatchdog();
  control_io_.stop();
  if (control_thread_.joinable()) control_thread_.join();
  snapshots_.reset();  // its worker finishes what it holds while the rest still exists
  kafka_.reset();      // after the shards: no batch of it can still run
  repartitioner_.reset();
}

void Server::LoadAcl() {
  std::vector<std::string> lines = config_.user_lines();
  std::string aclfile = config_.GetString("aclfile");
  if (!lines.empty() && !aclfile.empty())
    throw std::runtime_error("configuring users in the config file and an aclfile at the same time is not valid: use one");
  std::string err = aclfile.empty() ? acl_.LoadLines(lines, config_.config_file().empty() ? "config" : config_.config_file())
                                    : acl_.LoadFile(aclfile);
  if (!err.empty()) throw std::runtime_error("bad ACL: " + err);
  std::string pass = config_.GetString("requirepass");
  if (!pass.empty()) acl_.SetRequirePass(pass);
  acl_.set_log_max(static_cast<size_t>(std::stoull(config_.GetString("acllog-max-len"))));
}

std::string Server::LoadKeys() {
  if (std::string err = SetEncryptionKeyFile(config_.GetString("snapshot-encryption-key-file")); !err.empty())
    return err;
  std::string prev = config_.GetString("snapshot-encryption-previous-key-file");
  if (prev.empty()) return "";
  std::shared_ptr<const crypt::Key> k;
  if (std::string err = crypt::ReadKeyFile(prev, &k); !err.empty()) return err;
  keys_.SetPrevious(std::move(k));
  return "";
}

std::string Server::SetEncryptionKeyFile(const std::string& path) {
  std::shared_ptr<const crypt::Key> k;
  if (!path.empty())
    if (std::string err = crypt::ReadKeyFile(path, &k); !err.empty()) return err;
  keys_.SetCurrent(std::move(k));
  return "";
}

int Server::Start() {
  start_ms_ = NowMs();
  stat_reset_ms = static_cast<uint64_t>(start_ms_);
  CommandTable::Get().Freeze();
  LoadAcl();
  if (std::string err = audit_.Open(config_.GetString("audit-log")); !err.empty()) throw std::runtime_error(err);
  if (std::string err = LoadKeys(); !err.empty()) throw std::runtime_error(err);
  shards_ = std::make_unique<ShardSet>(config_.shards());
  exclusive_ = std::make_unique<ExclusiveRunner>(*shards_, [this] { return stopping(); });
  asio::io_context& io0 = shards_->shard(0).io;
  // Listeners: plain TCP on `port` (0 = a free one, or none when tls-port
  // is set), TLS on `tls-port`; every bind address gets each.
  auto listen = [&](int want, bool tls) {
    int port = want;
    for (const std::string& addr : config_.bind()) {
      boost::system::error_code ec;
      auto ip = asio::ip::make_address(addr == "*" ? "0.0.0.0" : addr, ec);
      if (ec) throw std::runtime_error("bad bind address '" + addr + "'");
      asio::ip::tcp::endpoint ep(ip, static_cast<unsigned short>(port));
      auto acc = std::make_unique<asio::ip::tcp::acceptor>(io0);
      acc->open(ep.protocol(), ec);
      if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acc->bind(ep, ec);
      if (!ec) acc->listen(511, ec);
      if (ec) throw std::runtime_error("cannot listen on " + addr + ":" + std::to_string(port) + ": " + ec.message());
      port = acc->local_endpoint().port();  // port 0 picks a free one; the others bind the same
      acceptors_.push_back(std::move(acc));
      acceptor_tls_.push_back(tls);
    }
    return port;
  };
  const int tls_want = std::stoi(config_.GetString("tls-port"));
  if (tls_want > 0) {
    if (std::string err = ReloadTls(); !err.empty()) throw std::runtime_error("TLS: " + err);
    tls_port_ = listen(tls_want, true);
  }
  int port = tls_want > 0 && config_.port() == 0 ? 0 : listen(config_.port(), false);
  port_ = port;
  // The metrics endpoint comes up before the snapshot loads, so /healthz and
  // /readyz (503 "loading the snapshot") answer during a long load.
  if (int mport = std::stoi(config_.GetString("metrics-port")); mport > 0) {
    std::string maddr = config_.GetString("metrics-bind");
    if (maddr.empty()) maddr = config_.bind().front();
    metrics_ = std::make_unique<MetricsServer>(this);
    metrics_port_ = metrics_->Start(maddr, mport);
    spdlog::info("metrics on http://{}:{}/metrics", maddr, metrics_port_);
  }
  signals_ = std::make_unique<asio::signal_set>(control_io_, SIGTERM, SIGINT, SIGHUP);
  WaitSignal();
  control_thread_ = std::thread([this] { control_io_.run(); });
  for (size_t i = 0; i < acceptors_.size(); i++) Accept(i);
  for (int i = 0; i < shards_->size(); i++) shards_->shard(i).registry = registry();
  std::vector<snap::KafkaPosition> positions;
  if (ignore_snapshot_) {
    spdlog::warn("--ignore-snapshot: starting empty, whatever the snapshot directory holds");
  } else if (std::string err = snapshots_->Load(&positions); !err.empty()) {
    throw std::runtime_error(err + " (start with --ignore-snapshot to start empty)");
  }
  if (aof_->enabled() && config_.GetString("cluster-enabled") == "yes")
    throw std::runtime_error("appendonly yes is not for cluster mode: there every write is kept by the repartition topic "
                             "(docs/operations.md, \"Cluster mode\")");
  if (aof_->enabled()) {
    // The direct writes after the snapshot's cut (docs/operations.md, "Durability").
    uint64_t base = snapshots_->loaded_aof_generation();
    if (ignore_snapshot_) base = UINT64_MAX;  // starting empty: the old files are not replayed
    if (std::string err = aof_->Replay(base); !err.empty()) throw std::runtime_error(err);
    if (std::string err = aof_->Start(); !err.empty()) throw std::runtime_error("append-only file: " + err);
  }
  if (config_.GetString("cluster-enabled") == "yes") {
    // Until membership says otherwise no slot has an owner (set before the
    // shard threads start; later maps reach them by a post).
    const int nparts = std::stoi(config_.GetString("cluster-repartition-partitions"));
    auto none = std::make_shared<const ClusterMap>(nparts, std::vector<ClusterNode>{});
    cluster_held_ = std::make_unique<std::atomic<PartitionHeld>[]>(static_cast<size_t>(nparts));
    for (int i = 0; i < shards_->size(); i++) {
      shards_->shard(i).cluster = none;
      shards_->shard(i).peers = std::make_unique<PeerClients>(shards_->shard(i).io, config_.GetString("requirepass"));
    }
  }
  shards_->Start([this](Shard& s) {
    s.cron = std::make_unique<asio::steady_timer>(s.io);
    ScheduleCron(s);
  });
  if (config_.GetString("cluster-enabled") == "yes") StartCluster(positions);
  std::string brokers = config_.GetString("kafka-brokers");
  if (!brokers.empty() && !cluster_) {
    KafkaSettings ks = IngestSettings();
    sink_ = std::make_unique<ServerSink>(this);
    kafka_ = std::make_unique<KafkaIngest>(ks, sink_.get());
    kafka_->SetInitialPositions(positions);
    kafka_->RestoreReplay(snapshots_->loaded_replay());
    std::string err = kafka_->Start();
    if (!err.empty()) throw std::runtime_error("kafka: " + err);
  }
  serving_.store(true, std::memory_order_release);
  return port_;
}

KafkaSettings Server::IngestSettings() {
  KafkaSettings ks;
  ks.brokers = config_.GetString("kafka-brokers");
  ks.fetch_wait_max_ms = std::stoi(config_.GetString("kafka-fetch-wait-max-ms"));
  ks.nice = std::stoi(config_.GetString("kafka-ingest-nice"));
  ks.replay_rate = std::stoull(config_.GetString("kafka-replay-rate"));
  ks.dlq_topic = config_.GetString("kafka-dlq-topic");
  ks.group = config_.GetString("kafka-group");
  std::istringstream in(config_.GetString("kafka-property"));
  for (std::string k, v; in >> k >> v;) ks.properties.emplace_back(k, v);
  return ks;
}

std::string Server::ClusterRegistryProblem(const Registry& reg) const {
  if (config_.GetString("cluster-enabled") != "yes") return "";
  for (const SourceDef& src : reg.sources())
    if (src.has_joins)
      return "source '" + src.name + "' feeds a view with joins: joins are not available in cluster mode yet";
  return "";
}

// Whether this node's state of these partitions is servable (ClusterRoute).
void Server::SetHeld(const std::vector<int>& partitions, PartitionHeld h) {
  const int nparts = std::stoi(config_.GetString("cluster-repartition-partitions"));
  for (int p : partitions)
    if (p >= 0 && p < nparts) cluster_held_[static_cast<size_t>(p)].store(h, std::memory_order_release);
    else spdlog::error("cluster: partition {} of the repartition topic is past cluster-repartition-partitions {}", p, nparts);
}

// On every shard: removes the keys of the slots of these repartition
// partitions (a cluster node's state of partitions it lost, or is about to
// restore from the log). Posted from the owner ingest's thread, so it runs
// in order with that ingest's batches.
void Server::DropPartitionState(const std::vector<int>& partitions) {
  if (partitions.empty()) return;
  const int nparts = std::stoi(config_.GetString("cluster-repartition-partitions"));
  auto drop = std::make_shared<std::vector<char>>(static_cast<size_t>(nparts), 0);
  for (int p : partitions)
    if (p >= 0 && p < nparts) (*drop)[static_cast<size_t>(p)] = 1;
  for (int i = 0; i < shards_->size(); i++)
    shards_->Post(i, [this, i, drop, nparts] {
      ShardStore& st = shards_->shard(i).store;
      // Batches handed over before may still be partly queued here (ingest
      // applies them in slices): they go first, or their later slices would
      // bring keys of these partitions back.
      if (kafka_) kafka_->ApplyPending(i, st);
      const int64_t now = NowMs();
      std::vector<std::string> keys;
      uint64_t cur = 0;
      do {
        cur = st.Scan(cur, now, [&](Record* r) {
          if ((*drop)[static_cast<size_t>(PartitionOfKey(r->key(), nparts))]) keys.emplace_back(r->key());
        });
      } while (cur != 0);
      for (const std::string& k : keys) st.Erase(k, HashKey(k), now);
      if (!keys.empty()) spdlog::info("cluster: shard {} dropped {} key(s) of partitions it no longer serves", i, keys.size());
    });
}

// Cluster mode (docs/architecture.md, "Cluster mode"): the node id kept in
// cluster-config-file (made at the first start), the membership thread,
// each shard's copy of the slot map, and the two ingests: the source
// consumer that repartitions, and the owner that applies its partitions.
void Server::StartCluster(const std::vector<snap::KafkaPosition>& positions) {
  const std::string brokers = config_.GetString("kafka-brokers"), group = config_.GetString("kafka-group");
  if (brokers.empty() || group.empty())
    throw std::runtime_error("cluster-enabled yes needs kafka-brokers and kafka-group (Kafka is the cluster's log and coordinator)");
  if (brokers == "mock")
    throw std::runtime_error("cluster-enabled yes needs a Kafka the nodes share; 'kafka-brokers mock' is one per process");
  ClusterSettings cs;
  cs.brokers = brokers;
  cs.repartition_topic = config_.GetString("cluster-repartition-topic");
  if (cs.repartition_topic.empty()) cs.repartition_topic = group + "-repartition";
  cs.members_topic = cs.repartition_topic + "-members";
  cs.partitions = std::stoi(config_.GetString("cluster-repartition-partitions"));
  cs.node_timeout_ms = std::stoll(config_.GetString("cluster-node-timeout"));
  std::istringstream in(config_.GetString("kafka-property"));
  for (std::string k, v; in >> k >> v;) cs.properties.emplace_back(k, v);
  cs.ip = config_.GetString("cluster-announce-ip");
  if (cs.ip.empty()) cs.ip = config_.bind().front() == "*" || config_.bind().front() == "0.0.0.0" ? "127.0.0.1" : config_.bind().front();
  cs.port = std::stoi(config_.GetString("cluster-announce-port"));
  if (cs.port == 0) cs.port = port_;
  std::string path = config_.GetString("cluster-config-file");
  if (!path.empty() && path[0] != '/') path = config_.GetString("dir") + "/" + path;
  cs.node_id = ReadOrMakeNodeId(path);
  if (std::string err = ClusterRegistryProblem(*registry()); !err.empty()) throw std::runtime_error(err);
  // Before cluster_: FEVENT takes the cluster path once cluster_ is set.
  cluster_log_ = std::make_unique<ClusterLog>(brokers, cs.repartition_topic, "writes/" + cs.node_id, cs.properties);
  if (std::string err = cluster_log_->Start(); !err.empty()) throw std::runtime_error("cluster: " + err);
  cluster_ = std::make_unique<ClusterMember>(cs, [this](std::shared_ptr<const ClusterMap> map) {
    for (int i = 0; i < shards_->size(); i++)
      shards_->Post(i, [this, i, map] { shards_->shard(i).cluster = map; });
  });
  if (std::string err = cluster_->Start(); !err.empty()) throw std::runtime_error("cluster: " + err);
  const int nparts = cs.partitions;
  auto partition_of = [nparts](std::string_view key) { return PartitionOfKey(key, nparts); };
  sink_ = std::make_unique<ServerSink>(this);
  KafkaSettings owner = IngestSettings();
  owner.dlq_topic.clear();  // the repartitioner dead-letters the sources' bad messages
  owner.role = KafkaSettings::Role::kOwner;
  owner.group = group + "-repartition";
  owner.repartition_topic = cs.repartition_topic;
  owner.partition_of_key = partition_of;
  owner.orphan_grace_ms = cs.node_timeout_ms;
  // Not servable from before the claim is published until restored; not
  // servable from the revocation on, before its keys go.
  owner.on_gained = [this](const std::vector<int>& gained, const std::vector<int>& fresh) {
    SetHeld(gained, PartitionHeld::kRestoring);
    cluster_log_->PartitionGained(gained);
    DropPartitionState(fresh);
    cluster_->Gained(gained);
  };
  owner.on_lost = [this](const std::vector<int>& lost, bool drop) {
    SetHeld(lost, PartitionHeld::kNo);
    cluster_log_->PartitionLost(lost);
    if (drop) DropPartitionState(lost);
    cluster_->Lost(lost);
  };
  owner.on_restored = [this](int p) { SetHeld({p}, PartitionHeld::kServing); };
  // Static membership would keep a stopped node's slots in the group until
  // its session expires: the owner always leaves at once.
  std::erase_if(owner.properties, [](const auto& kv) { return kv.first == "group.instance.id"; });
  kafka_ = std::make_unique<KafkaIngest>(owner, sink_.get());
  kafka_->SetInitialPositions(positions);
  kafka_->RestoreMarks(snapshots_->loaded_marks());
  if (std::string err = kafka_->Start(); !err.empty()) throw std::runtime_error("cluster: " + err);
  KafkaSettings rep = IngestSettings();
  rep.role = KafkaSettings::Role::kRepartition;
  rep.repartition_topic = cs.repartition_topic;
  rep.partition_of_key = partition_of;
  repartitioner_ = std::make_unique<KafkaIngest>(rep, sink_.get());
  if (std::string err = repartitioner_->Start(); !err.empty()) throw std::runtime_error("cluster: " + err);
  spdlog::info("cluster mode: node {} announced as {}:{}, {} repartition partitions of {}", cs.node_id, cs.ip, cs.port,
               cs.partitions, cs.repartition_topic);
}

void Server::WaitSignal() {
  signals_->async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      audit_.Reopen();  // log rotation
      ReloadOnSignal();
      return WaitSignal();
    }
    std::string name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    audit_.Record("shutdown", "signal", "", {{"signal", name}});
    WaitSignal();  // a second signal during the save exits at once
    ShutdownWithSave(name, SaveMode::kDefault, [name](const std::string& err) {
      spdlog::error("{}: the snapshot failed ({}): not exiting (SHUTDOWN NOSAVE or a second {} exits without one)",
                    name, err, name);
    });
  });
}

void Server::LoadInitialRegistry() {
  std::string path = config_.GetString("registry");
  if (path.empty()) {
    SetRegistry(Registry::Empty());
    return;
  }
  SetRegistry(Registry::LoadFile(path));  // throws RegistryError
}

std::shared_ptr<const Registry> Server::registry() const {
  std::lock_guard lk(registry_mu_);
  return registry_ ? registry_ : Registry::Empty();
}

void Server::SetRegistry(std::shared_ptr<const Registry> reg) {
  std::lock_guard lk(registry_mu_);
  registry_ = std::move(reg);
}

std::map<std::string, int> Server::wanted_defaults() const {
  std::lock_guard lk(registry_mu_);
  return wanted_defaults_;
}

void Server::SetWantedDefault(const std::string& view, int version) {
  std::lock_guard lk(registry_mu_);
  wanted_defaults_[view] = version;
}

void Server::SetWantedDefaults(std::map<std::string, int> all) {
  std::lock_guard lk(registry_mu_);
  wanted_defaults_ = std::move(all);
}

std::string Server::ChangeRegistry(const RegistryMaker& make,
                                   std::function<void(std::shared_ptr<const Registry>)> done) {
  std::lock_guard lk(change_mu_);
  std::shared_ptr<const Registry> base = pending_ ? pending_ : registry(), next;
  if (std::string err = make(base, &next); !err.empty()) return err;
  if (std::string err = ClusterRegistryProblem(*next); !err.empty()) return "ERR " + err;
  pending_ = next;
  // A view the change drops ends its run of layouts: defined again later,
  // it starts empty, whatever updates planned before were still to apply.
  std::set<uint64_t> kept;
  for (const ViewDef& v : next->views()) kept.insert(v.id);
  for (const ViewDef& v : base->views())
    if (!kept.count(v.id)) RetireView(v.id);
  if (kafka_) kafka_->OnRegistryChange(*next);  // forgets released views the registry dropped
  // Posted under the lock: every shard gets the changes in this order.
  InstallEverywhere(next, ++change_seq_, [next, done = std::move(done)] { done(next); });
  return "";
}

std::string Server::ReloadRegistry(std::function<void(std::shared_ptr<const Registry>)> done, std::string* version) {
  auto load = [&](const std::shared_ptr<const Registry>& base, std::shared_ptr<const Registry>* out) -> std::string {
    std::string path = config_.GetString("registry");
    if (path.empty()) return "ERR no registry file is configured (directive 'registry')";
    try {
      *out = Registry::LoadFile(path);
      if (auto wanted = wanted_defaults(); !wanted.empty()) *out = (*out)->WithDefaults(wanted);
    } catch (const RegistryError& e) {
      spdlog::warn("registry reload refused, keeping version {}: {}", base->version(), e.what());
      return std::string("ERR registry reload refused: ") + e.what();
    }
    // Log what the reload changes.
    auto sigs = [](const Registry& r) {
      std::map<uint64_t, std::string> m;
      for (const auto& v : r.views())
        for (const auto& a : v.aggs) m[a.signature] = v.name + "." + a.name;
      return m;
    };
    auto before = sigs(*base), after = sigs(**out);
    for (auto& [sig, name] : after)
      spdlog::info("registry reload: {} {}", name, before.count(sig) ? "unchanged, keeps its state" : "new, starts empty");
    for (auto& [sig, name] : before)
      if (!after.count(sig)) spdlog::info("registry reload: {} removed or changed, its state is freed", name);
    *version = (*out)->version();
    return "";
  };
  return ChangeRegistry(load, std::move(done));
}

void Server::InstallRegistry(Shard& s, const std::shared_ptr<const Registry>& reg) {
  s.registry = reg;
  std::unordered_map<uint64_t, uint16_t> layout;  // view id -> its layout now
  for (const auto& v : reg->views()) layout[v.id] = v.layout_id;
  int64_t now = NowMs();
  uint64_t cur = 0;
  std::vector<std::string> touched;
  do {
    cur = s.store.Scan(cur, now, [&](Record* r) {
      if (r->type != ValueType::kFeature) return;
      EntityRecord* e = r->entity();
      bool current = true;
      e->ForEachView([&](const EntityRecord::View& v) {
        auto it = layout.find(v.layout->view_id);
        current &= it != layout.end() && it->second == v.layout_id;
      });
      if (current) return;
      s.store.BeforeWrite(r);  // a running snapshot keeps the state of its cut
      // Aggregations whose definition is unchanged keep their state; a
      // changed view TTL applies to existing entities.
      bool changed = EntityReconcile(&e, [&](uint64_t view_id) {
        auto it = layout.find(view_id);
        return it == layout.end() ? uint16_t{0} : it->second;
      });
      r->set_object(e);
      if (changed || e->empty()) touched.emplace_back(r->key());
    });
  } while (cur != 0);
  // Outside the scan: these may delete or rebuild records.
  for (const auto& k : touched) s.store.SyncEntity(k, HashKey(k), now);
}

void Server::InstallEverywhere(std::shared_ptr<const Registry> reg, uint64_t seq, std::function<void()> done) {
  shards_->RunOn(
      shards_->All(),
      [this, reg](int s, ShardStore&) {
        // The same views under the same layouts as the shard's (FREGISTRY
        // DEFAULT, a reload that changed nothing stored): no entity
        // changes, so no walk of the store.
        Shard& sh = shards_->shard(s);
        const Registry* cur = sh.registry.get();
        bool same = cur != nullptr && cur->views().size() == reg->views().size();
        for (size_t i = 0; same && i < reg->views().size(); i++)
          same = cur->views()[i].id == reg->views()[i].id && cur->views()[i].layout_id == reg->views()[i].layout_id;
        if (same) sh.registry = reg;
        else InstallRegistry(sh, reg);
      },
      [this, reg, seq, done = std::move(done)] {
        {
          std::lock_guard lk(registry_mu_);
          if (seq > installed_seq_) {  // installs finish in any order; the latest change wins
            registry_ = reg;
            installed_seq_ = seq;
          }
        }
        done();
      });
}

void Server::ReloadOnSignal() {
  std::string version;
  std::string err = ReloadRegistry(
      [](std::shared_ptr<const Registry> r) { spdlog::info("registry reloaded on SIGHUP: version {}", r->version()); },
      &version);
  if (!err.empty()) {
    audit_.Record("registry_reload", "signal", "", {{"signal", "SIGHUP"}, {"result", "error"}, {"error", err}});
    return;
  }
  audit_.Record("registry_reload", "signal", "", {{"signal", "SIGHUP"}, {"result", "ok"}, {"version", version}});
}

void Server::Wait() {
  if (shards_) shards_->Join();
}

void Server::StopShutdownWatchdog() {
  std::thread t;
  {
    std::lock_guard lk(watchdog_mu_);
    watchdog_stop_ = true;
    t = std::move(watchdog_);
  }
  watchdog_cv_.notify_all();
  if (t.joinable()) t.join();
}

void Server::StartShutdownWatchdog() {
  std::lock_guard lk(watchdog_mu_);
  if (watchdog_.joinable() || !shards_) return;
  watchdog_stop_ = false;
  int64_t timeout_ms = std::stoll(config_.GetString("shutdown-timeout")) * 1000;
  watchdog_ = std::thread([this, timeout_ms] {
    using Clock = std::chrono::steady_clock;
    int n = shards_->size();
    // One probe in flight per shard: posted, then answered when the shard's
    // loop gets to it. A probe unanswered for timeout_ms means that shard is
    // stuck in one piece of work.
    auto answered = std::make_shared<std::vector<std::atomic<bool>>>(static_cast<size_t>(n));
    std::vector<Clock::time_point> posted(static_cast<size_t>(n));
    for (auto& a : *answered) a = true;
    std::unique_lock lk(watchdog_mu_);
    while (!watchdog_stop_) {
      auto now = Clock::now();
      for (int i = 0; i < n; i++) {
        Shard& s = shards_->shard(i);
        auto& a = (*answered)[static_cast<size_t>(i)];
        if (s.finished.load(std::memory_order_acquire)) continue;
        if (a.load(std::memory_order_acquire)) {
          a.store(false, std::memory_order_relaxed);
          posted[static_cast<size_t>(i)] = now;
          shards_->Post(i, [answered, i] { (*answered)[static_cast<size_t>(i)].store(true, std::memory_order_release); });
        } else if (now - posted[static_cast<size_t>(i)] > std::chrono::milliseconds(timeout_ms)) {
          spdlog::critical("shutdown: shard {} has been busy in one command for over {} ms; exiting without waiting "
                           "for it (shutdown-timeout)", i, timeout_ms);
          spdlog::shutdown();
          std::_Exit(1);
        }
      }
      watchdog_cv_.wait_for(lk, std::chrono::milliseconds(50));
    }
  });
}

void Server::Shutdown(const std::string& reason) {
  StartShutdownWatchdog();
  if (stopping_.exchange(true)) return;
  spdlog::info("shutting down ({})", reason);
  if (repartitioner_) repartitioner_->Stop();  // commits what Kafka has of it, leaves the sources' group
  if (kafka_) kafka_->Stop();  // no new batches; those already posted still apply
  // FEVENTs sent are acknowledged (their replies posted); logged writes not
  // run here by now are answered "outcome unknown" (their next owner runs them).
  if (cluster_log_) cluster_log_->Stop();
  if (cluster_) cluster_->Stop();  // the owner ingest left the group: its slots go to the others at once
  if (!shards_) return;
  // Close the listeners on their own thread, then stop every shard, each
  // on its own thread once the replies of what it ran are written (the
  // writes of a loop pass wait in its flush queue: docs/architecture.md,
  // "Replies").
  asio::post(shards_->shard(0).io, [this] {
    for (auto& a : acceptors_) {
      boost::system::error_code ec;
      a->close(ec);
    }
    if (signals_) signals_->cancel();
    for (int i = 0; i < shards_->size(); i++) {
      Shard& s = shards_->shard(i);
      asio::post(s.io, [&s] {
        Connection::FlushQueued(s);
        s.io.stop();
      });
    }
  });
}

void Server::ShutdownWithSave(const std::string& reason, SaveMode mode,
                              std::function<void(const std::string&)> failed) {
  StartShutdownWatchdog();
  bool rules = config_.GetString("save").find_first_not_of(' ') != std::string::npos;
  if (mode == SaveMode::kNoSave || (mode == SaveMode::kDefault && !rules)) return Shutdown(reason);
  if (shutdown_saving_.exchange(true)) {
    spdlog::warn("{} while the shutdown snapshot is being written: exiting now without it", reason);
    return Shutdown(reason);
  }
  spdlog::info("{}: saving a snapshot before exiting", reason);
  snapshots_->Save([this, reason, failed](const std::string& err) {
    if (err.empty()) return Shutdown(reason);
    StopShutdownWatchdog();  // the server keeps running: a long command later is not a stuck shutdown
    shutdown_saving_ = false;
    if (failed) failed(err);
  });
}

void Server::Accept(size_t li) {
  size_t home = next_home_.fetch_add(1) % static_cast<size_t>(shards_->size());
  Shard& target = shards_->shard(static_cast<int>(home));
  acceptors_[li]->async_accept(target.io, [this, li, home](const boost::system::error_code& ec, asio::ip::tcp::socket sock) {
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping_) return;
      spdlog::warn("accept failed: {}", ec.message());
      return Accept(li);
    }
    total_connections.fetch_add(1, std::memory_order_relaxed);
    if (connected_clients.load(std::memory_order_relaxed) >= config_.maxclients()) {
      rejected_connections.fetch_add(1, std::memory_order_relaxed);
      static const char kMsg[] = "-ERR max number of clients reached\r\n";
      boost::system::error_code wec;
      sock.non_blocking(true, wec);
      asio::write(sock, asio::buffer(kMsg, sizeof(kMsg) - 1), wec);
      sock.close(wec);
      return Accept(li);
    }
    if (Denied(sock)) {  // protected mode (docs/operations.md, "Securing featurekv")
      rejected_connections.fetch_add(1, std::memory_order_relaxed);
      boost::system::error_code wec;
      sock.non_blocking(true, wec);
      asio::write(sock, asio::buffer(kProtectedModeDenied), wec);
      sock.close(wec);
      return Accept(li);
    }
    connected_clients.fetch_add(1, std::memory_order_relaxed);
    uint64_t id = next_client_id_.fetch_add(1);
    int h = static_cast<int>(home);
    // The socket belongs to shard h's io_context: start it on that thread.
    std::shared_ptr<asio::ssl::context> tls;
    if (acceptor_tls_[li]) {
      std::lock_guard lk(tls_mu_);
      tls = tls_ctx_;
    }
    auto conn = std::make_shared<Connection>(this, h, std::move(sock), id, std::move(tls));
    shards_->Post(h, [conn] { conn->Start(); });
    Accept(li);
  });
}

std::string Server::ReloadTls() {
  std::string err;
  auto ctx = MakeTlsContext(TlsSettings::From(config_), &err);
  if (!ctx) return err;
  std::lock_guard lk(tls_mu_);
  tls_ctx_ = std::move(ctx);
  return "";
}

bool ProtectedModeRefuses(bool protected_mode, bool default_open, const asio::ip::address& peer) {
  if (!protected_mode || !default_open) return false;
  if (peer.is_v6() && peer.to_v6().is_v4_mapped())
    return !asio::ip::make_address_v4(asio::ip::v4_mapped, peer.to_v6()).is_loopback();
  return !peer.is_loopback();
}

bool Server::Denied(const asio::ip::tcp::socket& sock) {
  boost::system::error_code ec;
  auto peer = sock.remote_endpoint(ec);
  if (ec) return false;  // gone already: the connection's first read ends it
  return ProtectedModeRefuses(config_.GetString("protected-mode") == "yes", acl_.default_open(), peer.address());
}

void Server::ScheduleCron(Shard& s) {
  int hz = config_.hz();
  auto period = std::chrono::milliseconds(1000 / (hz > 0 ? hz : 10));
  s.cron_due = std::chrono::steady_clock::now() + period;
  s.cron->expires_after(period);
  s.cron->async_wait([this, &s](const boost::system::error_code& ec) {
    if (ec) return;
    auto late = std::chrono::steady_clock::now() - s.cron_due;
    s.pub_loop_lag_us.store(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(late).count()),
                            std::memory_order_relaxed);
    Cron(s);
    ScheduleCron(s);
  });
}

void Server::Sweep(Shard& s, size_t buckets_left, int64_t deadline_us, int64_t now_ms) {
  if (buckets_left == 0 || (s.store.expires_count() == 0 && s.store.entities() == 0) || NowUs() > deadline_us ||
      stopping_.load())
    return;
  size_t step = std::min<size_t>(64, buckets_left);
  // Cluster mode: a partition being restored replays writes with their own
  // clocks (docs/architecture.md, "Cluster mode"); a key the wall clock
  // expired meanwhile is still there for them, as it was when they first ran.
  std::function<bool(std::string_view)> spare;
  if (cluster_held_) {
    const int nparts = s.cluster ? s.cluster->partitions() : 0;
    bool restoring = false;
    for (int p = 0; p < nparts && !restoring; p++)
      restoring = cluster_held_[static_cast<size_t>(p)].load(std::memory_order_relaxed) == PartitionHeld::kRestoring;
    if (restoring)
      spare = [this, nparts](std::string_view key) {
        return cluster_held_[static_cast<size_t>(PartitionOfKey(key, nparts))].load(std::memory_order_relaxed) ==
               PartitionHeld::kRestoring;
      };
  }
  s.store.SweepExpired(now_ms, step, spare);
  asio::post(s.io, [this, &s, left = buckets_left - step, deadline_us, now_ms] { Sweep(s, left, deadline_us, now_ms); });
}

void Server::Cron(Shard& s) {
  int64_t now = NowMs();
  // Active expiry (as Redis's expire.c, slow cycle): visit a slice of the
  // table sized so that a full pass takes about ten seconds, within a time
  // budget of 25% of one tick, in steps of 64 buckets posted one after the
  // other so that requests run between them (no request waits behind more
  // than one step). Expired data is never served meanwhile (lazy check).
  int hz = config_.hz() > 0 ? config_.hz() : 10;
  // A table resize under way moves on for 1 ms per tick even without requests.
  s.store.Rehash(1000);
  s.pub_keys.store(s.store.size(), std::memory_order_relaxed);
  s.pub_entities.store(s.store.entities(), std::memory_order_relaxed);
  s.pub_expired.store(s.store.stats().expired_keys, std::memory_order_relaxed);
  size_t slice = std::max<size_t>(1024, s.store.bucket_count() / static_cast<size_t>(hz * 10));
  Sweep(s, slice, NowUs() + 250'000 / hz, now);
  // Idle client timeout.
  if (int64_t timeout = std::stoll(config_.GetString("timeout")); timeout > 0) {
    for (Connection* c : s.clients)
      if (c->idle_ms(now) > timeout * 1000) c->Kill();
  }
  if (s.id == 0) {
    used_memory.store(ReadAllocatorStats().allocated, std::memory_order_relaxed);
    uint64_t total = 0;
    for (int i = 0; i < shards_->size(); i++) total += shards_->shard(i).counters.commands.load(std::memory_order_relaxed);
    uint64_t messages = kafka_ ? kafka_->messages() : 0;
    uint64_t applied = ingest_stats.events_applied.load(std::memory_order_relaxed);
    if (last_ops_sample_ms_ != 0 && now > last_ops_sample_ms_) {
      auto rate = [&](uint64_t cur, uint64_t last) {
        return (cur - last) * 1000 / static_cast<uint64_t>(now - last_ops_sample_ms_);
      };
      ops_per_sec.store(rate(total, last_cmd_total_));
      kafka_messages_per_sec.store(rate(messages, last_messages_total_));
      events_applied_per_sec.store(rate(applied, last_applied_total_));
    }
    if (now - last_autosave_check_ms_ >= 1000 && !stopping_.load()) {
      last_autosave_check_ms_ = now;
      snapshots_->MaybeAutoSave(now);
    }
    if (!stopping_.load()) drift_->Cron(now);
    last_cmd_total_ = total;
    last_messages_total_ = messages;
    last_applied_total_ = applied;
    last_ops_sample_ms_ = now;
  }
}

}  // namespace fkv
