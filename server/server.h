// Server: owns the config, the shard threads, the listeners and the
// server-wide counters; accepts connections and spreads them over the
// shards. One per process (main.cc).
#pragma once

#include <atomic>
#include <condition_variable>
#include <thread>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/kafka_ingest.h"
#include "ingest/registry.h"
#include "server/acl.h"
#include "server/asio.h"
#include "server/audit.h"
#include "server/cluster_log.h"
#include "server/cluster_member.h"
#include "server/tls.h"
#include "server/aof.h"
#include "server/config.h"
#include "server/drift.h"
#include "server/metrics.h"
#include "storage/cipher.h"
#include "server/shard_set.h"
#include "server/snapshot.h"
#include "server/transaction.h"

namespace fkv {

int64_t NowMs();  // Unix time, milliseconds
int64_t NowUs();

// Redis's protected mode: with it on and the default user open (no
// password), only loopback clients are served; the rest get this reply.
inline constexpr std::string_view kProtectedModeDenied =
    "-DENIED Redis is running in protected mode because protected mode is enabled, no bind address was specified, "
    "no authentication password is requested to clients. In this mode connections are only accepted from the "
    "loopback interface. If you want to connect from external computers to Redis you may adopt one of the "
    "following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from "
    "the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE "
    "Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change "
    "permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, "
    "and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server "
    "manually just for testing, restart it with the '--protected-mode no' option. 4) Setup a bind address or an "
    "authentication password. NOTE: You only need to do one of the above things in order for the server to start "
    "accepting connections from the outside.\r\n";
bool ProtectedModeRefuses(bool protected_mode, bool default_open, const asio::ip::address& peer);

class Server {
 public:
  explicit Server(Config& config);
  ~Server();

  // Binds the listeners (throws std::runtime_error on failure) and starts
  // the shard threads. Returns the bound port.
  int Start();
  // Blocks until Shutdown(); then joins the threads.
  void Wait();
  // Any thread: stops accepting, stops the shards.
  void Shutdown(const std::string& reason);
  // SHUTDOWN and SIGTERM: saves a snapshot first when `save` says so (or,
  // for kDefault, when save rules are configured), then shuts down. A failed
  // save keeps the server running and calls failed(error), as Redis does.
  enum class SaveMode { kDefault, kSave, kNoSave };
  void ShutdownWithSave(const std::string& reason, SaveMode save, std::function<void(const std::string&)> failed);
  SnapshotManager& snapshots() { return *snapshots_; }
  DriftManager& drift() { return *drift_; }
  AofManager& aof() { return *aof_; }
  // Runs cross-shard EXECs with every shard parked (server/transaction.h).
  ExclusiveRunner& exclusive() { return *exclusive_; }
  void set_ignore_snapshot(bool v) { ignore_snapshot_ = v; }

  Config& config() { return config_; }
  Acl& acl() { return acl_; }
  AuditLog& audit() { return audit_; }
  // The keys snapshots and append-only files are encrypted with
  // (docs/operations.md, "Encryption at rest").
  crypt::KeyRing& keys() { return keys_; }
  // Reads snapshot-encryption-key-file and -previous-key-file into keys()
  // (Start calls it); "" or why.
  std::string LoadKeys();
  // CONFIG SET snapshot-encryption-key-file: the file's key becomes the
  // current one (none for ""), the replaced key stays readable; "" or why
  // (nothing changes).
  std::string SetEncryptionKeyFile(const std::string& path);
  // The ACL users from the conf's `user` lines or the aclfile, then
  // requirepass (Start calls it; throws std::runtime_error on a bad rule).
  void LoadAcl();
  ShardSet& shards() { return *shards_; }
  int port() const { return port_; }      // 0: plain TCP off (tls-port with port 0)
  int tls_port() const { return tls_port_; }  // 0: no TLS listener
  // Builds a TLS context from the tls-* directives for the connections
  // accepted from now on. Returns "" or why (the old context stays).
  std::string ReloadTls();
  int metrics_port() const { return metrics_port_; }  // 0: no metrics endpoint
  // Serving: the snapshot is loaded and the shards run; stopping: a shutdown began.
  bool serving() const { return serving_.load(std::memory_order_acquire) && !stopping(); }
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  int64_t start_ms() const { return start_ms_; }

  // The registry: loaded at start (throws RegistryError), swapped by
  // FREGISTRY RELOAD and SIGHUP. registry() is the latest installed one.
  void LoadInitialRegistry();
  std::shared_ptr<const Registry> registry() const;
  // Registry changes (FREGISTRY RELOAD, SIGHUP, FREGISTRY DEFAULT) go one
  // at a time: make(base, &next) builds the next registry from the last one
  // handed to the shards (installed or still installing), and returns "" or
  // an error (then nothing changes). The install is queued on every shard
  // in the order of the changes; done(next) runs once every shard has it.
  using RegistryMaker = std::function<std::string(const std::shared_ptr<const Registry>& base,
                                                  std::shared_ptr<const Registry>* next)>;
  std::string ChangeRegistry(const RegistryMaker& make, std::function<void(std::shared_ptr<const Registry>)> done);
  // FREGISTRY RELOAD and SIGHUP: a change that loads the registry file again
  // (with the wanted defaults) and logs what it changes. Returns "" and the
  // new version in *version, or the error (nothing changes).
  std::string ReloadRegistry(std::function<void(std::shared_ptr<const Registry>)> done, std::string* version);
  // Installs `reg` on shard s (its thread): unchanged aggregations keep their
  // state, removed ones are freed.
  void InstallRegistry(Shard& s, const std::shared_ptr<const Registry>& reg);
  void SetRegistry(std::shared_ptr<const Registry> reg);
  // Installs `reg` on every shard (their threads, in parallel), makes it the
  // current one unless a later change already did, then calls done() (on
  // the last shard's thread). Through ChangeRegistry only; a snapshot load
  // installs before the shards start.
  void InstallEverywhere(std::shared_ptr<const Registry> reg, uint64_t seq, std::function<void()> done);
  void ReloadOnSignal();
  // FREGISTRY DEFAULT: the versions asked for (view name -> version), kept
  // in snapshots and applied to every registry installed after (a reload
  // keeps them; a version that no longer exists falls back to the lowest).
  std::map<std::string, int> wanted_defaults() const;
  void SetWantedDefault(const std::string& view, int version);
  void SetWantedDefaults(std::map<std::string, int> all);
  IngestStats ingest_stats;
  // The Kafka consumer (null without kafka-brokers). Started by Start().
  KafkaIngest* kafka() { return kafka_.get(); }
  // Cluster mode (docs/architecture.md, "Cluster mode"): null in sidecar mode.
  ClusterMember* cluster() { return cluster_.get(); }
  KafkaIngest* repartitioner() { return repartitioner_.get(); }
  ClusterLog* cluster_log() { return cluster_log_.get(); }
  // Cluster mode: per repartition partition, whether this node's state of
  // it is servable (else its slots answer TRYAGAIN while the map names it).
  const std::atomic<PartitionHeld>* cluster_held() const { return cluster_held_.get(); }
  // Cluster mode: why this registry cannot serve a cluster ("" when it can).
  std::string ClusterRegistryProblem(const Registry& reg) const;

  // Counters.
  std::atomic<uint64_t> connected_clients{0};
  std::atomic<uint64_t> total_connections{0};
  std::atomic<uint64_t> rejected_connections{0};
  std::atomic<uint64_t> used_memory{0};       // sampled by the cron of shard 0
  std::atomic<uint64_t> ops_per_sec{0};       // sampled by the cron of shard 0
  std::atomic<uint64_t> kafka_messages_per_sec{0};
  std::atomic<uint64_t> events_applied_per_sec{0};
  std::atomic<uint64_t> stat_reset_ms{0};

  // INFO text of `section` ("" = default sections, "all", "everything").
  // Gathers per-shard figures itself; call from a command handler only via
  // FanOut (see server_family.cc) -- here the per-shard figures are passed in.
  struct ShardFigures {
    uint64_t keys = 0, expires = 0, expired = 0, hits = 0, misses = 0, entities = 0;
  };
  std::string InfoText(const std::string& section, const std::vector<ShardFigures>& figs);

 private:
  void Accept(size_t listener);
  void WaitSignal();
  // Starts (once) the shutdown watchdog: a thread of its own that exits the
  // process with code 1 when a shard has not come back to its event loop for
  // `shutdown-timeout` seconds during a shutdown (docs/operations.md,
  // "Stopping the server"), so a shard stuck in a long command cannot make
  // the process unkillable.
  void StartShutdownWatchdog();
  void StopShutdownWatchdog();
  void Cron(Shard& s);
  // One step of the active expiry; posts the next until the slice or the time is used up.
  void Sweep(Shard& s, size_t buckets_left, int64_t deadline_us, int64_t now_ms);
  void ScheduleCron(Shard& s);

  // Protected mode refuses this client (accept-time check).
  bool Denied(const asio::ip::tcp::socket& sock);

  Config& config_;
  Acl acl_;
  AuditLog audit_;
  crypt::KeyRing keys_;
  std::unique_ptr<ShardSet> shards_;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors_;
  std::vector<bool> acceptor_tls_;  // per listener: TLS or plain
  mutable std::mutex tls_mu_;
  std::shared_ptr<asio::ssl::context> tls_ctx_;  // under tls_mu_
  int tls_port_ = 0;
  // Signals are handled on a control thread of their own, so a busy shard
  // cannot delay SIGTERM.
  asio::io_context control_io_{1};
  std::thread control_thread_;
  std::unique_ptr<asio::signal_set> signals_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;
  std::thread watchdog_;
  std::atomic<uint64_t> next_client_id_{1};
  std::atomic<size_t> next_home_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> serving_{false};
  std::unique_ptr<MetricsServer> metrics_;
  int metrics_port_ = 0;
  std::unique_ptr<IngestSink> sink_;
  std::unique_ptr<KafkaIngest> kafka_;
  std::unique_ptr<ClusterMember> cluster_;
  std::unique_ptr<KafkaIngest> repartitioner_;  // cluster mode: consumes the sources
  std::unique_ptr<ClusterLog> cluster_log_;     // cluster mode: FEVENT's records
  std::unique_ptr<std::atomic<PartitionHeld>[]> cluster_held_;
  void SetHeld(const std::vector<int>& partitions, PartitionHeld h);
  KafkaSettings IngestSettings();
  void DropPartitionState(const std::vector<int>& partitions);
  void StartCluster(const std::vector<snap::KafkaPosition>& positions);
  std::unique_ptr<SnapshotManager> snapshots_;
  std::unique_ptr<DriftManager> drift_;
  std::unique_ptr<AofManager> aof_;
  std::unique_ptr<ExclusiveRunner> exclusive_;  // after shards_: destroyed first
  bool ignore_snapshot_ = false;
  std::atomic<bool> shutdown_saving_{false};
  int64_t last_autosave_check_ms_ = 0;
  mutable std::mutex registry_mu_;
  std::shared_ptr<const Registry> registry_;
  std::map<std::string, int> wanted_defaults_;  // under registry_mu_
  uint64_t installed_seq_ = 0;                   // under registry_mu_: the change registry_ is
  std::mutex change_mu_;                         // ChangeRegistry, one at a time
  std::shared_ptr<const Registry> pending_;      // under change_mu_: the last one handed to the shards
  uint64_t change_seq_ = 0;                      // under change_mu_
  int port_ = 0;
  int64_t start_ms_ = 0;
  uint64_t last_cmd_total_ = 0, last_messages_total_ = 0, last_applied_total_ = 0;
  int64_t last_ops_sample_ms_ = 0;
};

}  // namespace fkv
