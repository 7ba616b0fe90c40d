// The append-only file: see aof.h.
#include "server/aof.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "server/connection.h"
#include "server/server.h"
#include "storage/key_table.h"
#include "storage/shard_plan.h"
#include "storage/snapshot.h"

namespace fkv {

void ReplayEvents(Server& server, std::span<const std::string_view> args, int64_t now_ms, uint32_t shard,
                  uint32_t nshards);  // feature_family.cc

namespace aof {

std::string EncodeHeader(const FileHeader& h) {
  std::string s(kMagic, sizeof kMagic);
  const bool encrypted = !h.file_id.empty();
  uint32_t version = 1, flags = encrypted ? kFlagEncrypted : 0;
  s.append(reinterpret_cast<const char*>(&version), 4);
  s.append(reinterpret_cast<const char*>(&h.shards), 4);
  s.append(reinterpret_cast<const char*>(&h.shard), 4);
  s.append(reinterpret_cast<const char*>(&flags), 4);
  s.append(reinterpret_cast<const char*>(&h.generation), 8);
  if (encrypted) {
    s.append(reinterpret_cast<const char*>(&h.key_id), 8);
    s.append(h.file_id);
  }
  return s;
}

std::string BlockAad(std::string_view file_header, uint64_t index) {
  std::string a(file_header);
  a.append(reinterpret_cast<const char*>(&index), 8);
  return a;
}

bool AppendBlock(std::string* out, const crypt::Key& file_key, std::string_view file_header, uint64_t index,
                 std::string_view records) {
  size_t start = out->size();
  out->append(8, '\0');
  if (!crypt::Seal(file_key, BlockAad(file_header, index), records, out)) {
    out->resize(start);
    return false;
  }
  auto len = static_cast<uint32_t>(out->size() - start - 8);
  uint32_t sum = XXH32(out->data() + start + 8, len, len);
  std::memcpy(out->data() + start, &len, 4);
  std::memcpy(out->data() + start + 4, &sum, 4);
  return true;
}

void AppendRecord(std::string* out, uint8_t kind, int64_t now_ms, std::span<const std::string_view> args) {
  size_t start = out->size();
  out->append(8, '\0');  // length and checksum, set below
  snap::Enc e(out);
  e.I64(now_ms);
  e.U8(kind);
  e.Varint(args.size());
  for (std::string_view a : args) e.Str(a);
  uint32_t len = static_cast<uint32_t>(out->size() - start - 8);
  uint32_t sum = XXH32(out->data() + start + 8, len, len);
  std::memcpy(out->data() + start, &len, 4);
  std::memcpy(out->data() + start + 4, &sum, 4);
}

namespace {

// Decodes one record's payload.
std::string DecodeRecord(std::string_view payload, Record* r) {
  snap::Dec d(payload);
  uint8_t kind = 0;
  uint64_t argc = 0;
  if (!d.I64(&r->now_ms) || !d.U8(&kind) || !d.Count(&argc, 1)) return "corrupt record";
  if (kind < 1 || kind > 4) return "unknown record kind " + std::to_string(kind);
  r->kind = static_cast<Kind>(kind);
  r->args.clear();
  for (uint64_t i = 0; i < argc; i++) {
    std::string_view a;
    if (!d.Str(&a)) return "corrupt record";
    r->args.push_back(a);
  }
  return d.done() ? "" : "corrupt record (bytes left)";
}

}  // namespace

std::string ReadFile(const std::string& path, FileHeader* header, const std::function<std::string(const Record&)>& each,
                     bool* truncated, uint64_t* valid, const crypt::KeyRing* keys) {
  *truncated = false;
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open " + path + ": " + std::strerror(errno);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto at = [&](size_t off) { return path + " at byte " + std::to_string(off) + ": "; };
  auto zeros_from = [&](size_t off) {
    return std::all_of(data.begin() + static_cast<std::ptrdiff_t>(off), data.end(), [](char c) { return c == 0; });
  };
  auto cut_at = [&](size_t off) {  // a tail a crash tore off
    *truncated = true;
    *valid = off;
    return std::string();
  };
  if (data.size() < kHeaderSize) return cut_at(0);  // a crash right after the file was created
  uint32_t version, flags;
  std::memcpy(&version, data.data() + 8, 4);
  std::memcpy(&header->shards, data.data() + 12, 4);
  std::memcpy(&header->shard, data.data() + 16, 4);
  std::memcpy(&flags, data.data() + 20, 4);
  std::memcpy(&header->generation, data.data() + 24, 8);
  if (std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) return at(0) + "not a featurekv append-only file";
  if (version != 1) return at(8) + "unsupported version " + std::to_string(version);
  if ((flags & ~kFlagEncrypted) != 0 || header->shards == 0 || header->shard >= header->shards)
    return at(12) + "bad header";
  std::shared_ptr<const crypt::Key> key;
  size_t off = kHeaderSize;
  if (flags & kFlagEncrypted) {
    if (data.size() < kEncryptedHeaderSize) return cut_at(0);
    std::memcpy(&header->key_id, data.data() + kHeaderSize, 8);
    header->file_id = data.substr(kHeaderSize + 8, crypt::kFileIdBytes);
    key = keys ? keys->Find(header->key_id) : nullptr;
    if (!key) return at(kHeaderSize) + (keys ? keys->Missing(header->key_id) : crypt::KeyRing().Missing(header->key_id));
    key = crypt::FileKey(*key, header->file_id);
    off = kEncryptedHeaderSize;
  }
  const std::string_view file_header(data.data(), off);
  std::string plain;
  Record r;
  for (uint64_t block = 0; off < data.size(); block++) {
    // A record (plain file) or a block (encrypted file): length, checksum, payload.
    if (data.size() - off < 8 || (zeros_from(off))) return cut_at(off);
    uint32_t len, sum;
    std::memcpy(&len, data.data() + off, 4);
    std::memcpy(&sum, data.data() + off + 4, 4);
    const char* what = key ? "block" : "record";
    if (len > (key ? kMaxBlock : kMaxRecord))
      return at(off) + "corrupt " + what + " (length " + std::to_string(len) + ")";
    if (len > data.size() - off - 8) return cut_at(off);
    std::string_view payload(data.data() + off + 8, len);
    if (XXH32(payload.data(), len, len) != sum) return at(off) + "corrupt " + what + " (checksum mismatch)";
    if (!key) {
      if (std::string err = DecodeRecord(payload, &r); !err.empty()) return at(off) + err;
      if (std::string err = each(r); !err.empty()) return at(off) + err;
    } else {
      if (!crypt::Open(*key, BlockAad(file_header, block), payload, &plain))
        return at(off) + "corrupt block (authentication failed: altered or moved)";
      // The records of the block: whole, since the block was sealed whole.
      for (size_t p = 0, i = 0; p < plain.size(); i++) {
        std::string where = at(off) + "record " + std::to_string(i) + " of the block: ";
        uint32_t rlen, rsum;
        if (plain.size() - p < 8) return where + "corrupt record";
        std::memcpy(&rlen, plain.data() + p, 4);
        std::memcpy(&rsum, plain.data() + p + 4, 4);
        if (rlen > plain.size() - p - 8) return where + "corrupt record (length " + std::to_string(rlen) + ")";
        std::string_view rp(plain.data() + p + 8, rlen);
        if (XXH32(rp.data(), rlen, rlen) != rsum) return where + "corrupt record (checksum mismatch)";
        if (std::string err = DecodeRecord(rp, &r); !err.empty()) return where + err;
        if (std::string err = each(r); !err.empty()) return where + err;
        p += 8 + rlen;
      }
    }
    off += 8 + len;
  }
  return "";
}

void LogKeysPart(ShardStore& st, int64_t now_ms, std::string_view name, std::span<const std::string_view> args,
                 size_t first, size_t step, std::span<const uint32_t> keys) {
  if (st.write_log() == nullptr || keys.empty()) return;
  std::vector<std::string_view> part{name};
  for (uint32_t i : keys)
    for (size_t j = 0; j < step; j++) part.push_back(args[first + i * step + j]);
  LogWrite(st, Kind::kCommand, now_ms, part);
}

void LogPut(ShardStore& st, int64_t now_ms, std::string_view key, uint64_t hash) {
  if (st.write_log() == nullptr) return;
  fkv::Record* r = st.Find(key, hash, now_ms);
  if (r == nullptr) return;
  std::string layouts = snap::EncodeLayouts(AllLayouts()), record;
  snap::EncodeRecord(*r, &record);
  std::string_view args[] = {key, layouts, record};
  LogWrite(st, Kind::kPut, now_ms, args);
}

std::string FileName(const std::string& base, uint64_t gen, int shard) {
  return base + "." + std::to_string(gen) + "." + std::to_string(shard);
}

bool ParseFileName(const std::string& base, const std::string& name, uint64_t* gen, int* shard) {
  if (name.size() <= base.size() + 1 || name.compare(0, base.size(), base) != 0 || name[base.size()] != '.') return false;
  std::string rest = name.substr(base.size() + 1);
  size_t dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == rest.size()) return false;
  auto digits = [](const std::string& s) { return std::all_of(s.begin(), s.end(), ::isdigit) && s.size() < 19; };
  std::string g = rest.substr(0, dot), s = rest.substr(dot + 1);
  if (!digits(g) || !digits(s)) return false;
  *gen = std::stoull(g);
  *shard = std::stoi(s);
  return true;
}

}  // namespace aof

// Records appended for one generation's file. Encrypted files: once
// sealed (on the writer thread), the bytes are a block, or what is left of
// one after a failed write.
struct Chunk {
  uint64_t gen = 0;
  std::string bytes;
  bool sealed = false;
};

struct AofManager::ShardLog final : WriteLog {
  int shard = 0;
  std::mutex mu;
  uint64_t gen = 0;          // under mu: where appends go
  std::vector<Chunk> chunks;  // under mu
  std::string spare;          // under mu: a written chunk's buffer, kept for the next chunk
  std::atomic<uint64_t> appended{0};  // bytes ever appended
  // The writer thread's.
  int fd = -1;
  uint64_t fd_gen = 0;
  std::shared_ptr<const crypt::Key> key;  // fd_gen's file's own key (null: plain)
  std::string header;                     // fd_gen's file's header
  bool need_header = false;               // the file is empty: the header goes first
  uint64_t blocks = 0;                    // blocks sealed for fd_gen's file
  bool unsynced = false;
  uint64_t written = 0;
  std::atomic<uint64_t> synced{0};

  void Append(uint8_t kind, int64_t now_ms, std::span<const std::string_view> args) override {
    std::lock_guard lk(mu);
    if (chunks.empty() || chunks.back().gen != gen || chunks.back().sealed || chunks.back().bytes.size() >= aof::kBlockBytes)
      chunks.push_back({gen, std::exchange(spare, std::string()), false});
    std::string& c = chunks.back().bytes;
    size_t before = c.size();
    aof::AppendRecord(&c, kind, now_ms, args);
    appended.fetch_add(c.size() - before, std::memory_order_release);
  }
};

AofManager::AofManager(Server* server) : server_(server) {
  Config& cfg = server->config();
  enabled_ = cfg.GetString("appendonly") == "yes";
  dir_ = cfg.GetString("dir") + "/" + cfg.GetString("appenddirname");
  base_ = cfg.GetString("appendfilename");
  figs_.enabled = enabled_;
}

AofManager::~AofManager() {
  if (!writer_.joinable()) return;
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

std::string AofManager::Path(uint64_t gen, int shard) const { return dir_ + "/" + aof::FileName(base_, gen, shard); }

namespace {
std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Every log file in dir: (generation, shard, name).
std::vector<std::tuple<uint64_t, int, std::string>> ListLogs(const std::string& dir, const std::string& base) {
  std::vector<std::tuple<uint64_t, int, std::string>> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    uint64_t gen;
    int shard;
    if (aof::ParseFileName(base, e->d_name, &gen, &shard)) out.emplace_back(gen, shard, e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Replays one record into the stores (the shards do not run yet).
std::string ApplyRecord(Server& server, const aof::FileHeader& h, const aof::Record& r) {
  ShardSet& set = server.shards();
  switch (r.kind) {
    case aof::Kind::kCommand: {
      if (r.args.empty()) return "empty command";
      const CommandSpec* spec = CommandTable::Get().Find(r.args[0]);
      if (spec == nullptr || !(spec->flags & kCmdWrite)) return "not a write command: " + std::string(r.args[0]);
      ArgList args(r.args.begin(), r.args.end());
      int s = 0;
      uint64_t hash = 0;
      if (spec->first_key > 0 && args.size() > static_cast<size_t>(spec->first_key)) {
        hash = HashKey(args[static_cast<size_t>(spec->first_key)]);
        s = set.ShardOf(hash);
      }
      std::string reply;
      ReplyWriter w(&reply, 2);
      CommandContext ctx{&server, nullptr, spec, args, w, s, &set.shard(s).store, hash, r.now_ms};
      spec->handler(ctx);
      return "";
    }
    case aof::Kind::kEvents:
      if (r.args.size() < 2) return "bad EVENTS record";
      ReplayEvents(server, r.args, r.now_ms, h.shard, h.shards);
      return "";
    case aof::Kind::kFlush:
      for (int i = 0; i < set.size(); i++) {
        ShardStore& st = set.shard(i).store;
        std::vector<std::string> keys;
        uint64_t cursor = 0;
        do {
          cursor = st.Scan(cursor, INT64_MIN, [&](Record* rec) {
            if (ShardOfHash(HashKey(rec->key()), static_cast<int>(h.shards)) == static_cast<int>(h.shard))
              keys.emplace_back(rec->key());
          });
        } while (cursor != 0);
        for (const auto& k : keys) st.Erase(k, HashKey(k), INT64_MIN);
      }
      return "";
    case aof::Kind::kPut: {
      if (r.args.size() != 3) return "bad PUT record";
      snap::LayoutMap layouts;
      std::string err;
      if (!snap::DecodeLayouts(r.args[1], &layouts, &err)) return "PUT: " + err;
      snap::Dec d(r.args[2]);
      snap::DecodedRecord rec;
      if (!snap::DecodeRecord(d, layouts, &rec, &err) || !d.done()) return "PUT: " + (err.empty() ? "bytes left" : err);
      uint64_t hash = HashKey(rec.key);
      ShardStore& st = set.shard(set.ShardOf(hash)).store;
      st.Erase(rec.key, hash, INT64_MIN);
      snap::Adopt(st, rec, hash);
      return "";
    }
  }
  return "unknown record kind";
}
}  // namespace

std::string AofManager::Replay(uint64_t base) {
  if (!enabled_) return "";
  auto files = ListLogs(dir_, base_);
  uint64_t max_gen = 0;
  uint64_t records = 0;
  const bool load_truncated = server_->config().GetString("aof-load-truncated") == "yes";
  ShardSet::InlinePosts inline_posts;  // the shards do not run yet: commands run here
  for (const auto& [gen, shard, name] : files) {
    max_gen = std::max(max_gen, gen);
    if (gen < base) continue;  // in the snapshot already
    std::string path = dir_ + "/" + name;
    aof::FileHeader h;
    bool truncated = false;
    uint64_t valid = 0, n = 0;
    std::string err = aof::ReadFile(
        path, &h,
        [&](const aof::Record& r) {
          n++;
          return ApplyRecord(*server_, h, r);
        },
        &truncated, &valid, &server_->keys());
    if (!err.empty()) return "append-only file refused: " + err;
    if (truncated) {
      if (!load_truncated)
        return "append-only file " + path + " is truncated at byte " + std::to_string(valid) +
               " (aof-load-truncated no; set it to yes to load the records before that point)";
      spdlog::warn("append-only file {} is truncated at byte {}: loaded the {} records before it, cutting the rest",
                   path, valid, n);
      if (::truncate(path.c_str(), static_cast<off_t>(valid < aof::kHeaderSize ? 0 : valid)) != 0)
        return Errno("cannot truncate " + path);
    }
    records += n;
  }
  next_gen_.store(base == UINT64_MAX ? max_gen + 1 : std::max(base, max_gen + 1));
  std::lock_guard lk(mu_);
  figs_.replayed_records = records;
  if (!files.empty())
    spdlog::info("append-only files replayed: {} record(s) from generation {} on", records, base);
  return "";
}

std::string AofManager::Start() {
  if (!enabled_) return "";
  if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) return Errno("cannot create " + dir_);
  uint64_t gen = NextGeneration();
  ShardSet& set = server_->shards();
  for (int i = 0; i < set.size(); i++) {
    auto l = std::make_unique<ShardLog>();
    l->shard = i;
    l->gen = gen;
    set.shard(i).store.set_write_log(l.get());
    logs_.push_back(std::move(l));
  }
  {
    std::lock_guard lk(mu_);
    figs_.generation = gen;
  }
  writer_ = std::thread([this] { Loop(); });
  return "";
}

uint64_t AofManager::NextGeneration() { return next_gen_.fetch_add(1); }

void AofManager::Rotate(int shard, uint64_t gen) {
  if (!enabled_ || logs_.empty()) return;
  ShardLog& l = *logs_[static_cast<size_t>(shard)];
  std::lock_guard lk(l.mu);
  l.gen = gen;
}

void AofManager::DropBefore(uint64_t gen) {
  if (!enabled_ || logs_.empty()) return;
  {
    std::lock_guard lk(mu_);
    drop_before_.push_back(gen);
    figs_.generation = std::max(figs_.generation, gen);
  }
  cv_.notify_all();
}

bool AofManager::replies_wait() const {
  return enabled_ && !logs_.empty() && server_->config().appendfsync() == Config::Fsync::kAlways;
}

void AofManager::WhenDurable(std::function<void()> done) {
  Waiter w;
  for (const auto& l : logs_) w.targets.push_back(l->appended.load(std::memory_order_acquire));
  w.done = std::move(done);
  {
    std::lock_guard lk(mu_);
    waiters_.push_back(std::move(w));
  }
  cv_.notify_all();
}

AofFigures AofManager::figures() const {
  std::lock_guard lk(mu_);
  AofFigures f = figs_;
  f.fsync = server_->config().GetString("appendfsync");
  for (const auto& l : logs_) {
    f.appended_bytes += l->appended.load(std::memory_order_relaxed);
    f.synced_bytes += l->synced.load(std::memory_order_relaxed);
  }
  return f;
}

void AofManager::Loop() {
  int64_t last_fsync = NowMs();
  const int nshards = static_cast<int>(logs_.size());
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait_for(lk, std::chrono::milliseconds(10), [&] { return stop_ || !waiters_.empty() || !drop_before_.empty(); });
    const bool stopping = stop_;
    const bool waiting = !waiters_.empty();
    std::vector<uint64_t> drops;
    drops.swap(drop_before_);
    lk.unlock();
    std::string err;
    for (auto& l : logs_) {
      std::vector<Chunk> chunks;
      uint64_t upto;
      {
        std::lock_guard g(l->mu);
        chunks.swap(l->chunks);
        upto = l->appended.load(std::memory_order_relaxed);
      }
      bool ok = true;
      size_t failed_at = chunks.size(), failed_done = 0;  // what is left to write after an error
      size_t header_in_chunk = 0;  // the failed chunk starts with a header of this size, put there for a new file
      for (size_t ci = 0; ci < chunks.size() && ok; ci++) {
        auto& [gen, bytes, sealed] = chunks[ci];
        header_in_chunk = 0;
        if (l->fd < 0 || l->fd_gen != gen) {
          if (l->fd >= 0) {
            ::fdatasync(l->fd);
            ::close(l->fd);
          }
          if (l->fd_gen != gen) {
            // A generation's file is written with one key, the current one
            // when it starts, under an id (and so a file key) of its own.
            aof::FileHeader fh{static_cast<uint32_t>(nshards), static_cast<uint32_t>(l->shard), gen, 0, ""};
            l->key = nullptr;
            if (auto master = server_->keys().current()) {
              fh.key_id = master->id;
              fh.file_id = crypt::NewFileId();
              l->key = crypt::FileKey(*master, fh.file_id);
            }
            l->header = aof::EncodeHeader(fh);
            l->blocks = 0;
          }
          std::string path = Path(gen, l->shard);
          l->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
          l->fd_gen = gen;
          if (l->fd < 0) {
            err = Errno("cannot open " + path);
            ok = false;
            failed_at = ci;
            break;
          }
          struct stat st {};
          l->need_header = ::fstat(l->fd, &st) == 0 && st.st_size == 0;
          if (int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
            ::fsync(dfd);  // the new file's name is durable too
            ::close(dfd);
          }
        }
        if (l->key && !sealed) {
          std::string block;
          if (!aof::AppendBlock(&block, *l->key, l->header, l->blocks, bytes)) {
            err = "cannot encrypt for " + Path(gen, l->shard) + " (OpenSSL failed)";
            ok = false;
            failed_at = ci;
            break;
          }
          l->blocks++;
          bytes = std::move(block);
          sealed = true;
        }
        if (l->need_header) {
          header_in_chunk = l->header.size();
          bytes.insert(0, l->header);
        }
        for (size_t done = 0; done < bytes.size();) {
          ssize_t n = ::write(l->fd, bytes.data() + done, bytes.size() - done);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            err = Errno("cannot write " + Path(gen, l->shard));
            ok = false;
            failed_at = ci;
            failed_done = done;
            break;
          }
          done += static_cast<size_t>(n);
          l->unsynced = true;
          if (done >= header_in_chunk) l->need_header = false;
        }
      }
      if (ok) {
        l->written = upto;
        // The biggest buffer of at most kSpareMax goes back to the shard, so
        // appends fill memory already grown instead of growing a new string
        // every pass. A bigger one (a chunk that took a huge record) is freed:
        // kept, it would count in used_memory for good.
        constexpr size_t kSpareMax = 4 * aof::kBlockBytes;
        std::string* keep = nullptr;
        for (auto& c : chunks)
          if (c.bytes.capacity() <= kSpareMax && (keep == nullptr || c.bytes.capacity() > keep->capacity()))
            keep = &c.bytes;
        if (keep != nullptr) {
          keep->clear();
          std::lock_guard g(l->mu);
          if (keep->capacity() > l->spare.capacity()) l->spare = std::move(*keep);
        }
      } else {
        // Nothing is dropped: what was not written goes back in front of
        // the buffer and is tried again on the next pass.
        std::string& rest = chunks[failed_at].bytes;
        if (header_in_chunk > 0 && failed_done < header_in_chunk) {
          // A new file whose header did not make it whole: empty it, and
          // the next pass writes the header again.
          if (l->fd >= 0) {
            if (::ftruncate(l->fd, 0) != 0) spdlog::error("append-only file: {}", Errno("cannot truncate"));
            ::close(l->fd);
            l->fd = -1;
          }
          rest.erase(0, header_in_chunk);
        } else {
          rest.erase(0, failed_done);
        }
        std::lock_guard g(l->mu);
        l->chunks.insert(l->chunks.begin(), std::make_move_iterator(chunks.begin() + static_cast<std::ptrdiff_t>(failed_at)),
                         std::make_move_iterator(chunks.end()));
      }
    }
    const int64_t now = NowMs();
    const Config::Fsync policy = server_->config().appendfsync();
    const bool sync = stopping || waiting || policy == Config::Fsync::kAlways ||
                      (policy == Config::Fsync::kEverySec && now - last_fsync >= 1000);
    for (auto& l : logs_) {
      if (sync && l->unsynced && l->fd >= 0) {
        if (::fdatasync(l->fd) != 0 && err.empty()) err = Errno("cannot fsync " + Path(l->fd_gen, l->shard));
        l->unsynced = false;
      }
      if (sync || policy == Config::Fsync::kNo) l->synced.store(l->written, std::memory_order_release);
    }
    if (sync) last_fsync = now;
    for (uint64_t gen : drops)
      for (const auto& [g, shard, name] : ListLogs(dir_, base_))
        if (g < gen) ::unlink((dir_ + "/" + name).c_str());
    if (!err.empty()) spdlog::error("append-only file: {}", err);
    lk.lock();
    figs_.last_write_ok = err.empty();
    if (!err.empty()) figs_.last_error = err;
    if (sync) figs_.last_fsync_ms = now;
    figs_.written_bytes = 0;
    for (auto& l : logs_) figs_.written_bytes += l->written;
    std::vector<std::function<void()>> ready;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      bool met = err.empty();
      for (int s = 0; met && s < nshards; s++) met = logs_[static_cast<size_t>(s)]->synced.load() >= it->targets[static_cast<size_t>(s)];
      if (met) {
        ready.push_back(std::move(it->done));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    if (stopping) {
      for (auto& l : logs_)
        if (l->fd >= 0) ::close(l->fd);
      lk.unlock();
      for (auto& d : ready) d();
      return;
    }
    lk.unlock();
    for (auto& d : ready) d();
    lk.lock();
  }
}

}  // namespace fkv
