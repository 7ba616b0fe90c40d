// The append-only file (docs/operations.md, "Durability"): the direct writes
// (commands over RESP: SET, HSET, DEL, EXPIRE, FSET, FEVENT, ...) applied
// since the last snapshot's cut, so a crash loses no acknowledged write.
// Kafka-ingested events are not logged: they replay from Kafka, from the
// snapshot's offsets.
//
// One file per shard and generation, <appenddirname>/<appendfilename>.<gen>.<shard>,
// holding what was applied to that shard. A snapshot's cut starts a new
// generation on each shard at that shard's cut, so generation G holds
// exactly what came after the cut of the snapshot that started it; once
// that snapshot is durable the older generations are deleted. At start the
// snapshot is loaded, then every generation from the snapshot's on is
// replayed, then Kafka resumes from the snapshot's offsets: nothing is
// counted twice.
//
// File: a 32-byte header (magic "FKVAOF1\n", u32 version 1, u32 shards at
// write time, u32 shard, u32 0, u64 generation), then records:
//
//   u32 payload length | u32 XXH32(payload, seed = length) | payload
//   payload := i64 now_ms | u8 kind | varint argc | argc x (varint len, bytes)
//
// With encryption at rest (snapshot-encryption-key-file), the header's
// fifth word has flag 1 and the header goes on with the u64 id of the key
// and a random 16-byte file id (56 bytes in all); then come blocks, each a
// run of records one write put out (at most kBlockBytes and one record):
//
//   u32 sealed length | u32 XXH32(sealed, seed = length) | sealed
//
// where sealed is the AES-256-GCM form of the records (storage/cipher.h)
// under the file's key, bound to the whole file header and the block's
// index. A block cut short at the end is a truncated tail, as a record is
// in a plain file.
//
// Kinds: COMMAND (a command whose keys are all on this shard, re-run at
// now_ms), EVENTS (FEVENT's arguments: replay applies only the updates of
// entities on this shard, under the header's shard count), FLUSH (remove
// this shard's keys), PUT (key, the LAYOUTS and record of a snapshot: a
// value moved here by RENAME or COPY).
//
// Appends go to a per-shard buffer; a writer thread writes them and fsyncs
// per `appendfsync`: always (a client's replies wait until its writes are
// fsynced; every write waiting at once shares one fsync), everysec (fsync
// once a second in the background), no (the kernel decides).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "storage/cipher.h"
#include "storage/shard_store.h"

namespace fkv {

class Server;

namespace aof {

inline constexpr char kMagic[8] = {'F', 'K', 'V', 'A', 'O', 'F', '1', '\n'};
inline constexpr size_t kHeaderSize = 32;
inline constexpr size_t kEncryptedHeaderSize = 56;
inline constexpr size_t kBlockBytes = 1u << 20;  // a chunk takes no more records past this size
inline constexpr uint32_t kFlagEncrypted = 1;
inline constexpr uint32_t kMaxRecord = 1u << 30;
// A block: under kBlockBytes of records, then one more of at most kMaxRecord.
inline constexpr uint32_t kMaxBlock = kMaxRecord + kBlockBytes + 8 + crypt::kOverhead;

enum class Kind : uint8_t { kCommand = 1, kEvents = 2, kFlush = 3, kPut = 4 };

struct FileHeader {
  uint32_t shards = 0, shard = 0;
  uint64_t generation = 0;
  uint64_t key_id = 0;  // encrypted files: the configured key's id
  std::string file_id;  // encrypted files: kFileIdBytes random bytes ("" = plain)
};
std::string EncodeHeader(const FileHeader& h);
// The associated data of an encrypted file's block: the file header
// (EncodeHeader's bytes) and the block's index.
std::string BlockAad(std::string_view file_header, uint64_t index);
// Appends `records` sealed under `file_key` as one block to *out; false
// when OpenSSL fails.
bool AppendBlock(std::string* out, const crypt::Key& file_key, std::string_view file_header, uint64_t index,
                 std::string_view records);
void AppendRecord(std::string* out, uint8_t kind, int64_t now_ms, std::span<const std::string_view> args);

struct Record {
  Kind kind = Kind::kCommand;
  int64_t now_ms = 0;
  std::vector<std::string_view> args;  // into the file's bytes
};

// Reads one file. `each` sees every record in order (an error text from it
// stops the read). A record cut short at the end of the file, or a tail of
// zero bytes (a write torn by a crash), is a truncated tail: *valid is where
// it starts and *truncated is set; `each` saw every record before it. Any
// other damage is an error naming the file and the byte offset. An
// encrypted file is read with the key of `keys` its header names.
std::string ReadFile(const std::string& path, FileHeader* header, const std::function<std::string(const Record&)>& each,
                     bool* truncated, uint64_t* valid, const crypt::KeyRing* keys = nullptr);

// <base>.<gen>.<shard>: the name of a log file, and the parse of one.
std::string FileName(const std::string& base, uint64_t gen, int shard);
bool ParseFileName(const std::string& base, const std::string& name, uint64_t* gen, int* shard);

// Logs a write applied to `st` (nothing when the append-only file is off).
inline void LogWrite(ShardStore& st, Kind kind, int64_t now_ms, std::span<const std::string_view> args) {
  if (WriteLog* l = st.write_log()) l->Append(static_cast<uint8_t>(kind), now_ms, args);
}

// The part of a multi-key command applied to `st`: `name` with the keys of
// `keys` (key i is args[first + i * step], followed by its step - 1 values).
void LogKeysPart(ShardStore& st, int64_t now_ms, std::string_view name, std::span<const std::string_view> args,
                 size_t first, size_t step, std::span<const uint32_t> keys);
// A value stored at `key` of `st` by RENAME or COPY from another shard: the
// record as it is now, with the layouts its entity block names.
void LogPut(ShardStore& st, int64_t now_ms, std::string_view key, uint64_t hash);

}  // namespace aof

struct AofFigures {
  bool enabled = false;
  std::string fsync;
  uint64_t generation = 0;
  uint64_t appended_bytes = 0, written_bytes = 0, synced_bytes = 0;
  int64_t last_fsync_ms = 0;
  bool last_write_ok = true;
  std::string last_error;
  uint64_t replayed_records = 0;
};

class AofManager {
 public:
  explicit AofManager(Server* server);
  ~AofManager();  // writes and fsyncs what is buffered
  bool enabled() const { return enabled_; }
  // At start, after the snapshot load and before the shards run: replays
  // the generations from `base` on (the snapshot's; 0 without one) into
  // the stores. An error refuses the start.
  std::string Replay(uint64_t base);
  // Then: opens the logs of a new generation and attaches them to the stores.
  std::string Start();
  // A snapshot takes the next generation; at its cut on shard s (that
  // shard's thread) later writes go to it; once the snapshot is durable,
  // the generations before it are deleted.
  uint64_t NextGeneration();
  void Rotate(int shard, uint64_t gen);
  void DropBefore(uint64_t gen);
  // appendfsync always: whether replies must wait, and the wait: done()
  // runs (on the writer thread) once every write appended before the call
  // is fsynced.
  bool replies_wait() const;
  void WhenDurable(std::function<void()> done);
  AofFigures figures() const;

 private:
  struct ShardLog;
  void Loop();
  std::string Path(uint64_t gen, int shard) const;

  Server* server_;
  bool enabled_ = false;
  std::string dir_, base_;
  std::atomic<uint64_t> next_gen_{1};
  std::vector<std::unique_ptr<ShardLog>> logs_;
  std::thread writer_;
  mutable std::mutex mu_;  // the writer's: waiters, tasks, figures, stop
  std::condition_variable cv_;
  struct Waiter {
    std::vector<uint64_t> targets;  // appended bytes per shard to be synced
    std::function<void()> done;
  };
  std::deque<Waiter> waiters_;
  std::vector<uint64_t> drop_before_;
  bool stop_ = false;
  AofFigures figs_;
};

}  // namespace fkv
