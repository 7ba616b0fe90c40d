// Snapshot format: see snapshot.h and docs/architecture.md.
#include "storage/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace fkv::snap {

namespace {

uint64_t FrameSeed(uint8_t kind, uint16_t section, uint32_t len) {
  return uint64_t{kind} | (uint64_t{section} << 16) | (uint64_t{len} << 32);
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

const char* FrameName(uint8_t kind) {
  switch (static_cast<Frame>(kind)) {
    case Frame::kHeader: return "HEADER";
    case Frame::kViews: return "VIEWS";
    case Frame::kKafka: return "KAFKA";
    case Frame::kRecords: return "RECORDS";
    case Frame::kSectionEnd: return "SECTION_END";
    case Frame::kFooter: return "FOOTER";
    case Frame::kLayouts: return "LAYOUTS";
    case Frame::kDrift: return "DRIFT";
    case Frame::kAof: return "AOF";
    case Frame::kDefaults: return "DEFAULTS";
    case Frame::kReplay: return "REPLAY";
    case Frame::kMarks: return "MARKS";
  }
  return "unknown";
}

void WriteFrameHeader(char* h, Frame kind, uint16_t section, std::string_view payload) {
  auto len = static_cast<uint32_t>(payload.size());
  auto k = static_cast<uint8_t>(kind);
  uint64_t sum = XXH3_64bits_withSeed(payload.data(), payload.size(), FrameSeed(k, section, len));
  std::memset(h, 0, kFrameHeaderSize);
  h[0] = static_cast<char>(k);
  std::memcpy(h + 2, &section, 2);
  std::memcpy(h + 4, &len, 4);
  std::memcpy(h + 8, &sum, 8);
}

void AppendFrame(std::string* out, Frame kind, uint16_t section, std::string_view payload) {
  char h[kFrameHeaderSize];
  WriteFrameHeader(h, kind, section, payload);
  out->append(h, sizeof h);
  out->append(payload);
}

std::string FileHeader(const crypt::Key* key, std::string_view file_id) {
  std::string s(kMagic, sizeof kMagic);
  uint32_t v = kVersion, flags = key ? kFlagEncrypted : 0;
  s.append(reinterpret_cast<const char*>(&v), 4);
  s.append(reinterpret_cast<const char*>(&flags), 4);
  if (key) {
    s.append(reinterpret_cast<const char*>(&key->id), 8);
    s.append(file_id);
  }
  return s;
}

std::string FrameAad(std::string_view file_header, uint8_t kind, uint16_t section, uint64_t index) {
  std::string a(file_header);
  a.append(12, '\0');
  char* p = a.data() + file_header.size();
  p[0] = static_cast<char>(kind);
  std::memcpy(p + 2, &section, 2);
  std::memcpy(p + 4, &index, 8);
  return a;
}

// ---- primitives ----

void Enc::Varint(uint64_t v) {
  while (v >= 0x80) {
    out_->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out_->push_back(static_cast<char>(v));
}

bool Dec::Fail(const std::string& why) {
  if (error_.empty()) error_ = why + " at byte " + std::to_string(offset());
  p_ = end_;
  return false;
}

bool Dec::U8(uint8_t* v) {
  if (p_ >= end_) return Fail("unexpected end");
  *v = static_cast<uint8_t>(*p_++);
  return true;
}

bool Dec::Varint(uint64_t* v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p_ >= end_) return Fail("unexpected end in a varint");
    auto b = static_cast<uint8_t>(*p_++);
    r |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return Fail("varint too long");
}

bool Dec::U64(uint64_t* v) {
  if (end_ - p_ < 8) return Fail("unexpected end");
  std::memcpy(v, p_, 8);
  p_ += 8;
  return true;
}

bool Dec::I64(int64_t* v) {
  uint64_t u = 0;
  if (!U64(&u)) return false;
  std::memcpy(v, &u, 8);
  return true;
}

bool Dec::F64(double* v) {
  uint64_t u = 0;
  if (!U64(&u)) return false;
  std::memcpy(v, &u, 8);
  return true;
}

bool Dec::Str(std::string_view* s) {
  uint64_t n;
  if (!Varint(&n)) return false;
  if (n > static_cast<uint64_t>(end_ - p_)) return Fail("string length past the end");
  *s = {p_, n};
  p_ += n;
  return true;
}

bool Dec::Count(uint64_t* n, size_t min_item_bytes) {
  if (!Varint(n)) return false;
  if (min_item_bytes > 0 && *n > static_cast<uint64_t>(end_ - p_) / min_item_bytes) return Fail("count past the end");
  return true;
}

// ---- header, views, kafka ----

std::string EncodeHeader(const Header& h) {
  std::string s;
  Enc e(&s);
  e.I64(h.created_ms);
  e.I64(h.cut_ms);
  e.Varint(h.sections);
  e.Str(h.registry_version);
  e.Str(h.server_version);
  return s;
}

bool DecodeHeader(std::string_view payload, Header* h, std::string* err) {
  Dec d(payload);
  uint64_t sections = 0;
  std::string_view rv, sv;
  if (!d.I64(&h->created_ms) || !d.I64(&h->cut_ms) || !d.Varint(&sections) || !d.Str(&rv) || !d.Str(&sv)) {
    *err = d.error();
    return false;
  }
  if (sections == 0 || sections > 1024) {
    *err = "bad section count " + std::to_string(sections);
    return false;
  }
  h->sections = static_cast<uint32_t>(sections);
  h->registry_version = rv;
  h->server_version = sv;
  return true;
}

std::string EncodeViews(const std::vector<ViewInfo>& views) {
  std::string s;
  Enc e(&s);
  e.Varint(views.size());
  for (const auto& v : views) {
    e.U64(v.id);
    e.Str(v.name);
    e.Varint(v.aggs.size());
    for (const auto& [sig, name] : v.aggs) {
      e.U64(sig);
      e.Str(name);
    }
  }
  return s;
}

bool DecodeViews(std::string_view payload, std::vector<ViewInfo>* views, std::string* err) {
  Dec d(payload);
  uint64_t n = 0;
  if (!d.Count(&n, 10)) return (*err = d.error(), false);
  for (uint64_t i = 0; i < n; i++) {
    ViewInfo v;
    std::string_view name;
    uint64_t na = 0;
    if (!d.U64(&v.id) || !d.Str(&name) || !d.Count(&na, 9)) return (*err = d.error(), false);
    v.name = name;
    for (uint64_t j = 0; j < na; j++) {
      uint64_t sig;
      std::string_view an;
      if (!d.U64(&sig) || !d.Str(&an)) return (*err = d.error(), false);
      v.aggs.emplace_back(sig, std::string(an));
    }
    views->push_back(std::move(v));
  }
  return true;
}

std::string EncodeDefaults(const std::map<std::string, int>& defaults) {
  std::string out;
  Enc e(&out);
  e.Varint(defaults.size());
  for (const auto& [name, version] : defaults) {
    e.Str(name);
    e.Varint(static_cast<uint64_t>(version));
  }
  return out;
}

bool DecodeDefaults(std::string_view payload, std::map<std::string, int>* defaults, std::string* err) {
  Dec d(payload);
  uint64_t n;
  if (!d.Count(&n, 2)) return *err = "bad DEFAULTS", false;
  for (uint64_t i = 0; i < n; i++) {
    std::string_view name;
    uint64_t version;
    if (!d.Str(&name) || !d.Varint(&version) || name.empty() || version < 1 || version > 1000)
      return *err = "bad DEFAULTS entry", false;
    (*defaults)[std::string(name)] = static_cast<int>(version);
  }
  if (!d.done()) return *err = "bytes left in DEFAULTS", false;
  return true;
}

std::string EncodeReplay(const ReplayState& r) {
  std::string out;
  Enc e(&out);
  e.Varint(r.released.size());
  for (const auto& v : r.released) e.Str(v);
  e.U8(r.running ? 1 : 0);
  if (!r.running) return out;
  e.Str(r.source);
  e.Str(r.topic);
  e.I64(r.from_ms);
  e.I64(r.to_ms);
  e.Varint(r.views.size());
  for (const auto& v : r.views) e.Str(v);
  e.Varint(r.parts.size());
  for (const auto& p : r.parts) {
    e.Varint(static_cast<uint32_t>(p.partition));
    e.I64(p.next);
    e.I64(p.end);
  }
  return out;
}

bool DecodeReplay(std::string_view payload, ReplayState* r, std::string* err) {
  Dec d(payload);
  auto names = [&](std::vector<std::string>* out) {
    uint64_t n;
    if (!d.Count(&n, 2)) return false;
    for (uint64_t i = 0; i < n; i++) {
      std::string_view s;
      if (!d.Str(&s) || s.empty()) return false;
      out->emplace_back(s);
    }
    return true;
  };
  uint8_t running;
  if (!names(&r->released) || !d.U8(&running) || running > 1) return *err = "bad REPLAY", false;
  r->running = running == 1;
  if (r->running) {
    std::string_view source, topic;
    uint64_t n;
    if (!d.Str(&source) || !d.Str(&topic) || !d.I64(&r->from_ms) || !d.I64(&r->to_ms) || !names(&r->views) ||
        !d.Count(&n, 17) || source.empty() || topic.empty() || r->from_ms < 0 || r->to_ms < 0 ||
        (r->to_ms != 0 && r->to_ms <= r->from_ms))
      return *err = "bad REPLAY", false;
    r->source = source;
    r->topic = topic;
    for (uint64_t i = 0; i < n; i++) {
      uint64_t p;
      ReplayState::Part part;
      if (!d.Varint(&p) || p > INT32_MAX || !d.I64(&part.next) || !d.I64(&part.end) || part.next < 0 ||
          part.next > part.end ||
          std::any_of(r->parts.begin(), r->parts.end(), [&](const ReplayState::Part& q) { return static_cast<uint64_t>(q.partition) == p; }))
        return *err = "bad REPLAY partition", false;
      part.partition = static_cast<int32_t>(p);
      r->parts.push_back(part);
    }
  }
  if (!d.done()) return *err = "bytes left in REPLAY", false;
  return true;
}

std::string EncodeMarks(const std::vector<DedupMark>& marks) {
  std::string s;
  Enc e(&s);
  e.Varint(marks.size());
  for (const auto& m : marks) {
    e.Varint(static_cast<uint32_t>(m.repartition));
    e.Str(m.topic);
    e.Varint(static_cast<uint32_t>(m.partition));
    e.I64(m.next);
  }
  return s;
}

bool DecodeMarks(std::string_view payload, std::vector<DedupMark>* marks, std::string* err) {
  Dec d(payload);
  uint64_t n = 0;
  if (!d.Count(&n, 11)) return (*err = d.error(), false);
  for (uint64_t i = 0; i < n; i++) {
    DedupMark m;
    std::string_view t;
    uint64_t rp, part;
    if (!d.Varint(&rp) || !d.Str(&t) || !d.Varint(&part) || !d.I64(&m.next)) return (*err = d.error(), false);
    if (rp > INT32_MAX || part > INT32_MAX || m.next < 0 || t.empty()) return (*err = "bad MARKS entry", false);
    m.repartition = static_cast<int32_t>(rp);
    m.topic = t;
    m.partition = static_cast<int32_t>(part);
    marks->push_back(std::move(m));
  }
  if (!d.done()) return *err = "bytes left in MARKS", false;
  return true;
}

std::string EncodeKafka(const std::vector<KafkaPosition>& positions) {
  std::string s;
  Enc e(&s);
  e.Varint(positions.size());
  for (const auto& p : positions) {
    e.Str(p.topic);
    e.Varint(static_cast<uint32_t>(p.partition));
    e.I64(p.offset);
  }
  return s;
}

bool DecodeKafka(std::string_view payload, std::vector<KafkaPosition>* positions, std::string* err) {
  Dec d(payload);
  uint64_t n = 0;
  if (!d.Count(&n, 10)) return (*err = d.error(), false);
  for (uint64_t i = 0; i < n; i++) {
    KafkaPosition p;
    std::string_view t;
    uint64_t part;
    if (!d.Str(&t) || !d.Varint(&part) || !d.I64(&p.offset)) return (*err = d.error(), false);
    if (part > INT32_MAX || p.offset < 0) return (*err = "bad Kafka position", false);
    p.topic = t;
    p.partition = static_cast<int32_t>(part);
    positions->push_back(std::move(p));
  }
  return true;
}

// ---- records ----

namespace {
// Times and durations beyond this (~73 million years in ms) cannot come from
// the server; refusing them keeps every later sum of two inside int64.
constexpr int64_t kMaxAbsMs = int64_t{1} << 61;
bool TimeOk(int64_t t) { return t >= -kMaxAbsMs && t <= kMaxAbsMs; }

void EncodeEntity(const EntityRecord& e, Enc& enc) {
  enc.U8(e.ttl_override() ? 1 : 0);
  enc.U8(e.nviews());
  enc.Str(e.bytes());  // the block as it is in memory: layout ids name LAYOUTS entries
}
}  // namespace

std::string EncodeLayouts(const std::vector<std::pair<uint16_t, const ViewLayout*>>& layouts) {
  std::string s;
  Enc e(&s);
  e.Varint(layouts.size());
  for (const auto& [id, l] : layouts) {
    e.Varint(id);
    e.U64(l->view_id);
    e.I64(l->ttl_ms);
    e.Varint(l->aggs.size());
    for (const AggSpec& a : l->aggs) {
      e.U8(static_cast<uint8_t>(a.kind));
      e.U64(a.signature);
      e.I64(a.resolution_ms);
      e.I64(a.max_window_ms);
      e.Varint(static_cast<uint64_t>(a.n));
    }
  }
  return s;
}

bool DecodeLayouts(std::string_view payload, LayoutMap* map, std::string* err) {
  Dec d(payload);
  auto fail = [&](const std::string& why) {
    *err = d.error().empty() ? why + " at byte " + std::to_string(d.offset()) : d.error();
    return false;
  };
  if (map->size() < kMaxLayouts + 1) map->resize(kMaxLayouts + 1, 0);
  uint64_t n = 0;
  if (!d.Count(&n, 19)) return fail("");
  std::vector<std::pair<uint64_t, ViewLayout>> read;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t id = 0, naggs = 0;
    ViewLayout l;
    if (!d.Varint(&id) || !d.U64(&l.view_id) || !d.I64(&l.ttl_ms) || !d.Count(&naggs, 26)) return fail("");
    if (id == 0 || id > kMaxLayouts) return fail("bad layout id " + std::to_string(id));
    if (l.ttl_ms < 0 || !TimeOk(l.ttl_ms)) return fail("bad view TTL");
    if (naggs == 0 || naggs > 65535) return fail("bad aggregation count");
    for (uint64_t j = 0; j < naggs; j++) {
      AggSpec a;
      uint8_t kind = 0;
      uint64_t nn = 0;
      if (!d.U8(&kind) || !d.U64(&a.signature) || !d.I64(&a.resolution_ms) || !d.I64(&a.max_window_ms) ||
          !d.Varint(&nn))
        return fail("");
      if (kind > static_cast<uint8_t>(AggKind::kSession)) return fail("unknown aggregation kind " + std::to_string(kind));
      a.kind = static_cast<AggKind>(kind);
      if (nn > 1'000'000) return fail("bad last_n size");
      a.n = static_cast<int>(nn);
      if (a.resolution_ms < 0 || a.max_window_ms < 0 || !TimeOk(a.resolution_ms) || !TimeOk(a.max_window_ms) ||
          (IsWindowed(a.kind) && (a.resolution_ms == 0 || a.max_window_ms == 0)))
        return fail("bad tile resolution");
      if (a.kind == AggKind::kSession && (a.resolution_ms == 0 || nn > 255 || !IsSessionOp(SessionOp(a))))
        return fail("bad session aggregation");
      if (l.Find(a.signature) >= 0) return fail("duplicate aggregation");
      l.aggs.push_back(a);
    }
    uint16_t local = (*map)[id];
    if (local != 0 && !(LayoutAt(local) == l)) return fail("layout " + std::to_string(id) + " defined twice, differently");
    for (const auto& [rid, rl] : read)
      if (rid == id && !(rl == l)) return fail("layout " + std::to_string(id) + " defined twice, differently");
    read.emplace_back(id, std::move(l));
  }
  // Layouts equal to the newest of their view (the registry's) first, so
  // they keep its id; older ones take the id of an equal definition this
  // process already has, else a new one (so reading the same file again,
  // or replaying many PUT records, interns nothing more).
  for (int pass = 0; pass < 2; pass++)
    for (const auto& [id, l] : read) {
      uint16_t& local = (*map)[id];
      if (local != 0) continue;
      uint16_t latest = LatestLayout(l.view_id);
      if (pass == 0 && !(latest != 0 && LayoutAt(latest) == l)) continue;
      try {
        if (pass == 1) local = FindEqualLayout(l);
        if (local == 0) local = pass == 0 ? InternLayout(l) : InternOlderLayout(l);
      } catch (const std::length_error& e) {
        return fail(e.what());
      }
    }
  if (!d.done()) return fail("bytes left after the layouts");
  return true;
}

void EncodeRecord(const Record& r, std::string* out) {
  Enc e(out);
  e.U8(static_cast<uint8_t>(r.type));
  e.Str(r.key());
  e.I64(r.expire_at());
  switch (r.type) {
    case ValueType::kString: e.Str(r.string_value()); break;
    case ValueType::kHash: {
      const HashValue* h = r.hash_value();
      e.Varint(h->size());
      h->ForEach([&](std::string_view f, std::string_view v) {
        e.Str(f);
        e.Str(v);
      });
      break;
    }
    case ValueType::kFeature: EncodeEntity(*r.entity(), e); break;
  }
}

void Adopt(ShardStore& st, DecodedRecord& rec, uint64_t hash) {
  switch (rec.type) {
    case ValueType::kString: return st.AdoptString(rec.key, hash, rec.string_value, rec.expire_at);
    case ValueType::kHash: return st.AdoptObject(rec.key, hash, ValueType::kHash, rec.hash.release(), rec.expire_at);
    case ValueType::kFeature:
      return st.AdoptObject(rec.key, hash, ValueType::kFeature, rec.entity.release(), rec.expire_at);
  }
}

bool DecodeRecord(Dec& d, const LayoutMap& layouts, DecodedRecord* out, std::string* err) {
  auto fail = [&](const std::string& why) {
    *err = d.error().empty() ? why + " at byte " + std::to_string(d.offset()) : d.error();
    return false;
  };
  uint8_t type = 0;
  if (!d.U8(&type) || !d.Str(&out->key) || !d.I64(&out->expire_at)) return fail("");
  if (out->key.empty() || out->key.size() > (512u << 20)) return fail("bad key length");
  if (out->expire_at < 0 || out->expire_at > kMaxAbsMs) return fail("bad expiry");
  switch (type) {
    case static_cast<uint8_t>(ValueType::kString):
      out->type = ValueType::kString;
      if (!d.Str(&out->string_value)) return fail("");
      return true;
    case static_cast<uint8_t>(ValueType::kHash): {
      out->type = ValueType::kHash;
      uint64_t n = 0;
      if (!d.Count(&n, 2)) return fail("");
      if (n == 0) return fail("empty hash");
      out->hash = std::make_unique<HashValue>();
      for (uint64_t i = 0; i < n; i++) {
        std::string_view f, v;
        if (!d.Str(&f) || !d.Str(&v)) return fail("");
        if (!out->hash->Set(f, v)) return fail("duplicate hash field");
      }
      return true;
    }
    case static_cast<uint8_t>(ValueType::kFeature): {
      out->type = ValueType::kFeature;
      uint8_t flags = 0, nviews = 0;
      std::string_view bytes;
      if (!d.U8(&flags) || !d.U8(&nviews) || !d.Str(&bytes)) return fail("");
      if (flags > 1) return fail("bad entity flags");
      if (nviews == 0) return fail("entity without views");
      thread_local std::string block;
      block.assign(bytes);
      if (std::string e = ValidateEntityBytes(&block, nviews, layouts); !e.empty()) return fail(e);
      out->entity.reset(EntityRecord::FromBytes(block, nviews, flags & 1));
      return true;
    }
    default: return fail("unknown record type " + std::to_string(type));
  }
}

// ---- section encoder ----

SectionEncoder::SectionEncoder(uint16_t section, std::function<void(std::string)> sink)
    : section_(section), sink_(std::move(sink)), hash_(XXH3_createState(), &XXH3_freeState) {
  XXH3_64bits_reset(hash_.get());
  chunk_.reserve(kChunkBytes + 4096);
}

void SectionEncoder::Add(const Record& r) {
  // The frame header and the u32 record count are filled in at Flush, so the
  // chunk becomes the frame without a copy.
  if (r.type == ValueType::kFeature && !layouts_sent_) {
    // Before the chunk holding this record: every layout a block of this
    // section can name was interned before the section's cut.
    std::string frame;
    AppendFrame(&frame, Frame::kLayouts, section_, EncodeLayouts(AllLayouts()));
    sink_(std::move(frame));
    layouts_sent_ = true;
  }
  if (chunk_.empty()) chunk_.append(kFrameHeaderSize + 4, '\0');
  EncodeRecord(r, &chunk_);
  chunk_records_++;
  records_++;
  if (chunk_.size() >= kChunkBytes) Flush();
}

void SectionEncoder::Flush() {
  if (chunk_.empty()) return;
  std::memcpy(chunk_.data() + kFrameHeaderSize, &chunk_records_, 4);
  std::string_view payload(chunk_.data() + kFrameHeaderSize, chunk_.size() - kFrameHeaderSize);
  XXH3_64bits_update(hash_.get(), payload.data(), payload.size());
  bytes_ += payload.size();
  WriteFrameHeader(chunk_.data(), Frame::kRecords, section_, payload);
  sink_(std::move(chunk_));
  chunk_ = std::string();
  chunk_.reserve(kChunkBytes + 4096);
  chunk_records_ = 0;
}

void SectionEncoder::Finish() {
  Flush();
  std::string p;
  Enc e(&p);
  e.U64(records_);
  e.U64(bytes_);
  e.U64(XXH3_64bits_digest(hash_.get()));
  std::string frame;
  AppendFrame(&frame, Frame::kSectionEnd, section_, p);
  sink_(std::move(frame));
}

// ---- file writer ----

FileWriter::~FileWriter() { Abort(); }

std::string FileWriter::Open(const std::string& dir, const std::string& name, std::shared_ptr<const crypt::Key> key) {
  dir_ = dir;
  final_ = dir + "/" + name;
  tmp_ = final_ + ".tmp";
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return Errno("cannot create " + tmp_);
  std::string header;
  if (key) {
    std::string id = crypt::NewFileId();
    header = FileHeader(key.get(), id);
    key_ = crypt::FileKey(*key, id);
  } else {
    header = FileHeader();
    key_ = nullptr;
  }
  header_ = header;
  queued_ = header.size();
  q_.push_back(std::move(header));  // before the thread starts: not a frame
  thread_ = std::thread([this] { Run(); });
  return "";
}

void FileWriter::Put(std::string bytes, uint64_t frames) {
  queued_.fetch_add(bytes.size());
  {
    std::lock_guard lk(mu_);
    q_.push_back(std::move(bytes));
    frames_ += frames;
  }
  cv_.notify_one();
}

void FileWriter::Run() {
  for (;;) {
    std::string buf;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return !q_.empty() || closing_; });
      if (q_.empty()) return;
      buf = std::move(q_.front());
      q_.pop_front();
    }
    queued_.fetch_sub(buf.size());
    bool failed;
    {
      std::lock_guard lk(mu_);
      failed = !error_.empty();
    }
    if (failed) continue;  // drain: the file is lost anyway
    if (!header_done_) {
      header_done_ = true;  // the first buffer is the file header, not frames
    } else if (key_ && !SealFrames(&buf)) {
      std::lock_guard lk(mu_);
      error_ = "cannot encrypt " + tmp_ + " (OpenSSL failed)";
      continue;
    }
    size_t off = 0;
    while (off < buf.size()) {
      ssize_t n = ::write(fd_, buf.data() + off, buf.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::lock_guard lk(mu_);
        error_ = Errno("write " + tmp_);
        break;
      }
      off += static_cast<size_t>(n);
      written_.fetch_add(static_cast<uint64_t>(n));
    }
  }
}

bool FileWriter::SealFrames(std::string* buf) {
  std::string out;
  out.reserve(buf->size() + 64);
  for (size_t off = 0; off + kFrameHeaderSize <= buf->size();) {
    auto kind = static_cast<uint8_t>((*buf)[off]);
    uint16_t section;
    uint32_t len;
    std::memcpy(&section, buf->data() + off + 2, 2);
    std::memcpy(&len, buf->data() + off + 4, 4);
    size_t h = out.size();
    out.append(kFrameHeaderSize, '\0');
    if (!crypt::Seal(*key_, FrameAad(header_, kind, section, sealed_frames_++),
                     std::string_view(buf->data() + off + kFrameHeaderSize, len), &out))
      return false;
    WriteFrameHeader(out.data() + h, static_cast<Frame>(kind), section,
                     std::string_view(out.data() + h + kFrameHeaderSize, out.size() - h - kFrameHeaderSize));
    off += kFrameHeaderSize + len;
  }
  *buf = std::move(out);
  return true;
}

std::string FileWriter::Finish(uint64_t records) {
  uint64_t frames;
  {
    std::lock_guard lk(mu_);
    frames = frames_;
  }
  std::string p, footer;
  Enc e(&p);
  e.U64(frames);
  e.U64(records);
  AppendFrame(&footer, Frame::kFooter, 0, p);
  Put(std::move(footer));
  {
    std::lock_guard lk(mu_);
    closing_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::string err;
  {
    std::lock_guard lk(mu_);
    err = error_;
  }
  if (err.empty() && ::fsync(fd_) != 0) err = Errno("fsync " + tmp_);
  if (fd_ >= 0 && ::close(fd_) != 0 && err.empty()) err = Errno("close " + tmp_);
  fd_ = -1;
  if (err.empty()) {
    std::string prev = final_ + ".prev";
    if (::access(final_.c_str(), F_OK) == 0 && ::rename(final_.c_str(), prev.c_str()) != 0)
      err = Errno("rename " + final_ + " to " + prev);
    else if (::rename(tmp_.c_str(), final_.c_str()) != 0)
      err = Errno("rename " + tmp_ + " to " + final_);
  }
  if (err.empty()) {
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::fsync(dfd) != 0) err = Errno("fsync directory " + dir_);
    if (dfd >= 0) ::close(dfd);
  }
  if (!err.empty()) ::unlink(tmp_.c_str());
  return err;
}

void FileWriter::Abort() {
  {
    std::lock_guard lk(mu_);
    closing_ = true;
    q_.clear();
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
  }
}

// ---- reader ----

std::string ReadFile(const std::string& path, const Visitor& v, Footer* footer_out, const crypt::KeyRing* keys) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("snapshot " + path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Errno("snapshot " + path);
  }
  size_t size = static_cast<size_t>(st.st_size);
  const char* base = nullptr;
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return Errno("snapshot " + path + ": mmap");
    }
    ::madvise(m, size, MADV_SEQUENTIAL);
    base = static_cast<const char*>(m);
  }
  ::close(fd);
  struct Unmap {
    const char* p;
    size_t n;
    ~Unmap() {
      if (p) ::munmap(const_cast<char*>(p), n);
    }
  } unmap{base, size};

  auto where = [&](const std::string& section, size_t off) {
    return "snapshot " + path + ": " + section + ", byte " + std::to_string(off) + ": ";
  };
  if (size < sizeof kMagic || std::memcmp(base, kMagic, sizeof kMagic) != 0)
    return where("file header", 0) + "not a featurekv snapshot (bad magic)";
  if (size < kFileHeaderSize) return where("file header", size) + "truncated file header";
  uint32_t version, flags;
  std::memcpy(&version, base + 8, 4);
  std::memcpy(&flags, base + 12, 4);
  if (version != kVersion)
    return where("file header", 8) + "unsupported format version " + std::to_string(version) +
           " (this build reads version " + std::to_string(kVersion) +
           (version == 1 ? "; version 1 files were written by featurekv 0.1 before the compact entity state: "
                           "start with --ignore-snapshot and let Kafka replay, see docs/operations.md)"
                         : ")");
  if ((flags & ~kFlagEncrypted) != 0) return where("file header", 12) + "unknown flags " + std::to_string(flags);
  size_t off = kFileHeaderSize;
  std::shared_ptr<const crypt::Key> key;
  std::string plain;  // an encrypted frame's payload, opened
  if (flags & kFlagEncrypted) {
    if (size < kEncryptedHeaderSize) return where("file header", size) + "truncated file header";
    uint64_t id;
    std::memcpy(&id, base + kFileHeaderSize, 8);
    key = keys ? keys->Find(id) : nullptr;
    if (!key) return where("file header", kFileHeaderSize) + (keys ? keys->Missing(id) : crypt::KeyRing().Missing(id));
    key = crypt::FileKey(*key, std::string_view(base + kFileHeaderSize + 8, crypt::kFileIdBytes));
    off = kEncryptedHeaderSize;
  }
  const std::string_view file_header(base, off);
  Header header;
  bool have_header = false, have_views = false, have_kafka = false, have_drift = false, have_aof = false,
       have_defaults = false, have_replay = false, have_marks = false;
  std::vector<std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)>> sums;
  std::vector<uint64_t> sec_records, sec_bytes;
  std::vector<bool> ended;
  LayoutMap layouts;
  uint64_t frames = 0, records = 0;
  for (;;) {
    if (off == size) return where("file end", off) + "truncated: no FOOTER frame";
    if (size - off < kFrameHeaderSize) return where("frame header", off) + "truncated frame header";
    auto kind = static_cast<uint8_t>(base[off]);
    uint16_t section;
    uint32_t len;
    uint64_t sum;
    std::memcpy(&section, base + off + 2, 2);
    std::memcpy(&len, base + off + 4, 4);
    std::memcpy(&sum, base + off + 8, 8);
    std::string sec = std::string(FrameName(kind)) +
                      (kind == uint8_t(Frame::kRecords) || kind == uint8_t(Frame::kSectionEnd) ||
                               kind == uint8_t(Frame::kLayouts)
                           ? " of section " + std::to_string(section)
                           : "");
    if (base[off + 1] != 0 || kind < 1 || kind > 12) return where("frame", off) + "bad frame header";
    if (len > size - off - kFrameHeaderSize) return where(sec, off) + "truncated: frame runs past the end of the file";
    std::string_view payload(base + off + kFrameHeaderSize, len);
    if (XXH3_64bits_withSeed(payload.data(), payload.size(), FrameSeed(kind, section, len)) != sum)
      return where(sec, off) + "checksum mismatch";
    if (key) {
      if (!crypt::Open(*key, FrameAad(file_header, kind, section, frames), payload, &plain))
        return where(sec, off) + "authentication failed (the frame was altered or moved)";
      payload = plain;
    }
    std::string err;
    auto frame = static_cast<Frame>(kind);
    if (!have_header && frame != Frame::kHeader) return where(sec, off) + "the first frame must be HEADER";
    switch (frame) {
      case Frame::kHeader:
        if (have_header) return where(sec, off) + "second HEADER";
        if (!DecodeHeader(payload, &header, &err)) return where(sec, off) + err;
        have_header = true;
        for (uint32_t i = 0; i < header.sections; i++) sums.emplace_back(XXH3_createState(), &XXH3_freeState);
        for (auto& s : sums) XXH3_64bits_reset(s.get());
        sec_records.assign(header.sections, 0);
        sec_bytes.assign(header.sections, 0);
        ended.assign(header.sections, false);
        if (v.header && !(err = v.header(header)).empty()) return where(sec, off) + err;
        break;
      case Frame::kViews: {
        std::vector<ViewInfo> views;
        if (have_views) return where(sec, off) + "second VIEWS";
        if (!DecodeViews(payload, &views, &err)) return where(sec, off) + err;
        have_views = true;
        if (v.views && !(err = v.views(views)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kKafka: {
        std::vector<KafkaPosition> pos;
        if (have_kafka) return where(sec, off) + "second KAFKA";
        if (!DecodeKafka(payload, &pos, &err)) return where(sec, off) + err;
        have_kafka = true;
        if (v.kafka && !(err = v.kafka(pos)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kRecords: {
        if (section >= header.sections || ended[section]) return where(sec, off) + "records outside their section";
        if (payload.size() < 4) return where(sec, off) + "short RECORDS frame";
        uint32_t count;
        std::memcpy(&count, payload.data(), 4);
        XXH3_64bits_update(sums[section].get(), payload.data(), payload.size());
        sec_records[section] += count;
        sec_bytes[section] += payload.size();
        records += count;
        if (v.records && !(err = v.records(section, payload.substr(4), count, layouts)).empty())
          return where(sec, off) + err;
        break;
      }
      case Frame::kLayouts: {
        if (section >= header.sections || ended[section]) return where(sec, off) + "layouts outside their section";
        if (!DecodeLayouts(payload, &layouts, &err)) return where(sec, off) + err;
        if (v.layouts && !(err = v.layouts(layouts)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kDrift: {
        std::vector<drift::ViewBaseline> base;
        if (have_drift) return where(sec, off) + "second DRIFT";
        if (!drift::DecodeBaselines(payload, &base, &err)) return where(sec, off) + err;
        have_drift = true;
        if (v.drift && !(err = v.drift(base)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kAof: {
        Dec d(payload);
        uint64_t gen = 0;
        if (have_aof) return where(sec, off) + "second AOF";
        if (!d.U64(&gen) || !d.done()) return where(sec, off) + "bad AOF frame";
        have_aof = true;
        if (v.aof && !(err = v.aof(gen)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kDefaults: {
        std::map<std::string, int> defaults;
        if (have_defaults) return where(sec, off) + "second DEFAULTS";
        if (!DecodeDefaults(payload, &defaults, &err)) return where(sec, off) + err;
        have_defaults = true;
        if (v.defaults && !(err = v.defaults(defaults)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kMarks: {
        std::vector<DedupMark> marks;
        if (have_marks) return where(sec, off) + "second MARKS";
        if (!DecodeMarks(payload, &marks, &err)) return where(sec, off) + err;
        have_marks = true;
        if (v.marks && !(err = v.marks(marks)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kReplay: {
        ReplayState r;
        if (have_replay) return where(sec, off) + "second REPLAY";
        if (!DecodeReplay(payload, &r, &err)) return where(sec, off) + err;
        have_replay = true;
        if (v.replay && !(err = v.replay(r)).empty()) return where(sec, off) + err;
        break;
      }
      case Frame::kSectionEnd: {
        if (section >= header.sections || ended[section]) return where(sec, off) + "unexpected SECTION_END";
        Dec d(payload);
        uint64_t n, bytes, digest;
        if (!d.U64(&n) || !d.U64(&bytes) || !d.U64(&digest) || !d.done()) return where(sec, off) + "bad SECTION_END";
        if (n != sec_records[section] || bytes != sec_bytes[section] ||
            digest != XXH3_64bits_digest(sums[section].get()))
          return where(sec, off) + "section checksum mismatch (a RECORDS frame is missing or altered)";
        ended[section] = true;
        break;
      }
      case Frame::kFooter: {
        Dec d(payload);
        Footer f;
        if (!d.U64(&f.frames) || !d.U64(&f.records) || !d.done()) return where(sec, off) + "bad FOOTER";
        if (f.frames != frames || f.records != records)
          return where(sec, off) + "FOOTER counts do not match the frames read";
        for (uint32_t i = 0; i < header.sections; i++)
          if (!ended[i]) return where(sec, off) + "section " + std::to_string(i) + " has no SECTION_END";
        if (!have_views || !have_kafka) return where(sec, off) + "VIEWS or KAFKA frame missing";
        if (off + kFrameHeaderSize + len != size) return where(sec, off) + "data after the FOOTER";
        if (footer_out) *footer_out = f;
        return "";
      }
    }
    frames++;
    off += kFrameHeaderSize + len;
  }
}

}  // namespace fkv::snap
