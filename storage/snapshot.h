// Snapshot file format, documented byte by byte in
// docs/architecture.md. A file is the magic "FKVSNAP\n", a u32 format
// version, a u32 zero, then frames:
//
//   u8 kind | u8 0 | u16 section | u32 payload length | u64 checksum | payload
//
// The checksum is XXH3-64 of the payload seeded with the first 8 header
// bytes, so a flipped bit anywhere in a frame is caught. Frames: HEADER,
// VIEWS, KAFKA, then the RECORDS chunks of every shard section (interleaved:
// shards serialize concurrently) each section closed by SECTION_END (its
// record count and the XXH3 of all its RECORDS payloads), and FOOTER last.
// A section's first entity record is preceded by a LAYOUTS frame: the view
// layouts (storage/entity.h) its entity blocks name by id. An optional DRIFT
// frame after KAFKA holds the drift baselines (storage/drift.h), and an
// optional AOF frame (u64) the generation of append-only files that starts
// at this snapshot's cut (server/aof.h), and an optional DEFAULTS frame the
// default versions FREGISTRY DEFAULT chose (view name -> version).
// A file without its FOOTER is truncated and refused.
//
// An encrypted file (snapshot-encryption-key-file) sets flag 1 in the
// header's last word and follows it with the u64 id of its key and a
// random 16-byte file id; each frame's payload is then the sealed form of
// the plain payload (storage/cipher.h) under the file's key, bound to the
// whole file header and to the frame's kind, section and index in the
// file, and the frame's length and checksum are those of the sealed bytes.
// Section checksums and the footer's counts are over the plain payloads.
//
// This module is pure encoding and file I/O; the server decides when.
#pragma once

#include <xxhash.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "storage/cipher.h"
#include "storage/drift.h"
#include "storage/entity.h"
#include "storage/hash_value.h"
#include "storage/record.h"
#include "storage/shard_store.h"

namespace fkv::snap {

inline constexpr char kMagic[8] = {'F', 'K', 'V', 'S', 'N', 'A', 'P', '\n'};
inline constexpr uint32_t kVersion = 2;  // 2: entity blocks with shared view layouts (1 is refused)
inline constexpr size_t kFileHeaderSize = 16;  // magic, version, flags
inline constexpr size_t kEncryptedHeaderSize = 40;  // then the key id and the file id
inline constexpr uint32_t kFlagEncrypted = 1;
inline constexpr size_t kFrameHeaderSize = 16;
inline constexpr size_t kChunkBytes = 256 * 1024;  // RECORDS payloads are cut near this size

enum class Frame : uint8_t { kHeader = 1, kViews = 2, kKafka = 3, kRecords = 4, kSectionEnd = 5, kFooter = 6, kLayouts = 7, kDrift = 8, kAof = 9, kDefaults = 10, kReplay = 11, kMarks = 12 };
const char* FrameName(uint8_t kind);

// Writes the 16-byte header of a frame carrying `payload` at h.
void WriteFrameHeader(char* h, Frame kind, uint16_t section, std::string_view payload);
// Appends one frame (header + payload) to *out.
void AppendFrame(std::string* out, Frame kind, uint16_t section, std::string_view payload);
// The file header: plain, or naming the key its frames are sealed with
// and the file's id.
std::string FileHeader(const crypt::Key* key = nullptr, std::string_view file_id = {});
// The associated data a sealed frame is bound to.
std::string FrameAad(std::string_view file_header, uint8_t kind, uint16_t section, uint64_t index);

// Little-endian primitives. Varints are LEB128.
class Enc {
 public:
  explicit Enc(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void Varint(uint64_t v);
  void U64(uint64_t v) { out_->append(reinterpret_cast<const char*>(&v), 8); }
  void I64(int64_t v) { out_->append(reinterpret_cast<const char*>(&v), 8); }
  void F64(double v) { out_->append(reinterpret_cast<const char*>(&v), 8); }
  void Bytes(const void* p, size_t n) { out_->append(static_cast<const char*>(p), n); }
  void Str(std::string_view s) {
    Varint(s.size());
    out_->append(s);
  }

 private:
  std::string* out_;
};

// Bounds-checked reader: every call returns false at the end of the input
// (and sets error()); nothing here reads past `end`.
class Dec {
 public:
  Dec(const char* p, size_t n) : p_(p), end_(p + n), begin_(p) {}
  explicit Dec(std::string_view s) : Dec(s.data(), s.size()) {}
  bool U8(uint8_t* v);
  bool Varint(uint64_t* v);
  bool U64(uint64_t* v);
  bool I64(int64_t* v);
  bool F64(double* v);
  bool Str(std::string_view* s);
  bool Count(uint64_t* n, size_t min_item_bytes);  // a varint count that fits the bytes left
  bool Fail(const std::string& why);
  bool done() const { return p_ == end_; }
  size_t offset() const { return static_cast<size_t>(p_ - begin_); }
  const std::string& error() const { return error_; }

 private:
  const char* p_;
  const char* end_;
  const char* begin_;
  std::string error_;
};

struct Header {
  int64_t created_ms = 0;
  int64_t cut_ms = 0;  // the instant of the cut (wall clock)
  uint32_t sections = 0;  // shards at save time
  std::string registry_version;
  std::string server_version;
};

// The registry's views at the cut, so a load can say which aggregations it
// keeps, drops or starts empty, and featurekv-snapshot can name them.
struct ViewInfo {
  uint64_t id = 0;
  std::string name;
  std::vector<std::pair<uint64_t, std::string>> aggs;  // signature, name
};

struct KafkaPosition {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;  // the next offset to consume
};

// Cluster mode's de-duplication marks at the cut (docs/architecture.md,
// "Cluster mode"): per owned repartition partition and source partition,
// the offset after the newest source message applied.
struct DedupMark {
  int32_t repartition = 0;
  std::string topic;
  int32_t partition = 0;
  int64_t next = 0;
};
std::string EncodeMarks(const std::vector<DedupMark>& marks);
bool DecodeMarks(std::string_view payload, std::vector<DedupMark>* marks, std::string* err);

// FREPLAY's state at the cut: the backfill views released so far and, when
// a replay was running, where it stands, so a restart resumes it.
struct ReplayState {
  std::vector<std::string> released;
  bool running = false;
  std::string source, topic;
  int64_t from_ms = 0, to_ms = 0;  // to_ms 0: no upper bound
  std::vector<std::string> views;  // the views it fills
  struct Part {
    int32_t partition = 0;
    int64_t next = 0;  // the next offset the replay reads
    int64_t end = 0;   // live ingest's position when the replay began (exclusive)
  };
  std::vector<Part> parts;
};

struct Footer {
  uint64_t frames = 0;   // frames before the footer
  uint64_t records = 0;  // records of every section
};

std::string EncodeHeader(const Header& h);
std::string EncodeViews(const std::vector<ViewInfo>& views);
std::string EncodeKafka(const std::vector<KafkaPosition>& positions);
// The DEFAULTS frame: varint count, then (name, varint version) each.
std::string EncodeDefaults(const std::map<std::string, int>& defaults);
bool DecodeDefaults(std::string_view payload, std::map<std::string, int>* defaults, std::string* err);
// The REPLAY frame (docs/architecture.md, "Snapshot format").
std::string EncodeReplay(const ReplayState& r);
bool DecodeReplay(std::string_view payload, ReplayState* r, std::string* err);
bool DecodeHeader(std::string_view payload, Header* h, std::string* err);
bool DecodeViews(std::string_view payload, std::vector<ViewInfo>* views, std::string* err);
bool DecodeKafka(std::string_view payload, std::vector<KafkaPosition>* positions, std::string* err);

// View layouts by id, as a LAYOUTS frame carries them.
std::string EncodeLayouts(const std::vector<std::pair<uint16_t, const ViewLayout*>>& layouts);
// The file's layout ids -> this process's (0: not defined by the file).
using LayoutMap = std::vector<uint16_t>;
// Decodes a LAYOUTS payload into *map, interning each layout; refuses an
// id the file already defined differently.
bool DecodeLayouts(std::string_view payload, LayoutMap* map, std::string* err);

// One record: type, key, expiry, value (see docs/architecture.md).
void EncodeRecord(const Record& r, std::string* out);

struct EntityDeleter {
  void operator()(EntityRecord* e) const { EntityRecord::Destroy(e); }
};

// A record decoded from a RECORDS payload, ready to be stored.
struct DecodedRecord {
  std::string_view key;
  ValueType type = ValueType::kString;
  int64_t expire_at = 0;  // 0 = none
  std::string_view string_value;
  std::unique_ptr<HashValue> hash;
  std::unique_ptr<EntityRecord, EntityDeleter> entity;
};
// Decodes the next record; false with *err on malformed input (never
// crashes, never reads past the payload). Validates the invariants the
// store relies on (sorted tiles, sizes, kinds); entity blocks name their
// layouts through `layouts`.
bool DecodeRecord(Dec& in, const LayoutMap& layouts, DecodedRecord* out, std::string* err);
// Stores a decoded record at its key of `st` (which must be absent), taking
// its value over.
void Adopt(ShardStore& st, DecodedRecord& rec, uint64_t hash);

// Serializes the records of one shard into RECORDS frames and closes the
// section with SECTION_END. `sink` receives finished frames.
class SectionEncoder {
 public:
  SectionEncoder(uint16_t section, std::function<void(std::string)> sink);
  void Add(const Record& r);
  void Finish();  // flushes and writes SECTION_END
  uint64_t records() const { return records_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void Flush();
  bool layouts_sent_ = false;
  uint16_t section_;
  std::function<void(std::string)> sink_;
  std::string chunk_;
  uint32_t chunk_records_ = 0;
  uint64_t records_ = 0, bytes_ = 0;
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> hash_;
};

// Writes a snapshot file on its own thread: frames are queued by any
// thread, written in order to <dir>/<name>.tmp, then Finish() writes the
// footer, fsyncs, renames the previous file to <name>.prev, renames the new
// one into place and fsyncs the directory. A failed write (disk full, file
// size limit) is remembered; Finish() then removes the temporary file and
// reports it, leaving the previous snapshot untouched. With a key, the
// writer thread seals every frame as it writes it.
class FileWriter {
 public:
  FileWriter() = default;
  ~FileWriter();
  std::string Open(const std::string& dir, const std::string& name, std::shared_ptr<const crypt::Key> key = nullptr);
  // Queues bytes holding `frames` whole frames.
  void Put(std::string bytes, uint64_t frames = 1);
  size_t queued_bytes() const { return queued_.load(std::memory_order_relaxed); }
  // Writes the FOOTER (`records` in all sections) and makes the file durable.
  std::string Finish(uint64_t records);
  void Abort();
  uint64_t bytes_written() const { return written_.load(); }
  const std::string& path() const { return final_; }

 private:
  void Run();
  bool SealFrames(std::string* buf);
  std::string dir_, tmp_, final_;
  std::shared_ptr<const crypt::Key> key_;  // the file's own key (null: plain)
  std::string header_;                      // the file header, bound to every frame
  bool header_done_ = false;   // the writer thread's: the file header is out
  uint64_t sealed_frames_ = 0;  // the writer thread's: the next frame's index
  int fd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> q_;
  bool closing_ = false;
  std::atomic<size_t> queued_{0};
  std::atomic<uint64_t> written_{0};
  uint64_t frames_ = 0;
  std::string error_;  // first write error (under mu_)
};

// Reads and verifies a whole file. Callbacks see each frame's decoded
// content in file order; a callback returning an error text stops the walk.
// Every error names the file, the section and the byte offset. An
// encrypted file is read with the key of `keys` its header names.
struct Visitor {
  std::function<std::string(const Header&)> header;
  std::function<std::string(const std::vector<ViewInfo>&)> views;
  std::function<std::string(const std::vector<KafkaPosition>&)> kafka;
  std::function<std::string(const LayoutMap&)> layouts;  // after each LAYOUTS frame
  std::function<std::string(const std::vector<drift::ViewBaseline>&)> drift;
  std::function<std::string(uint64_t)> aof;  // the AOF frame's generation
  std::function<std::string(const std::map<std::string, int>&)> defaults;  // the DEFAULTS frame
  std::function<std::string(const ReplayState&)> replay;                  // the REPLAY frame
  std::function<std::string(const std::vector<DedupMark>&)> marks;        // the MARKS frame
  std::function<std::string(uint16_t section, std::string_view records, uint32_t count, const LayoutMap& layouts)>
      records;
};
std::string ReadFile(const std::string& path, const Visitor& v, Footer* footer = nullptr,
                     const crypt::KeyRing* keys = nullptr);

}  // namespace fkv::snap
