// DriftManager: see drift.h.
#include "server/drift.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>

#include "server/feature_values.h"
#include "server/server.h"

namespace fkv {

namespace {
// A slice of a walk takes at most this long. If the shard ran commands
// since the walk's last slice it then rests kRestFactor times as long (the
// walk takes at most a fifth of a busy shard); an idle shard goes on at once.
constexpr int64_t kSliceMicros = 100;
constexpr int64_t kRestFactor = 4;

bool Numeric(const FeatureValue& v, double* x) {
  if (v.kind == FeatureValue::Kind::kInt) *x = static_cast<double>(v.i);
  else if (v.kind == FeatureValue::Kind::kDouble) *x = v.d;
  else return false;
  return std::isfinite(*x);
}
}  // namespace

struct DriftManager::Walk {
  std::shared_ptr<const Registry> reg;
  int view = -1;
  std::vector<FeatureRef> refs;    // the features walked
  std::vector<std::string> names;  // as FGET names them
  int64_t now_ms = 0;
  bool baseline = false;
  std::vector<std::vector<double>> edges;  // compute walks: each feature's baseline edges
  // Per shard (touched by its thread only until the walk ends), per feature.
  std::vector<uint64_t> cursor;
  std::vector<uint64_t> commands_seen;  // the shard's command count at the last slice
  std::vector<std::vector<drift::Reservoir>> samples;     // baseline walks
  std::vector<std::vector<std::vector<uint64_t>>> counts;  // compute walks: by bin
  std::vector<std::vector<uint64_t>> n;
  std::function<void()> done;  // on the thread of the last shard to finish
  std::atomic<int> remaining{0};
};

DriftManager::DriftManager(Server* server) : server_(server) {}

std::shared_ptr<DriftManager::Walk> DriftManager::NewWalk(const std::string& view, std::string* err) {
  auto w = std::make_shared<Walk>();
  w->reg = server_->registry();
  w->view = w->reg->FindView(view);
  if (w->view < 0) {
    *err = "ERR unknown view '" + view + "'";
    return nullptr;
  }
  const ViewDef& v = w->reg->views()[static_cast<size_t>(w->view)];
  // A default version's features under the names FGET lists them by; another
  // version's by their bare names.
  auto feats = w->reg->IsDefault(v) ? w->reg->FeaturesOf(v.entity) : w->reg->FeaturesOfView(w->view);
  for (auto& [name, f] : feats) {
    if (f.view != w->view || !IsWindowed(v.aggs[static_cast<size_t>(f.agg)].kind)) continue;
    w->refs.push_back(f);
    w->names.push_back(name);
  }
  w->now_ms = NowMs();
  return w;
}

void DriftManager::Start(std::shared_ptr<Walk> w) {
  ShardSet& set = server_->shards();
  size_t shards = static_cast<size_t>(set.size()), feats = w->refs.size();
  w->cursor.assign(shards, 0);
  w->commands_seen.assign(shards, 0);
  w->n.assign(shards, std::vector<uint64_t>(feats, 0));
  if (w->baseline) {
    w->samples.resize(shards);
    for (size_t s = 0; s < shards; s++)
      for (size_t f = 0; f < feats; f++) w->samples[s].emplace_back(drift::kSample, (s + 1) * 0x100000001B3ull + f);
  } else {
    w->counts.resize(shards);
    for (size_t s = 0; s < shards; s++)
      for (size_t f = 0; f < feats; f++) w->counts[s].emplace_back(w->edges[f].size() + 1, 0);
  }
  w->remaining.store(set.size());
  for (int i = 0; i < set.size(); i++) set.Post(i, [this, w, i] { Step(w, i); });
}

void DriftManager::Step(std::shared_ptr<Walk> w, int i) {
  ShardSet& set = server_->shards();
  ShardStore& st = set.shard(i).store;
  const ViewDef& v = w->reg->views()[static_cast<size_t>(w->view)];
  thread_local std::vector<FeatureValue> values;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t& cur = w->cursor[static_cast<size_t>(i)];
  auto& n = w->n[static_cast<size_t>(i)];
  for (int b = 1;; b++) {
    cur = st.Scan(cur, w->now_ms, [&](Record* r) {
      if (r->type != ValueType::kFeature) return;
      const EntityRecord* e = r->entity();
      EntityRecord::View vs;
      if (!e->FindView(v.id, &vs) || !(e->ttl_override() || vs.Live(w->now_ms))) return;
      ReadEntityFeatures(*w->reg, e, w->refs, w->now_ms, w->now_ms, false, &values);
      for (size_t f = 0; f < values.size(); f++) {
        double x;
        if (!Numeric(values[f], &x)) continue;
        if (w->baseline) {
          w->samples[static_cast<size_t>(i)][f].Add(x);
        } else {
          n[f]++;
          w->counts[static_cast<size_t>(i)][f][drift::BinOf(w->edges[f], x)]++;
        }
      }
    });
    if (cur == 0) break;
    if (b % 8 == 0) {
      int64_t used =
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      if (used >= kSliceMicros) {
        uint64_t commands = set.shard(i).counters.commands.load(std::memory_order_relaxed);
        uint64_t& seen = w->commands_seen[static_cast<size_t>(i)];
        if (commands != seen) {
          seen = commands;
          set.PostAfter(i, used * kRestFactor, [this, w, i] { Step(w, i); });
        } else {
          set.Post(i, [this, w, i] { Step(w, i); });
        }
        return;
      }
    }
  }
  if (w->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) w->done();
}

void DriftManager::Baseline(const std::string& view, std::function<void(const std::string&, size_t)> done) {
  std::string err;
  auto w = NewWalk(view, &err);
  if (!w) return done(err, 0);
  if (w->refs.empty()) return done("ERR view '" + view + "' has no numeric features", 0);
  w->baseline = true;
  Walk* raw = w.get();
  w->done = [this, raw, view, done = std::move(done)] {
    const ViewDef& v = raw->reg->views()[static_cast<size_t>(raw->view)];
    drift::ViewBaseline vb;
    vb.view = view;
    vb.created_ms = raw->now_ms;
    for (size_t f = 0; f < raw->refs.size(); f++) {
      const AggregationDef& a = v.aggs[static_cast<size_t>(raw->refs[f].agg)];
      drift::FeatureBaseline fb;
      fb.feature = raw->names[f];
      fb.signature = a.signature;
      fb.window_ms = a.windows_ms[static_cast<size_t>(raw->refs[f].window)];
      std::vector<const drift::Reservoir*> samples;
      for (const auto& shard : raw->samples) samples.push_back(&shard[f]);
      drift::BuildBaseline(samples, &fb);
      vb.features.push_back(std::move(fb));
    }
    size_t feats = vb.features.size();
    {
      std::lock_guard lk(mu_);
      baselines_[view] = std::move(vb);
      latest_.erase(view);
    }
    spdlog::info("drift baseline of view {} taken: {} feature(s)", view, feats);
    done("", feats);
  };
  Start(std::move(w));
}

void DriftManager::Compute(const std::string& view, RowsDone done) {
  drift::ViewBaseline base;
  {
    std::lock_guard lk(mu_);
    auto it = baselines_.find(view);
    if (it == baselines_.end()) {
      if (done) done("ERR no drift baseline for view '" + view + "' (FDRIFT BASELINE " + view + " takes one)", {});
      return;
    }
    auto [c, fresh] = computing_.try_emplace(view);
    c->second.push_back(std::move(done));
    if (!fresh) return;  // joins the walk under way
    base = it->second;
  }
  std::string err;
  auto w = NewWalk(view, &err);
  if (!w) {
    std::vector<RowsDone> waiters;
    {
      std::lock_guard lk(mu_);
      waiters = std::move(computing_[view]);
      computing_.erase(view);
      latest_.erase(view);
    }
    for (auto& d : waiters)
      if (d) d(err, {});
    return;
  }
  // Only the baseline's features whose definition is unchanged are walked.
  std::vector<int> which(base.features.size(), -1);
  std::vector<FeatureRef> refs;
  const ViewDef& v = w->reg->views()[static_cast<size_t>(w->view)];
  for (size_t j = 0; j < base.features.size(); j++) {
    const drift::FeatureBaseline& bf = base.features[j];
    for (size_t k = 0; k < w->names.size(); k++) {
      const AggregationDef& a = v.aggs[static_cast<size_t>(w->refs[k].agg)];
      if (w->names[k] != bf.feature || a.signature != bf.signature ||
          a.windows_ms[static_cast<size_t>(w->refs[k].window)] != bf.window_ms)
        continue;
      which[j] = static_cast<int>(refs.size());
      refs.push_back(w->refs[k]);
      w->edges.push_back(bf.edges);
      break;
    }
  }
  w->refs = std::move(refs);
  Walk* raw = w.get();
  w->done = [this, raw, view, base = std::move(base), which = std::move(which)] {
    FinishCompute(view, base, which, *raw);
  };
  Start(std::move(w));
}

void DriftManager::FinishCompute(const std::string& view, const drift::ViewBaseline& base, const std::vector<int>& which,
                                 const Walk& w) {
  std::vector<Row> rows;
  for (size_t j = 0; j < base.features.size(); j++) {
    const drift::FeatureBaseline& bf = base.features[j];
    Row r;
    r.feature = bf.feature;
    r.baseline_n = bf.n;
    r.psi = std::nan("");
    if (int f = which[j]; f >= 0) {
      std::vector<uint64_t> counts(bf.edges.size() + 1, 0);
      for (size_t s = 0; s < w.counts.size(); s++) {
        r.current_n += w.n[s][static_cast<size_t>(f)];
        for (size_t b = 0; b < counts.size(); b++) counts[b] += w.counts[s][static_cast<size_t>(f)][b];
      }
      r.psi = drift::Psi(bf, counts, r.current_n);
    }
    rows.push_back(std::move(r));
  }
  std::vector<RowsDone> waiters;
  {
    std::lock_guard lk(mu_);
    latest_[view] = rows;
    waiters = std::move(computing_[view]);
    computing_.erase(view);
  }
  for (auto& d : waiters)
    if (d) d("", rows);
}

void DriftManager::Cron(int64_t now_ms) {
  int64_t interval = std::stoll(server_->config().GetString("drift-interval"));
  if (interval <= 0 || now_ms - last_cron_ms_ < interval * 1000) return;
  last_cron_ms_ = now_ms;
  std::vector<std::string> views;
  {
    std::lock_guard lk(mu_);
    for (const auto& [name, b] : baselines_) views.push_back(name);
  }
  for (const auto& v : views) Compute(v, nullptr);
}

std::vector<drift::ViewBaseline> DriftManager::baselines() const {
  std::lock_guard lk(mu_);
  std::vector<drift::ViewBaseline> out;
  for (const auto& [name, b] : baselines_) out.push_back(b);
  return out;
}

void DriftManager::Restore(std::vector<drift::ViewBaseline> views) {
  std::lock_guard lk(mu_);
  baselines_.clear();
  latest_.clear();
  for (auto& v : views) baselines_[v.view] = std::move(v);
}

std::map<std::string, std::vector<DriftManager::Row>> DriftManager::latest() const {
  std::lock_guard lk(mu_);
  return latest_;
}

}  // namespace fkv
