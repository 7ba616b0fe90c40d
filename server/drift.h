// DriftManager: FDRIFT's baselines and current figures (docs/operations.md,
// "Feature drift"). A baseline or a current distribution is gathered by a
// walk of the view's entities on every shard, in slices of at most 100 us,
// each followed by a rest four times as long when the shard is serving,
// so reads never wait behind more than one slice and keep four fifths of
// a busy shard. The arithmetic is storage/drift.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "storage/drift.h"

namespace fkv {

class Server;

class DriftManager {
 public:
  struct Row {
    std::string feature;
    double psi = 0;  // NaN: no figure (a side counted nothing, or the feature changed)
    uint64_t baseline_n = 0, current_n = 0;
  };
  using RowsDone = std::function<void(const std::string& err, const std::vector<Row>& rows)>;

  explicit DriftManager(Server* server);
  // FDRIFT BASELINE: walks the view's entities and stores the deciles of
  // each numeric feature as its baseline; done(err, features) on any thread.
  void Baseline(const std::string& view, std::function<void(const std::string& err, size_t features)> done);
  // FDRIFT: the current distribution against the baseline, now. A request
  // for a view whose walk is under way joins it. done may be empty.
  void Compute(const std::string& view, RowsDone done);
  // Shard 0's cron: every `drift-interval` seconds, recomputes every view
  // that has a baseline.
  void Cron(int64_t now_ms);
  // Snapshots: every baseline (saved), and the baselines of a loaded file.
  std::vector<drift::ViewBaseline> baselines() const;
  void Restore(std::vector<drift::ViewBaseline> views);
  // The last figures of each view (the /metrics endpoint), by view name.
  std::map<std::string, std::vector<Row>> latest() const;

 private:
  struct Walk;
  std::shared_ptr<Walk> NewWalk(const std::string& view, std::string* err);
  void Start(std::shared_ptr<Walk> w);
  void Step(std::shared_ptr<Walk> w, int shard);
  void FinishCompute(const std::string& view, const drift::ViewBaseline& base, const std::vector<int>& which,
                     const Walk& w);

  Server* server_;
  mutable std::mutex mu_;
  std::map<std::string, drift::ViewBaseline> baselines_;
  std::map<std::string, std::vector<Row>> latest_;
  std::map<std::string, std::vector<RowsDone>> computing_;  // view -> waiters of its walk under way
  int64_t last_cron_ms_ = 0;
};

}  // namespace fkv
