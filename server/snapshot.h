// Snapshots of the running server (docs/architecture.md, "Snapshots"): the consistent cut, per-shard
// serialization in slices while serving, the file (storage/snapshot.h), the
// Kafka offsets committed once the file is durable, and the load at start.
//
// The cut: the ingest thread, between two batches, captures its positions
// and posts a "cut" task to every shard. Each shard's queue is FIFO, so
// every batch those positions cover is applied before the cut and none
// after. At its cut a shard starts a snapshot of its store (ShardStore::
// BeginSnapshot) and emits its records in slices of a few hundred, posted
// between requests; a request that touches a record not yet emitted emits
// it first, so the file holds the store exactly as of the cut.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "storage/snapshot.h"

namespace fkv {

class Server;

struct PersistenceFigures {
  int64_t last_save_ms = 0;       // the last successful save (its cut), for LASTSAVE
  int64_t last_duration_ms = -1;
  uint64_t last_bytes = 0;
  uint64_t last_records = 0;
  bool last_ok = true;
  std::string last_error;
  bool in_progress = false;
  int64_t current_start_ms = 0;
  uint64_t saves_ok = 0, saves_failed = 0;
  std::string loaded_from;  // the file loaded at start ("" = none)
  int64_t load_duration_ms = 0;
  uint64_t loaded_records = 0;
};

class SnapshotManager {
 public:
  explicit SnapshotManager(Server* server);
  ~SnapshotManager();
  // Starts a snapshot. done(error) runs on an arbitrary thread when the file
  // is durable ("") or the save failed. If one is running, the request joins
  // the next one, which starts when the current one ends.
  void Save(std::function<void(const std::string&)> done);
  bool in_progress() const;
  PersistenceFigures figures() const;
  // Changes (write commands and applied events) since the last good save.
  uint64_t changes_since_save() const;
  // Called once a second by the cron: runs the `save` rules.
  void MaybeAutoSave(int64_t now_ms);
  // Blocks until no snapshot runs (shutdown path; not on a shard thread).
  void WaitIdle();

  // At start, before the shards run: loads <dir>/<dbfilename> (or, if that
  // is refused, the .prev file) into the stores, reconciles it with the
  // registry, and returns the Kafka positions to resume from. Returns an
  // error when a snapshot exists but none can be loaded (the caller refuses
  // to start unless told to ignore snapshots).
  std::string Load(std::vector<snap::KafkaPosition>* positions);
  // After Load: the append-only generation to replay from (0: no snapshot
  // was loaded, replay every file; UINT64_MAX: the snapshot was saved with
  // appendonly off, so older files are not after its cut).
  uint64_t loaded_aof_generation() const { return loaded_aof_gen_; }
  // After Load: FREPLAY's state the snapshot kept (released views, a
  // replay to resume).
  const snap::ReplayState& loaded_replay() const { return loaded_replay_; }
  // Cluster mode's de-duplication marks the loaded snapshot kept.
  const std::vector<snap::DedupMark>& loaded_marks() const { return loaded_marks_; }

 private:
  struct Job;
  void StartJob(std::shared_ptr<Job> job);
  void Cut(std::shared_ptr<Job> job, std::vector<snap::KafkaPosition> positions);
  void Slice(std::shared_ptr<Job> job, int shard);
  void Finish(std::shared_ptr<Job> job);
  void Complete(std::shared_ptr<Job> job, const std::string& err);
  std::string LoadFile(const std::string& path, std::vector<snap::KafkaPosition>* positions);
  uint64_t Changes() const;

  Server* server_;
  mutable std::mutex mu_;
  PersistenceFigures figs_;
  std::shared_ptr<Job> running_;
  std::vector<std::function<void(const std::string&)>> next_waiters_;  // for the next save
  uint64_t changes_at_last_save_ = 0;
  uint64_t loaded_aof_gen_ = 0;
  snap::ReplayState loaded_replay_;
  std::vector<snap::DedupMark> loaded_marks_;
  uint64_t last_good_aof_gen_ = 0;  // the last durable snapshot's (the worker thread's after start)
  int64_t last_attempt_ms_ = 0;
  std::condition_variable idle_cv_;
  struct Worker;
  std::unique_ptr<Worker> worker_;  // the blocking end of a save (fsync, rename)
};

}  // namespace fkv
