// SnapshotManager: see snapshot.h.
#include "server/snapshot.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <set>
#include <sstream>

#include "server/server.h"
#include "storage/key_table.h"

namespace fkv {

namespace {
constexpr size_t kSliceRecords = 64;  // records per step; a slice runs steps for up to kSliceMicros
// A shard spends at most half its time on a snapshot: a slice of up to
// kSliceMicros of encoding, then as long a rest before the next, so reads
// keep most of the core while the file is written (docs/architecture.md).
constexpr int64_t kSliceMicros = 250;
constexpr size_t kMaxQueuedBytes = 64u << 20;       // the writer may lag this much behind
}  // namespace

struct SnapshotManager::Job {
  std::vector<std::function<void(const std::string&)>> waiters;
  snap::FileWriter writer;
  std::vector<std::unique_ptr<snap::SectionEncoder>> sections;
  std::atomic<int> remaining{0};
  std::vector<snap::KafkaPosition> positions;
  int64_t start_ms = 0, cut_ms = 0;
  uint64_t changes_at_cut = 0;
  uint64_t aof_gen = 0;  // the append-only generation its cut starts (0: appendonly off)
  std::atomic<uint64_t> records{0};
};

// A worker thread for the blocking end of a save (fsync, rename) and for
// starting the next one; shard threads never block on the disk.
struct SnapshotManager::Worker {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> q;
  bool stop = false;
  std::thread t;
  Worker() {
    t = std::thread([this] {
      for (;;) {
        std::function<void()> f;
        {
          std::unique_lock lk(mu);
          cv.wait(lk, [&] { return stop || !q.empty(); });
          if (q.empty()) return;
          f = std::move(q.front());
          q.pop_front();
        }
        f();
      }
    });
  }
  void Post(std::function<void()> f) {
    {
      std::lock_guard lk(mu);
      q.push_back(std::move(f));
    }
    cv.notify_one();
  }
  ~Worker() {
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_one();
    t.join();
  }
};

SnapshotManager::SnapshotManager(Server* server) : server_(server), worker_(std::make_unique<Worker>()) {
  figs_.last_save_ms = NowMs();  // as Redis: LASTSAVE starts at the start time
}

SnapshotManager::~SnapshotManager() = default;

uint64_t SnapshotManager::Changes() const {
  uint64_t n = server_->ingest_stats.events_applied.load(std::memory_order_relaxed);
  ShardSet& set = server_->shards();
  for (int i = 0; i < set.size(); i++) n += set.shard(i).counters.writes.load(std::memory_order_relaxed);
  return n;
}

uint64_t SnapshotManager::changes_since_save() const {
  uint64_t now = Changes();
  std::lock_guard lk(mu_);
  return now > changes_at_last_save_ ? now - changes_at_last_save_ : 0;
}

bool SnapshotManager::in_progress() const {
  std::lock_guard lk(mu_);
  return running_ != nullptr;
}

PersistenceFigures SnapshotManager::figures() const {
  std::lock_guard lk(mu_);
  return figs_;
}

void SnapshotManager::Save(std::function<void(const std::string&)> done) {
  auto job = std::make_shared<Job>();
  {
    std::lock_guard lk(mu_);
    if (running_) {
      if (done) next_waiters_.push_back(std::move(done));
      else next_waiters_.push_back([](const std::string&) {});
      return;
    }
    if (done) job->waiters.push_back(std::move(done));
    running_ = job;
    figs_.in_progress = true;
    figs_.current_start_ms = NowMs();
    last_attempt_ms_ = figs_.current_start_ms;
  }
  StartJob(job);
}

void SnapshotManager::StartJob(std::shared_ptr<Job> job) {
  job->start_ms = NowMs();
  Config& cfg = server_->config();
  std::string err = job->writer.Open(cfg.GetString("dir"), cfg.GetString("dbfilename"), server_->keys().current());
  if (!err.empty()) return Complete(job, err);
  int n = server_->shards().size();
  for (int i = 0; i < n; i++)
    job->sections.push_back(std::make_unique<snap::SectionEncoder>(
        static_cast<uint16_t>(i), [job_raw = job.get()](std::string frame) { job_raw->writer.Put(std::move(frame)); }));
  job->remaining = n;
  auto cut = [this, job](std::vector<snap::KafkaPosition> positions) { Cut(job, std::move(positions)); };
  if (KafkaIngest* k = server_->kafka()) k->RequestCut(cut);
  else cut({});
}

void SnapshotManager::Cut(std::shared_ptr<Job> job, std::vector<snap::KafkaPosition> positions) {
  job->positions = std::move(positions);
  job->cut_ms = NowMs();
  job->changes_at_cut = Changes();
  auto reg = server_->registry();
  snap::Header h;
  h.created_ms = job->start_ms;
  h.cut_ms = job->cut_ms;
  h.sections = static_cast<uint32_t>(server_->shards().size());
  h.registry_version = reg->version();
  h.server_version = FKV_VERSION;
  std::vector<snap::ViewInfo> views;
  for (const ViewDef& v : reg->views()) {
    snap::ViewInfo vi;
    vi.id = v.id;
    vi.name = v.name;
    for (const AggregationDef& a : v.aggs) vi.aggs.emplace_back(a.signature, a.name);
    views.push_back(std::move(vi));
  }
  std::string frames;
  snap::AppendFrame(&frames, snap::Frame::kHeader, 0, snap::EncodeHeader(h));
  snap::AppendFrame(&frames, snap::Frame::kViews, 0, snap::EncodeViews(views));
  snap::AppendFrame(&frames, snap::Frame::kKafka, 0, snap::EncodeKafka(job->positions));
  uint64_t nframes = 3;
  if (AofManager& aof = server_->aof(); aof.enabled()) {
    job->aof_gen = aof.NextGeneration();
    std::string p;
    snap::Enc(&p).U64(job->aof_gen);
    snap::AppendFrame(&frames, snap::Frame::kAof, 0, p);
    nframes++;
  }
  if (auto base = server_->drift().baselines(); !base.empty()) {
    snap::AppendFrame(&frames, snap::Frame::kDrift, 0, drift::EncodeBaselines(base));
    nframes++;
  }
  if (auto defaults = server_->wanted_defaults(); !defaults.empty()) {
    snap::AppendFrame(&frames, snap::Frame::kDefaults, 0, snap::EncodeDefaults(defaults));
    nframes++;
  }
  if (KafkaIngest* k = server_->kafka()) {
    // FREPLAY's released views and running cursor, as of this cut (this
    // runs where the positions were taken: docs/architecture.md, "Replay").
    if (snap::ReplayState rs = k->PersistentReplay(); rs.running || !rs.released.empty()) {
      snap::AppendFrame(&frames, snap::Frame::kReplay, 0, snap::EncodeReplay(rs));
      nframes++;
    }
    // Cluster mode: the de-duplication marks that go with the positions.
    if (k->role() == KafkaSettings::Role::kOwner) {
      snap::AppendFrame(&frames, snap::Frame::kMarks, 0, snap::EncodeMarks(k->PersistentMarks()));
      nframes++;
    }
  }
  job->writer.Put(std::move(frames), nframes);
  ShardSet& set = server_->shards();
  for (int i = 0; i < set.size(); i++) {
    set.Post(i, [this, job, i, &set] {
      // Batches handed over before the cut may still be partly queued on
      // this shard (ingest applies them in slices): they belong to the cut.
      if (KafkaIngest* k = server_->kafka()) k->ApplyPending(i, set.shard(i).store);
      snap::SectionEncoder* enc = job->sections[static_cast<size_t>(i)].get();
      set.shard(i).store.BeginSnapshot([enc](const Record& r) { enc->Add(r); }, job->cut_ms);
      // Direct writes after this point go to the next append-only generation.
      if (job->aof_gen != 0) server_->aof().Rotate(i, job->aof_gen);
      Slice(job, i);
    });
  }
}

void SnapshotManager::Slice(std::shared_ptr<Job> job, int i) {
  ShardSet& set = server_->shards();
  Shard& s = set.shard(i);
  if (job->writer.queued_bytes() > kMaxQueuedBytes) {
    // The disk is behind: wait a little rather than buffer without bound.
    set.PostAfter(i, 2000, [this, job, i] { Slice(job, i); });
    return;
  }
  auto t0 = std::chrono::steady_clock::now();
  bool done = false;
  int64_t used = 0;
  while (!(done = s.store.SnapshotStep(kSliceRecords))) {
    used = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    if (used >= kSliceMicros) break;
  }
  if (!done) {
    set.PostAfter(i, used, [this, job, i] { Slice(job, i); });
    return;
  }
  snap::SectionEncoder* enc = job->sections[static_cast<size_t>(i)].get();
  enc->Finish();
  s.store.EndSnapshot();
  job->records.fetch_add(enc->records());
  if (job->remaining.fetch_sub(1) == 1) worker_->Post([this, job] { Finish(job); });
}

void SnapshotManager::Finish(std::shared_ptr<Job> job) {
  std::string err = job->writer.Finish(job->records.load());
  if (err.empty()) {
    if (KafkaIngest* k = server_->kafka()) k->CommitOffsets(job->positions);
    // Append-only files older than the previous snapshot's cut are in both
    // snapshot files now (the previous one is kept as .prev, with what came
    // after its cut, for a fallback to it).
    if (job->aof_gen != 0) {
      if (last_good_aof_gen_ != 0) server_->aof().DropBefore(last_good_aof_gen_);
      last_good_aof_gen_ = job->aof_gen;
    }
    spdlog::info("snapshot saved: {} ({} records, {} bytes, {} ms; {} Kafka position(s))", job->writer.path(),
                 job->records.load(), job->writer.bytes_written(), NowMs() - job->start_ms, job->positions.size());
  }
  Complete(job, err);
}

void SnapshotManager::Complete(std::shared_ptr<Job> job, const std::string& err) {
  int64_t end = NowMs();
  if (!err.empty()) spdlog::error("snapshot failed, the previous one is kept: {}", err);
  std::vector<std::function<void(const std::string&)>> waiters;
  std::shared_ptr<Job> next;
  {
    std::lock_guard lk(mu_);
    figs_.last_ok = err.empty();
    figs_.last_error = err;
    figs_.last_duration_ms = end - job->start_ms;
    if (err.empty()) {
      figs_.last_save_ms = job->cut_ms;
      figs_.last_bytes = job->writer.bytes_written();
      figs_.last_records = job->records.load();
      figs_.saves_ok++;
      changes_at_last_save_ = job->changes_at_cut;
    } else {
      figs_.saves_failed++;
    }
    waiters.swap(job->waiters);
    running_ = nullptr;
    figs_.in_progress = false;
    if (!next_waiters_.empty()) {
      next = std::make_shared<Job>();
      next->waiters.swap(next_waiters_);
      running_ = next;
      figs_.in_progress = true;
      figs_.current_start_ms = NowMs();
      last_attempt_ms_ = figs_.current_start_ms;
    }
  }
  idle_cv_.notify_all();
  for (auto& w : waiters) w(err);
  if (next) StartJob(next);
}

void SnapshotManager::WaitIdle() {
  std::unique_lock lk(mu_);
  idle_cv_.wait_for(lk, std::chrono::seconds(600), [&] { return running_ == nullptr; });
}

void SnapshotManager::MaybeAutoSave(int64_t now_ms) {
  std::istringstream in(server_->config().GetString("save"));
  std::vector<std::pair<int64_t, uint64_t>> rules;
  for (int64_t secs = 0, changes = 0; in >> secs >> changes;) rules.emplace_back(secs, static_cast<uint64_t>(changes));
  if (rules.empty()) return;
  uint64_t changes = changes_since_save();
  {
    std::lock_guard lk(mu_);
    if (running_) return;
    // As Redis: after a failed save, try again only after 5 seconds.
    if (!figs_.last_ok && now_ms - last_attempt_ms_ < 5000) return;
    bool due = false;
    for (auto [secs, n] : rules)
      if (changes >= n && n > 0 && now_ms - figs_.last_save_ms >= secs * 1000) due = true;
    if (!due) return;
  }
  spdlog::info("{} changes since the last save: saving", changes);
  Save(nullptr);
}

// ---- load ----

std::string SnapshotManager::Load(std::vector<snap::KafkaPosition>* positions) {
  Config& cfg = server_->config();
  std::string path = cfg.GetString("dir") + "/" + cfg.GetString("dbfilename");
  std::string prev = path + ".prev";
  bool have = ::access(path.c_str(), F_OK) == 0, have_prev = ::access(prev.c_str(), F_OK) == 0;
  if (!have && !have_prev) {
    spdlog::info("no snapshot at {}: starting empty", path);
    return "";
  }
  std::string err;
  if (have) {
    err = LoadFile(path, positions);
    if (err.empty()) return "";
    spdlog::error("snapshot refused: {}", err);
  }
  if (have_prev) {
    positions->clear();
    std::string perr = LoadFile(prev, positions);
    if (perr.empty()) {
      if (have) spdlog::warn("started from the previous snapshot {} (the newer one was refused)", prev);
      return "";
    }
    spdlog::error("snapshot refused: {}", perr);
    err += err.empty() ? perr : "; " + perr;
  }
  return err;
}

std::string SnapshotManager::LoadFile(const std::string& path, std::vector<snap::KafkaPosition>* positions) {
  int64_t t0 = NowMs();
  ShardSet& set = server_->shards();
  auto reg = server_->registry();
  int64_t now = NowMs();
  uint64_t loaded = 0, expired = 0;
  bool foreign_layouts = false;  // blocks under a layout the registry does not use now
  snap::Header header;
  snap::Visitor v;
  v.header = [&](const snap::Header& h) {
    header = h;
    return std::string();
  };
  v.views = [&](const std::vector<snap::ViewInfo>& views) {
    // Say what the registry change between save and load does.
    std::map<uint64_t, const ViewDef*> cur;
    for (const ViewDef& d : reg->views()) cur[d.id] = &d;
    std::set<std::pair<uint64_t, uint64_t>> saved;
    for (const auto& sv : views) {
      auto it = cur.find(sv.id);
      for (const auto& [sig, name] : sv.aggs) {
        saved.insert({sv.id, sig});
        bool kept = false;
        if (it != cur.end())
          for (const AggregationDef& a : it->second->aggs) kept |= a.signature == sig;
        if (!kept)
          spdlog::warn("snapshot: aggregation {}.{} is no longer in the registry: its state is dropped", sv.name, name);
      }
    }
    int kept = 0;
    for (const ViewDef& d : reg->views())
      for (const AggregationDef& a : d.aggs) {
        if (saved.count({d.id, a.signature})) kept++;
        else spdlog::warn("snapshot: aggregation {}.{} is new or changed: it starts empty", d.name, a.name);
      }
    spdlog::info("snapshot: {} aggregation(s) keep their state", kept);
    return std::string();
  };
  v.kafka = [&](const std::vector<snap::KafkaPosition>& pos) {
    *positions = pos;
    return std::string();
  };
  std::vector<drift::ViewBaseline> baselines;
  uint64_t aof_gen = UINT64_MAX;  // no AOF frame: saved with appendonly off
  v.aof = [&](uint64_t gen) {
    aof_gen = gen;
    return std::string();
  };
  v.drift = [&](const std::vector<drift::ViewBaseline>& b) {
    baselines = b;
    return std::string();
  };
  snap::ReplayState replay;
  std::vector<snap::DedupMark> marks;
  v.marks = [&](const std::vector<snap::DedupMark>& m) {
    marks = m;
    return std::string();
  };
  v.replay = [&](const snap::ReplayState& r) {
    replay = r;
    return std::string();
  };
  std::map<std::string, int> defaults;
  v.defaults = [&](const std::map<std::string, int>& d) {
    defaults = d;
    return std::string();
  };
  v.layouts = [&](const snap::LayoutMap& map) {
    std::set<uint16_t> current;
    for (const ViewDef& d : reg->views()) current.insert(d.layout_id);
    for (uint16_t id : map)
      if (id != 0 && !current.count(id)) foreign_layouts = true;
    return std::string();
  };
  // As Redis's key-load-delay: microseconds to sleep per record loaded, so
  // tests can watch a slow load (docs/operations.md, "Persistence").
  const int64_t load_delay_us = std::stoll(server_->config().GetString("key-load-delay"));
  v.records = [&](uint16_t, std::string_view payload, uint32_t count, const snap::LayoutMap& layouts) -> std::string {
    snap::Dec d(payload);
    for (uint32_t i = 0; i < count; i++) {
      if (load_delay_us > 0) ::usleep(static_cast<useconds_t>(load_delay_us));
      snap::DecodedRecord rec;
      std::string err;
      if (!snap::DecodeRecord(d, layouts, &rec, &err)) return "record " + std::to_string(i) + ": " + err;
      if (rec.expire_at != 0 && rec.expire_at <= now) {
        expired++;
        continue;
      }
      uint64_t h = HashKey(rec.key);
      ShardStore& st = set.shard(set.ShardOf(h)).store;
      if (st.Find(rec.key, h, now) != nullptr) return "duplicate key '" + std::string(rec.key.substr(0, 64)) + "'";
      snap::Adopt(st, rec, h);
      loaded++;
    }
    if (!d.done()) return "bytes left after " + std::to_string(count) + " records";
    return std::string();
  };
  snap::Footer footer;
  std::string err = snap::ReadFile(path, v, &footer, &server_->keys());
  if (!err.empty()) {
    for (int i = 0; i < set.size(); i++) set.shard(i).store.Clear();  // never half-loaded
    positions->clear();
    return err;
  }
  // Reconcile the entities with the current registry (as a reload does);
  // nothing to do when every block is under a layout the registry uses.
  if (foreign_layouts || header.registry_version != reg->version())
    for (int i = 0; i < set.size(); i++) server_->InstallRegistry(set.shard(i), reg);
  server_->drift().Restore(std::move(baselines));
  if (!defaults.empty()) {
    // FREGISTRY DEFAULT's choices come back with the state (the shards do
    // not run yet: the registry is set on each directly).
    server_->SetWantedDefaults(defaults);
    auto with = reg->WithDefaults(defaults);
    server_->SetRegistry(with);
    for (int i = 0; i < set.size(); i++) set.shard(i).registry = with;
  }
  loaded_replay_ = std::move(replay);
  loaded_marks_ = std::move(marks);
  loaded_aof_gen_ = aof_gen;
  if (aof_gen != UINT64_MAX) last_good_aof_gen_ = aof_gen;
  int64_t ms = NowMs() - t0;
  spdlog::info("snapshot loaded: {} ({} records, {} expired since the save, {} Kafka position(s), cut at {}, "
               "registry {} then, {} now) in {} ms",
               path, loaded, expired, positions->size(), header.cut_ms, header.registry_version, reg->version(), ms);
  std::lock_guard lk(mu_);
  figs_.loaded_from = path;
  figs_.load_duration_ms = ms;
  figs_.loaded_records = loaded;
  figs_.last_save_ms = header.cut_ms;
  return "";
}

}  // namespace fkv
