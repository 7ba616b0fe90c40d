// EntityRecord and its operations: see entity.h.
#include "storage/entity.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <unordered_map>

#include "storage/quantile.h"

namespace fkv {

void DestroyEntity(EntityRecord* e) { EntityRecord::Destroy(e); }

// ---- layouts ----

int ViewLayout::Find(uint64_t signature) const {
  for (size_t i = 0; i < aggs.size(); i++)
    if (aggs[i].signature == signature) return static_cast<int>(i);
  return -1;
}

namespace {
bool SameSpec(const AggSpec& a, const AggSpec& b) {
  return a.kind == b.kind && a.signature == b.signature && a.resolution_ms == b.resolution_ms &&
         a.max_window_ms == b.max_window_ms && a.n == b.n;
}
}  // namespace

int ViewLayout::FindSame(const AggSpec& a) const {
  int i = Find(a.signature);
  return i >= 0 && SameSpec(aggs[static_cast<size_t>(i)], a) ? i : -1;
}

bool ViewLayout::operator==(const ViewLayout& o) const {
  if (view_id != o.view_id || ttl_ms != o.ttl_ms || aggs.size() != o.aggs.size()) return false;
  for (size_t i = 0; i < aggs.size(); i++)
    if (!SameSpec(aggs[i], o.aggs[i])) return false;
  return true;
}

namespace {
using Slot = std::atomic<const ViewLayout*>;
std::atomic<Slot*> g_chunks[256];
std::mutex g_layout_mu;
uint32_t g_layout_count = 0;                     // under g_layout_mu
std::unordered_map<uint64_t, uint16_t> g_latest;  // view id -> newest layout id, under g_layout_mu
std::unordered_map<uint64_t, std::vector<uint16_t>> g_by_view;  // view id -> its layout ids, under g_layout_mu
std::atomic<uint16_t> g_newest[kMaxLayouts + 1];  // layout id -> the latest layout of its view

uint32_t g_runs = 0;  // run numbers handed out, under g_layout_mu

// older: a definition read from a snapshot that is not the view's latest:
// interned without becoming the latest.
uint16_t InternLocked(const ViewLayout& in, bool older = false) {
  if (g_layout_count >= kMaxLayouts)
    throw std::length_error("too many distinct view definitions in this process (65,535): restart the server");
  uint32_t id = ++g_layout_count;
  ViewLayout l = in;
  l.run.assign(l.aggs.size(), 0);
  auto it = g_latest.find(l.view_id);
  const ViewLayout* prev = it == g_latest.end() ? nullptr : FindLayout(it->second);
  for (size_t i = 0; i < l.aggs.size(); i++) {
    int j = prev ? prev->FindSame(l.aggs[i]) : -1;
    l.run[i] = j >= 0 ? prev->run[static_cast<size_t>(j)] : ++g_runs;
  }
  older = older && prev != nullptr;
  Slot* chunk = g_chunks[id >> 8].load(std::memory_order_acquire);
  if (chunk == nullptr) {
    chunk = new Slot[256]();
    g_chunks[id >> 8].store(chunk, std::memory_order_release);
  }
  chunk[id & 255].store(new ViewLayout(std::move(l)), std::memory_order_release);  // kept for the process lifetime
  auto& ids = g_by_view[in.view_id];
  ids.push_back(static_cast<uint16_t>(id));
  if (older) {
    g_newest[id].store(it->second, std::memory_order_release);
  } else {
    g_latest[in.view_id] = static_cast<uint16_t>(id);
    for (uint16_t o : ids) g_newest[o].store(static_cast<uint16_t>(id), std::memory_order_release);
  }
  return static_cast<uint16_t>(id);
}
}  // namespace

uint16_t NewestOf(uint16_t id) { return g_newest[id].load(std::memory_order_acquire); }

void RetireView(uint64_t view_id) {
  std::lock_guard lk(g_layout_mu);
  auto it = g_latest.find(view_id);
  if (it == g_latest.end() || FindLayout(it->second)->aggs.empty()) return;  // none, or retired already
  ViewLayout empty;
  empty.view_id = view_id;
  InternLocked(empty);
}

int MapAggregation(uint16_t from_id, size_t from_index, uint16_t to_id) {
  const ViewLayout &from = LayoutAt(from_id), &to = LayoutAt(to_id);
  const int j = to.FindSame(from.aggs[from_index]);
  return j >= 0 && to.run[static_cast<size_t>(j)] == from.run[from_index] ? j : -1;
}

uint16_t InternLayout(const ViewLayout& l) {
  std::lock_guard lk(g_layout_mu);
  auto it = g_latest.find(l.view_id);
  if (it != g_latest.end() && *FindLayout(it->second) == l) return it->second;
  return InternLocked(l);
}

uint16_t InternOlderLayout(const ViewLayout& l) {
  std::lock_guard lk(g_layout_mu);
  return InternLocked(l, true);
}

uint16_t FindEqualLayout(const ViewLayout& l) {
  std::lock_guard lk(g_layout_mu);
  auto it = g_by_view.find(l.view_id);
  if (it == g_by_view.end()) return 0;
  for (auto id = it->second.rbegin(); id != it->second.rend(); ++id)
    if (*FindLayout(*id) == l) return *id;
  return 0;
}

const ViewLayout* FindLayout(uint16_t id) {
  if (id == 0) return nullptr;
  Slot* chunk = g_chunks[id >> 8].load(std::memory_order_acquire);
  return chunk ? chunk[id & 255].load(std::memory_order_acquire) : nullptr;
}

uint16_t LatestLayout(uint64_t view_id) {
  std::lock_guard lk(g_layout_mu);
  auto it = g_latest.find(view_id);
  return it == g_latest.end() ? 0 : it->second;
}

std::vector<std::pair<uint16_t, const ViewLayout*>> AllLayouts() {
  std::lock_guard lk(g_layout_mu);
  std::vector<std::pair<uint16_t, const ViewLayout*>> out;
  for (uint32_t id = 1; id <= g_layout_count; id++)
    if (const ViewLayout* l = FindLayout(static_cast<uint16_t>(id)); !l->aggs.empty())  // (RetireView's: no block has one)
      out.emplace_back(static_cast<uint16_t>(id), l);
  return out;
}

// ---- the block ----

namespace {
constexpr uint32_t kViewHeader = 10;  // u16 layout id, i64 newest event time

EntityRecord* Allocate(void* old, size_t bytes) {
  void* p = std::realloc(old, sizeof(EntityRecord) + bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<EntityRecord*>(p);
}

uint16_t ReadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
int64_t ReadI64(const uint8_t* p) {
  int64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
size_t VarintSize(const uint8_t* p) {
  size_t n = 1;
  while (*p++ & 0x80) n++;
  return n;
}

// Appenders for replacement bytes.
void PutVarint(std::string& s, uint64_t v) {
  uint8_t b[10];
  s.append(reinterpret_cast<const char*>(b), varint::Put(b, v));
}
void PutF64(std::string& s, double v) { s.append(reinterpret_cast<const char*>(&v), 8); }
double GetF64(const uint8_t* p) {
  double v;
  std::memcpy(&v, p, 8);
  return v;
}
}  // namespace

// Byte surgery on a block; the only code that (re)allocates one.
struct EntityEditor {
  static EntityRecord* Make(size_t bytes) {
    EntityRecord* e = Allocate(nullptr, bytes);
    new (e) EntityRecord();
    e->cap_ = static_cast<uint32_t>(malloc_usable_size(e) - sizeof(EntityRecord));
    return e;
  }
  // Replaces bytes [off, off + old_n) by src[0, new_n).
  static void Replace(EntityRecord** pe, size_t off, size_t old_n, const void* src, size_t new_n) {
    EntityRecord* e = *pe;
    if (old_n == new_n) {  // the common edit (a count or a sum in place): nothing moves
      if (new_n) std::memcpy(e->data() + off, src, new_n);
      return;
    }
    size_t size = e->size_ - old_n + new_n;
    if (size > UINT32_MAX / 2) throw std::length_error("entity state over 2 GB");
    if (size > e->cap_) {
      size_t want = size <= 256 ? size : size + size / 8;  // small blocks fill their size class
      e = Allocate(e, want);
      e->cap_ = static_cast<uint32_t>(malloc_usable_size(e) - sizeof(EntityRecord));
      *pe = e;
    }
    uint8_t* d = e->data();
    std::memmove(d + off + new_n, d + off + old_n, e->size_ - off - old_n);
    if (new_n) std::memcpy(d + off, src, new_n);
    e->size_ = static_cast<uint32_t>(size);
  }
  // Empties a block, keeping its allocation.
  static void Reset(EntityRecord* e) {
    e->size_ = 0;
    e->nviews_ = 0;
  }
  static void Shrink(EntityRecord** pe) {
    EntityRecord* e = *pe;
    if (e->cap_ <= 2 * e->size_ + 64) return;
    e = Allocate(e, e->size_);
    e->cap_ = static_cast<uint32_t>(malloc_usable_size(e) - sizeof(EntityRecord));
    *pe = e;
  }
  static void SetViews(EntityRecord* e, int delta) { e->nviews_ = static_cast<uint8_t>(e->nviews_ + delta); }
};

EntityRecord* EntityRecord::New() { return EntityEditor::Make(0); }

EntityRecord* EntityRecord::FromBytes(std::string_view bytes, uint8_t nviews, bool ttl_override) {
  EntityRecord* e = EntityEditor::Make(bytes.size());
  std::memcpy(e->data(), bytes.data(), bytes.size());
  e->size_ = static_cast<uint32_t>(bytes.size());
  e->nviews_ = nviews;
  e->set_ttl_override(ttl_override);
  return e;
}

void EntityRecord::Destroy(EntityRecord* e) { std::free(e); }

EntityRecord::View EntityRecord::ViewAt(uint32_t off) const {
  View v;
  v.offset = off;
  v.layout_id = ReadU16(data() + off);
  v.layout = FindLayout(v.layout_id);
  v.newest_ts = ReadI64(data() + off + 2);
  return v;
}

uint32_t EntityRecord::EndOfView(const View& v) const {
  const uint8_t* p = data() + v.offset + kViewHeader;
  for (size_t i = 0; i < v.layout->aggs.size(); i++) {
    uint64_t len;
    p = varint::Get(p, &len);
    p += len;
  }
  return static_cast<uint32_t>(p - data());
}

bool EntityRecord::FindView(uint64_t view_id, View* out) const {
  uint32_t off = 0;
  for (uint8_t i = 0; i < nviews_; i++) {
    View v = ViewAt(off);
    if (v.layout->view_id == view_id) {
      *out = v;
      return true;
    }
    off = EndOfView(v);
  }
  return false;
}

namespace {
struct SectionPos {
  size_t len_off, data_off, len;
};
SectionPos SectionOf(const EntityRecord* e, uint32_t view_off, size_t agg) {
  const uint8_t* base = e->data();
  const uint8_t* p = base + view_off + kViewHeader;
  uint64_t len = 0;
  for (size_t i = 0;; i++) {
    const uint8_t* q = varint::Get(p, &len);
    if (i == agg) return {static_cast<size_t>(p - base), static_cast<size_t>(q - base), static_cast<size_t>(len)};
    p = q + len;
  }
}
}  // namespace

std::string_view EntityRecord::Section(const View& v, size_t agg) const {
  SectionPos s = SectionOf(this, v.offset, agg);
  return {reinterpret_cast<const char*>(data()) + s.data_off, s.len};
}

int64_t EntityRecord::ExpireAt() const {
  int64_t at = 0;
  bool never = false;
  ForEachView([&](const View& v) {
    int64_t e = v.ExpireAt();
    if (e == 0) never = true;
    at = std::max(at, e);
  });
  return never ? 0 : at;
}

size_t RunCursor::ValueSize(AggKind k, const uint8_t* p) {
  switch (k) {
    case AggKind::kCount: return VarintSize(p);
    case AggKind::kSum:
    case AggKind::kMin:
    case AggKind::kMax: return 8;
    case AggKind::kMean: return 8 + VarintSize(p + 8);
    case AggKind::kStddev: return VarintSize(p) + 16;
    case AggKind::kCountDistinct: {
      uint64_t tag;
      const uint8_t* q = varint::Get(p, &tag);
      size_t body = tag % 2 == 0 ? 4 * (tag / 2) : tag == 1 ? hll::kRegisters : 3 * (tag / 2);
      return static_cast<size_t>(q - p) + body;
    }
    case AggKind::kLast:
    case AggKind::kLastN: {
      uint64_t h;
      const uint8_t* q = varint::Get(p, &h);
      return static_cast<size_t>(q - p) + (h & 1 ? 0 : h >> 1);
    }
    case AggKind::kQuantile: return dds::EncodedSize(p);
    case AggKind::kSession: {
      const auto op = static_cast<AggKind>(p[0]);
      const uint8_t* q = p + 1;
      q += VarintSize(q);
      q += VarintSize(q);
      switch (op) {
        case AggKind::kSum:
        case AggKind::kMin:
        case AggKind::kMax:
        case AggKind::kMean: q += 8; break;
        case AggKind::kCountDistinct: q += ValueSize(AggKind::kCountDistinct, q); break;
        case AggKind::kLast: q += ValueSize(AggKind::kLast, q); break;
        default: break;
      }
      return static_cast<size_t>(q - p);
    }
  }
  return 0;
}

SessionView ParseSession(int64_t start, const uint8_t* p) {
  SessionView s;
  s.start = start;
  s.op = static_cast<AggKind>(p[0]);
  uint64_t dur, ev;
  const uint8_t* q = varint::Get(p + 1, &dur);
  q = varint::Get(q, &ev);
  s.end = start + static_cast<int64_t>(dur);
  s.events = ev;
  switch (s.op) {
    case AggKind::kSum:
    case AggKind::kMin:
    case AggKind::kMax:
    case AggKind::kMean: s.x = GetF64(q); break;
    case AggKind::kCountDistinct:
    case AggKind::kLast: s.value = q; break;
    default: break;
  }
  return s;
}

std::string_view LastValueText(const uint8_t* p, char* buf) {
  uint64_t h;
  const uint8_t* q = varint::Get(p, &h);
  if (!(h & 1)) return {reinterpret_cast<const char*>(q), static_cast<size_t>(h >> 1)};
  auto r = std::to_chars(buf, buf + 21, varint::UnZigZag(h >> 1));
  return {buf, static_cast<size_t>(r.ptr - buf)};
}

// ---- edits ----

namespace {
constexpr size_t kExactLimit = 64;    // distinct values of one tile kept exactly
constexpr size_t kSparseLimit = 1024;  // sparse HyperLogLog pairs before the dense form

// Replaces [a, b) of the section at s (offsets inside the section) and fixes its length.
void EditSection(EntityRecord** pe, const SectionPos& s, size_t a, size_t b, std::string_view repl) {
  size_t new_len = s.len - (b - a) + repl.size();
  EntityEditor::Replace(pe, s.data_off + a, b - a, repl.data(), repl.size());
  uint8_t buf[10];
  size_t k = varint::Put(buf, new_len), old_k = s.data_off - s.len_off;
  if (k == old_k) std::memcpy((*pe)->data() + s.len_off, buf, k);
  else EntityEditor::Replace(pe, s.len_off, old_k, buf, k);
}

std::string_view SectionView(const EntityRecord* e, const SectionPos& s) {
  return {reinterpret_cast<const char*>(e->data()) + s.data_off, s.len};
}

// The first value of a tile (windowed kinds).
void InitValue(AggKind k, const AggInput& in, std::string& out) {
  switch (k) {
    case AggKind::kCount: PutVarint(out, 1); break;
    case AggKind::kSum:
    case AggKind::kMin:
    case AggKind::kMax: PutF64(out, in.x); break;
    case AggKind::kMean:
      PutF64(out, in.x);
      PutVarint(out, 1);
      break;
    case AggKind::kStddev:
      PutVarint(out, 1);
      PutF64(out, in.x);
      PutF64(out, 0);
      break;
    case AggKind::kCountDistinct:
      PutVarint(out, 2);
      out.append(reinterpret_cast<const char*>(&in.hash), 4);
      break;
    case AggKind::kQuantile: {
      thread_local dds::Sketch sk;
      sk.Clear();
      sk.Add(in.x);
      sk.Encode(&out);
      break;
    }
    default: break;
  }
}

void PutSparse(std::string& out, const std::vector<std::pair<uint16_t, uint8_t>>& pairs) {
  if (pairs.size() > kSparseLimit) {
    uint8_t regs[hll::kRegisters] = {};
    for (auto [r, rank] : pairs) regs[r] = rank;
    PutVarint(out, 1);
    out.append(reinterpret_cast<const char*>(regs), hll::kRegisters);
    return;
  }
  PutVarint(out, 2 * pairs.size() + 1);
  for (auto [r, rank] : pairs) {
    out.append(reinterpret_cast<const char*>(&r), 2);
    out.push_back(static_cast<char>(rank));
  }
}

// Adds a value hash to a count_distinct tile value at p.
void DistinctAdd(const uint8_t* p, uint32_t h, std::string& out) {
  uint64_t tag;
  const uint8_t* q = varint::Get(p, &tag);
  if (tag % 2 == 0) {  // exact set
    size_t k = tag / 2;
    const uint8_t* lo = q;
    size_t i = 0;
    for (; i < k; i++) {  // sorted u32s: find the insertion point
      uint32_t v;
      std::memcpy(&v, lo + 4 * i, 4);
      if (v == h) {
        out.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(q - p) + 4 * k);
        return;
      }
      if (v > h) break;
    }
    if (k + 1 <= kExactLimit) {
      PutVarint(out, 2 * (k + 1));
      out.append(reinterpret_cast<const char*>(lo), 4 * i);
      out.append(reinterpret_cast<const char*>(&h), 4);
      out.append(reinterpret_cast<const char*>(lo + 4 * i), 4 * (k - i));
      return;
    }
    std::vector<std::pair<uint16_t, uint8_t>> pairs;  // becomes a sketch
    auto add = [&](uint32_t v) {
      uint16_t r = hll::Register(v);
      uint8_t rank = hll::Rank(v);
      auto it = std::lower_bound(pairs.begin(), pairs.end(), std::make_pair(r, uint8_t{0}));
      if (it != pairs.end() && it->first == r) it->second = std::max(it->second, rank);
      else pairs.insert(it, {r, rank});
    };
    for (size_t j = 0; j < k; j++) {
      uint32_t v;
      std::memcpy(&v, lo + 4 * j, 4);
      add(v);
    }
    add(h);
    return PutSparse(out, pairs);
  }
  uint16_t r = hll::Register(h);
  uint8_t rank = hll::Rank(h);
  if (tag == 1) {  // dense
    out.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(q - p) + hll::kRegisters);
    size_t at = static_cast<size_t>(q - p) + r;
    if (static_cast<uint8_t>(out[at]) < rank) out[at] = static_cast<char>(rank);
    return;
  }
  size_t n = tag / 2;
  std::vector<std::pair<uint16_t, uint8_t>> pairs(n);
  for (size_t j = 0; j < n; j++) {
    std::memcpy(&pairs[j].first, q + 3 * j, 2);
    pairs[j].second = q[3 * j + 2];
  }
  auto it = std::lower_bound(pairs.begin(), pairs.end(), std::make_pair(r, uint8_t{0}));
  if (it != pairs.end() && it->first == r) {
    if (it->second >= rank) {
      out.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(q - p) + 3 * n);
      return;
    }
    it->second = rank;
  } else {
    pairs.insert(it, {r, rank});
  }
  PutSparse(out, pairs);
}

// A last / last_n value: a canonical decimal integer of up to 18 digits
// ("0", "-7", "12345"; no sign on zero, no leading zeros) as a tagged
// varint, other text as its length and bytes.
void PutLastValue(std::string& out, std::string_view t) {
  size_t i = !t.empty() && t[0] == '-' ? 1 : 0;
  size_t digits = t.size() - i;
  bool canonical = digits >= 1 && digits <= 18 && (t[i] != '0' || (digits == 1 && i == 0));
  for (size_t j = i; canonical && j < t.size(); j++) canonical = t[j] >= '0' && t[j] <= '9';
  if (canonical) {
    int64_t v = 0;
    std::from_chars(t.data(), t.data() + t.size(), v);
    PutVarint(out, (varint::ZigZag(v) << 1) | 1);
    return;
  }
  PutVarint(out, static_cast<uint64_t>(t.size()) << 1);
  out.append(t);
}

// Folds one more value into a tile value at p (windowed kinds).
void UpdateValue(AggKind k, const uint8_t* p, const AggInput& in, std::string& out) {
  switch (k) {
    case AggKind::kCount: {
      uint64_t n;
      varint::Get(p, &n);
      PutVarint(out, n + 1);
      break;
    }
    case AggKind::kSum: PutF64(out, GetF64(p) + in.x); break;
    case AggKind::kMin: PutF64(out, std::min(GetF64(p), in.x)); break;
    case AggKind::kMax: PutF64(out, std::max(GetF64(p), in.x)); break;
    case AggKind::kMean: {
      uint64_t n;
      varint::Get(p + 8, &n);
      PutF64(out, GetF64(p) + in.x);
      PutVarint(out, n + 1);
      break;
    }
    case AggKind::kStddev: {
      uint64_t n;
      const uint8_t* q = varint::Get(p, &n);
      double mean = GetF64(q), m2 = GetF64(q + 8);
      double cnt = static_cast<double>(n + 1);
      double d = in.x - mean;
      mean += d / cnt;
      m2 += d * (in.x - mean);
      PutVarint(out, n + 1);
      PutF64(out, mean);
      PutF64(out, m2);
      break;
    }
    case AggKind::kCountDistinct: DistinctAdd(p, in.hash, out); break;
    case AggKind::kQuantile: {
      thread_local dds::Sketch sk;
      sk.Decode(p);
      sk.Add(in.x);
      sk.Encode(&out);
      break;
    }
    default: break;
  }
}

// Writes a varint in place when its encoded size is unchanged.
bool PutVarintInPlace(uint8_t* p, uint64_t v) {
  uint8_t tmp[10];
  size_t k = varint::Put(tmp, v);
  if (k != VarintSize(p)) return false;
  std::memcpy(p, tmp, k);
  return true;
}

// Folds a value into a tile in place when the tile keeps its size (the
// common edit: a count, a sum, a min/max); false leaves it unchanged.
bool UpdateInPlace(AggKind k, uint8_t* p, const AggInput& in) {
  switch (k) {
    case AggKind::kCount: {
      uint64_t n;
      varint::Get(p, &n);
      return PutVarintInPlace(p, n + 1);
    }
    case AggKind::kSum: {
      double v = GetF64(p) + in.x;
      std::memcpy(p, &v, 8);
      return true;
    }
    case AggKind::kMin:
    case AggKind::kMax: {
      double v = k == AggKind::kMin ? std::min(GetF64(p), in.x) : std::max(GetF64(p), in.x);
      std::memcpy(p, &v, 8);
      return true;
    }
    case AggKind::kMean: {
      uint64_t n;
      varint::Get(p + 8, &n);
      if (!PutVarintInPlace(p + 8, n + 1)) return false;
      double v = GetF64(p) + in.x;
      std::memcpy(p, &v, 8);
      return true;
    }
    case AggKind::kStddev: {
      uint64_t n;
      uint8_t* q = p + VarintSize(p);
      varint::Get(p, &n);
      if (!PutVarintInPlace(p, n + 1)) return false;
      double mean = GetF64(q), m2 = GetF64(q + 8);
      double d = in.x - mean;
      mean += d / static_cast<double>(n + 1);
      m2 += d * (in.x - mean);
      std::memcpy(q, &mean, 8);
      std::memcpy(q + 8, &m2, 8);
      return true;
    }
    case AggKind::kQuantile: return dds::AddInPlace(p, in.x);
    default: return false;  // count_distinct goes through UpdateValue
  }
}

// `s` is the section's position, current on entry (EntityApply computes
// every position once and edits sections from the last one back).
void ApplyWindowed(EntityRecord** pe, const SectionPos& s, const AggSpec& spec, int64_t ts, const AggInput& in) {
  thread_local std::string buf;
  buf.clear();
  const int64_t tile = FloorDiv(ts, spec.resolution_ms);
  RunCursor c(spec.kind, SectionView(*pe, s));
  bool first = true;
  int64_t prev = 0;
  while (c.Next()) {
    if (c.key() == tile) {
      if (UpdateInPlace(spec.kind, (*pe)->data() + s.data_off + c.value_offset(), in)) return;
      UpdateValue(spec.kind, c.value(), in, buf);
      return EditSection(pe, s, c.value_offset(), c.end_offset(), buf);
    }
    if (c.key() < tile) {  // a new tile before this (older) one
      PutVarint(buf, first ? varint::ZigZag(tile) : static_cast<uint64_t>(prev - tile));
      InitValue(spec.kind, in, buf);
      PutVarint(buf, static_cast<uint64_t>(tile - c.key()));
      return EditSection(pe, s, c.key_offset(), c.value_offset(), buf);
    }
    prev = c.key();
    first = false;
  }
  PutVarint(buf, first ? varint::ZigZag(tile) : static_cast<uint64_t>(prev - tile));  // the oldest tile
  InitValue(spec.kind, in, buf);
  EditSection(pe, s, s.len, s.len, buf);
}

// Inserts the item in time order and keeps the cap newest, in one edit:
// with o_j the first item not newer than the new one, [key of o_j, end)
// becomes new item | o_j re-keyed | o_j+1 .. (raw bytes up to the cap).
void ApplyLast(EntityRecord** pe, const SectionPos& s, const AggSpec& spec, int64_t ts, const AggInput& in) {
  thread_local std::string buf;
  buf.clear();
  const size_t cap = spec.kind == AggKind::kLast ? 1 : static_cast<size_t>(std::max(1, spec.n));
  if (in.replace && cap == 1) {  // a table's value: the latest message wins, whatever its time
    if (!in.clear) {
      PutVarint(buf, varint::ZigZag(ts));
      PutLastValue(buf, in.text);
    }
    return EditSection(pe, s, 0, s.len, buf);
  }
  RunCursor c(AggKind::kLast, SectionView(*pe, s));
  bool first = true, found = false;
  int64_t prev = 0;
  size_t j = 0;
  while (c.Next()) {
    if (c.key() <= ts) {  // newer than this one (ties: the later applied is newer)
      found = true;
      break;
    }
    prev = c.key();
    first = false;
    if (++j >= cap) return;  // older than the cap newest ones
  }
  PutVarint(buf, first ? varint::ZigZag(ts) : static_cast<uint64_t>(prev - ts));
  PutLastValue(buf, in.text);
  if (!found) return EditSection(pe, s, s.len, s.len, buf);  // the oldest, under the cap
  // o_j is at the cursor: it stays (re-keyed) when j + 1 < cap, with the
  // items after it up to the cap; the rest is dropped.
  const size_t from = c.key_offset();
  if (j + 1 < cap) {
    PutVarint(buf, static_cast<uint64_t>(ts - c.key()));
    size_t kept_from = c.value_offset(), kept_to = c.end_offset();
    for (size_t i = j + 1; i + 1 < cap && c.Next(); i++) kept_to = c.end_offset();  // o_i, i <= cap - 2
    buf.append(SectionView(*pe, s).substr(kept_from, kept_to - kept_from));
  }
  EditSection(pe, s, from, s.len, buf);
}
}  // namespace

// ---- sessions ----

namespace {
// A session decoded for an out-of-order edit.
struct SessionState {
  int64_t start = 0, end = 0;
  uint64_t events = 0;
  double x = 0;
  std::string value;  // count_distinct: its value; last: its value
};

SessionState ToState(AggKind op, const SessionView& v) {
  SessionState s;
  s.start = v.start;
  s.end = v.end;
  s.events = v.events;
  s.x = v.x;
  if (op == AggKind::kCountDistinct || op == AggKind::kLast)
    s.value.assign(reinterpret_cast<const char*>(v.value), RunCursor::ValueSize(op, v.value));
  return s;
}

void PutSessionHead(AggKind op, int64_t start, int64_t end, uint64_t events, std::string& out) {
  out.push_back(static_cast<char>(op));
  PutVarint(out, static_cast<uint64_t>(end - start));
  PutVarint(out, events);
}

void PutSessionValue(AggKind op, const SessionState& s, std::string& out) {
  PutSessionHead(op, s.start, s.end, s.events, out);
  switch (op) {
    case AggKind::kSum:
    case AggKind::kMin:
    case AggKind::kMax:
    case AggKind::kMean: PutF64(out, s.x); break;
    case AggKind::kCountDistinct:
    case AggKind::kLast: out += s.value; break;
    default: break;
  }
}

// Folds the registers of a sketch value (sparse or dense; q: after its
// tag) into regs, keeping the larger rank of each.
void SketchRegisters(uint64_t tag, const uint8_t* q, uint8_t* regs) {
  if (tag == 1) {
    for (size_t r = 0; r < hll::kRegisters; r++) regs[r] = std::max(regs[r], q[r]);
    return;
  }
  for (uint64_t j = 0; j < tag / 2; j++) {
    uint16_t r;
    std::memcpy(&r, q + 3 * j, 2);
    regs[r] = std::max(regs[r], q[3 * j + 2]);
  }
}

// a := a merged with b (count_distinct values).
void MergeDistinct(std::string& a, std::string b) {
  auto tag = [](const std::string& v, uint64_t* t) { return varint::Get(reinterpret_cast<const uint8_t*>(v.data()), t); };
  uint64_t ta, tb;
  tag(a, &ta);
  tag(b, &tb);
  if (ta % 2 == 0 && tb % 2 != 0) a.swap(b);  // add the exact side into the sketch
  const uint8_t* qa = tag(a, &ta);
  const uint8_t* qb = tag(b, &tb);
  std::string out;
  if (tb % 2 == 0) {  // b exact: add its values one by one
    for (uint64_t j = 0; j < tb / 2; j++) {
      uint32_t h;
      std::memcpy(&h, qb + 4 * j, 4);
      out.clear();
      DistinctAdd(reinterpret_cast<const uint8_t*>(a.data()), h, out);
      a.swap(out);
    }
    return;
  }
  uint8_t regs[hll::kRegisters] = {};  // both sketches: the larger rank of each register
  SketchRegisters(ta, qa, regs);
  SketchRegisters(tb, qb, regs);
  std::vector<std::pair<uint16_t, uint8_t>> pairs;
  for (size_t r = 0; r < hll::kRegisters; r++)
    if (regs[r]) pairs.emplace_back(static_cast<uint16_t>(r), regs[r]);
  PutSparse(out, pairs);
  a.swap(out);
}

// into := into merged with o (the event being applied, or sessions it
// reached, with another session it reached).
void MergeSession(AggKind op, SessionState& into, SessionState&& o) {
  // last: the value of the later end; on a tie `into`, which holds the
  // event being applied (stored sessions never tie: they are disjoint).
  if (op == AggKind::kLast && o.end > into.end) into.value.swap(o.value);
  into.start = std::min(into.start, o.start);
  into.end = std::max(into.end, o.end);
  into.events += o.events;
  switch (op) {
    case AggKind::kSum:
    case AggKind::kMean: into.x += o.x; break;
    case AggKind::kMin: into.x = std::min(into.x, o.x); break;
    case AggKind::kMax: into.x = std::max(into.x, o.x); break;
    case AggKind::kCountDistinct: MergeDistinct(into.value, std::move(o.value)); break;
    default: break;
  }
}

// The newest session v with the event at ts >= v.start added, into out.
void PutExtended(AggKind op, const SessionView& v, int64_t ts, const AggInput& in, std::string& out) {
  PutSessionHead(op, v.start, std::max(v.end, ts), v.events + 1, out);
  switch (op) {
    case AggKind::kSum:
    case AggKind::kMean: PutF64(out, v.x + in.x); break;
    case AggKind::kMin: PutF64(out, std::min(v.x, in.x)); break;
    case AggKind::kMax: PutF64(out, std::max(v.x, in.x)); break;
    case AggKind::kCountDistinct: {
      thread_local std::string set;
      set.clear();
      DistinctAdd(v.value, in.hash, set);
      out += set;
      break;
    }
    case AggKind::kLast:
      if (ts >= v.end) PutLastValue(out, in.text);
      else out.append(reinterpret_cast<const char*>(v.value), RunCursor::ValueSize(AggKind::kLast, v.value));
      break;
    default: break;
  }
}

// Folds the event at ts into the sessions (docs/architecture.md, "Session
// windows"): it joins every open session closer than the gap (so an event
// between two sessions joins them), or starts one. Returns false when the
// event is too old (it reaches no open session and is older than the
// horizon itself): nothing changed.
bool ApplySession(EntityRecord** pe, const SectionPos& s, const AggSpec& spec, int64_t ts, int64_t now,
                  const AggInput& in) {
  const AggKind op = SessionOp(spec);
  const int64_t gap = spec.resolution_ms;
  const int64_t closed = now - SessionHorizon(spec);  // sessions that ended by then are closed for good
  thread_local std::string buf;
  buf.clear();
  SessionState cur;
  cur.start = cur.end = ts;
  cur.events = 1;
  switch (op) {
    case AggKind::kSum:
    case AggKind::kMin:
    case AggKind::kMax:
    case AggKind::kMean: cur.x = in.x; break;
    case AggKind::kCountDistinct: InitValue(AggKind::kCountDistinct, in, cur.value); break;
    case AggKind::kLast: PutLastValue(cur.value, in.text); break;
    default: break;
  }
  RunCursor c(AggKind::kSession, SectionView(*pe, s));
  // The first open session (the rest are dropped). (Sessions of another
  // operation cannot be here: state moves only between equal definitions,
  // ViewLayout::FindSame.)
  const bool first = !c.Next() || ParseSession(c.key(), c.value()).op != op ||
                     ParseSession(c.key(), c.value()).end <= closed;
  if (first) {
    if (ts <= closed) return false;
    PutVarint(buf, varint::ZigZag(ts));
    PutSessionValue(op, cur, buf);
    EditSection(pe, s, 0, s.len, buf);
    return true;
  }
  const SessionView newest = ParseSession(c.key(), c.value());
  if (ts >= newest.start) {  // the common case: only the newest session can be touched
    if (ts < newest.end + gap) {  // it goes on
      PutExtended(op, newest, ts, in, buf);
      EditSection(pe, s, c.value_offset(), c.end_offset(), buf);
      return true;
    }
    // A new session before the newest; past kMaxSessions the oldest goes
    // (an entry takes 4 bytes or more: shorter sections are not counted).
    PutVarint(buf, varint::ZigZag(ts));
    PutSessionValue(op, cur, buf);
    PutVarint(buf, static_cast<uint64_t>(ts - newest.start));
    const size_t rest = c.value_offset();
    size_t cut = s.len;
    if (s.len >= 4 * (kMaxSessions - 1)) {
      size_t n = 1;
      while (c.Next())
        if (++n == kMaxSessions) {
          cut = c.key_offset();
          break;
        }
    }
    if (cut == s.len) {
      EditSection(pe, s, 0, rest, buf);
    } else {
      buf.append(SectionView(*pe, s).substr(rest, cut - rest));
      EditSection(pe, s, 0, s.len, buf);
    }
    return true;
  }
  // Out of order, before the newest session's start: the open sessions are
  // decoded, the ones the event reaches merge with it, and the section is
  // written again (newest first; closed sessions are dropped).
  thread_local std::vector<SessionState> all;
  all.clear();
  bool reached = false;
  auto take = [&](const SessionView& o) {
    if (o.end <= closed || o.op != op) return false;  // this one and every older one are closed
    if (ts < o.end + gap && o.start < ts + gap) {
      MergeSession(op, cur, ToState(op, o));
      reached = true;
    } else {
      all.push_back(ToState(op, o));
    }
    return true;
  };
  if (take(newest))
    while (c.Next() && take(ParseSession(c.key(), c.value()))) {
    }
  if (!reached && ts <= closed) return false;
  auto at = std::find_if(all.begin(), all.end(), [&](const SessionState& o) { return o.start < cur.start; });
  all.insert(at, std::move(cur));
  if (all.size() > kMaxSessions) all.resize(kMaxSessions);
  int64_t prev = 0;
  for (size_t i = 0; i < all.size(); i++) {
    PutVarint(buf, i == 0 ? varint::ZigZag(all[i].start) : static_cast<uint64_t>(prev - all[i].start));
    PutSessionValue(op, all[i], buf);
    prev = all[i].start;
  }
  EditSection(pe, s, 0, s.len, buf);
  return true;
}
}  // namespace

uint64_t DistinctValueCount(const uint8_t* p) {
  uint64_t tag;
  const uint8_t* q = varint::Get(p, &tag);
  if (tag % 2 == 0) return tag / 2;
  uint8_t regs[hll::kRegisters] = {};
  SketchRegisters(tag, q, regs);
  return static_cast<uint64_t>(std::llround(hll::Estimate(regs)));
}

namespace {
// A block the new views of this thread are built in (see EntityApply).
struct Scratch {
  EntityRecord* e = EntityRecord::New();
  ~Scratch() { EntityRecord::Destroy(e); }
};

size_t ApplyTo(EntityRecord** pe, uint16_t layout_id, int64_t ts, int64_t now, const AggInput* in, size_t n,
               bool in_scratch);
}  // namespace

size_t EntityApply(EntityRecord** pe, uint16_t layout_id, int64_t ts, int64_t now_ms, const AggInput* in, size_t n) {
  // Planned under an older layout of the view: its inputs go to the view's
  // latest layout, those whose aggregation lives on (MapAggregation), so
  // no block is made or kept under a layout a reload replaced.
  if (const uint16_t newest = NewestOf(layout_id); newest != layout_id && newest != 0) {
    thread_local std::vector<AggInput> mapped;
    mapped.clear();
    for (size_t i = 0; i < n; i++)
      if (int idx = MapAggregation(layout_id, in[i].index, newest); idx >= 0) {
        mapped.push_back(in[i]);
        mapped.back().index = static_cast<uint16_t>(idx);
      }
    if (mapped.empty()) return 0;  // nothing of it lives on
    return ApplyTo(pe, newest, ts, now_ms, mapped.data(), mapped.size(), false);
  }
  return ApplyTo(pe, layout_id, ts, now_ms, in, n, false);
}

namespace {
size_t ApplyTo(EntityRecord** pe, uint16_t layout_id, int64_t ts, int64_t now, const AggInput* in, size_t n,
               bool in_scratch) {
  (*pe)->set_ttl_override(false);  // new data: the view TTLs decide again
  const ViewLayout& L = LayoutAt(layout_id);
  EntityRecord::View v;
  if (!(*pe)->FindView(L.view_id, &v)) {
    // Session inputs too old to start a session: a view is not made for
    // them alone.
    size_t too_old = 0;
    for (size_t i = 0; i < n; i++) {
      const AggSpec& a = L.aggs[in[i].index];
      too_old += a.kind == AggKind::kSession && ts <= now - SessionHorizon(a);
    }
    if (too_old == n && n > 0) return too_old;
    if ((*pe)->nviews() == 255) return 0;  // the registry refuses more views per entity type
    if (!in_scratch) {
      // A new view grows by a section per input. It is built alone in a
      // scratch block (which keeps its capacity), then appended with one
      // edit: one reallocation of the entity instead of one per section.
      thread_local Scratch scratch;
      EntityEditor::Reset(scratch.e);
      const size_t dropped = ApplyTo(&scratch.e, layout_id, ts, now, in, n, true);
      EntityEditor::Replace(pe, (*pe)->size(), 0, scratch.e->data(), scratch.e->size());
      EntityEditor::SetViews(*pe, 1);
      return dropped;
    }
    std::string hdr(kViewHeader + L.aggs.size(), '\0');  // every section empty
    std::memcpy(hdr.data(), &layout_id, 2);
    std::memcpy(hdr.data() + 2, &ts, 8);
    EntityEditor::Replace(pe, (*pe)->size(), 0, hdr.data(), hdr.size());
    EntityEditor::SetViews(*pe, 1);
    v = (*pe)->ViewAt((*pe)->size() - static_cast<uint32_t>(hdr.size()));
  } else if (v.layout_id < layout_id) {
    EntityMoveView(pe, v.offset, layout_id);
    if (!(*pe)->FindView(L.view_id, &v)) return ApplyTo(pe, layout_id, ts, now, in, n, in_scratch);  // it had no data left
  }
  const ViewLayout& VL = *v.layout;
  const bool stale = v.layout_id != layout_id;
  // (section index, input) pairs, applied from the last section back so
  // that one walk of the section lengths serves every edit: an edit moves
  // only the bytes after its own section.
  thread_local std::vector<std::pair<size_t, size_t>> order;
  thread_local std::vector<SectionPos> pos;
  order.clear();
  for (size_t i = 0; i < n; i++) {
    int idx = in[i].index;
    if (stale) idx = MapAggregation(layout_id, in[i].index, v.layout_id);
    if (idx >= 0) order.emplace_back(static_cast<size_t>(idx), i);
  }
  if (order.empty()) {
    if (ts > v.newest_ts) std::memcpy((*pe)->data() + v.offset + 2, &ts, 8);
    return 0;
  }
  for (size_t a = 1; a < order.size(); a++)  // insertion sort, stable: a few inputs
    for (size_t b = a; b > 0 && order[b - 1].first < order[b].first; b--) std::swap(order[b - 1], order[b]);
  pos.clear();
  const uint8_t* base = (*pe)->data();
  const uint8_t* p = base + v.offset + kViewHeader;
  for (size_t i = 0; i <= order.front().first; i++) {
    uint64_t len;
    const uint8_t* q = varint::Get(p, &len);
    pos.push_back({static_cast<size_t>(p - base), static_cast<size_t>(q - base), static_cast<size_t>(len)});
    p = q + len;
  }
  size_t too_old = 0;
  for (size_t k = 0; k < order.size(); k++) {
    auto [idx, i] = order[k];
    // Two inputs of one section (not planned today): the first edit moved it.
    SectionPos s = k > 0 && order[k - 1].first == idx ? SectionOf(*pe, v.offset, idx) : pos[idx];
    const AggSpec& spec = VL.aggs[idx];
    if (IsWindowed(spec.kind)) ApplyWindowed(pe, s, spec, ts, in[i]);
    else if (spec.kind == AggKind::kSession) too_old += !ApplySession(pe, s, spec, ts, now, in[i]);
    else ApplyLast(pe, s, spec, ts, in[i]);
  }
  // The view's newest event time, unless the event changed nothing.
  if (too_old < order.size() && ts > v.newest_ts) std::memcpy((*pe)->data() + v.offset + 2, &ts, 8);
  return too_old;
}
}  // namespace

void EntityShrink(EntityRecord** pe) { EntityEditor::Shrink(pe); }

bool EntityDropView(EntityRecord** pe, uint32_t view_offset) {
  EntityRecord::View v = (*pe)->ViewAt(view_offset);
  EntityEditor::Replace(pe, view_offset, (*pe)->EndOfView(v) - view_offset, nullptr, 0);
  EntityEditor::SetViews(*pe, -1);
  return true;
}

bool EntityDropViewIfEmpty(EntityRecord** pe, uint64_t view_id) {
  EntityRecord::View v;
  if (!(*pe)->FindView(view_id, &v)) return false;
  for (size_t i = 0; i < v.layout->aggs.size(); i++)
    if (!(*pe)->Section(v, i).empty()) return false;
  EntityDropView(pe, v.offset);
  EntityShrink(pe);
  return true;
}

bool EntityMoveView(EntityRecord** pe, uint32_t view_offset, uint16_t to_layout) {
  EntityRecord::View v = (*pe)->ViewAt(view_offset);
  const ViewLayout &from = *v.layout, &to = LayoutAt(to_layout);
  std::string body(kViewHeader, '\0');
  std::memcpy(body.data(), &to_layout, 2);
  std::memcpy(body.data() + 2, &v.newest_ts, 8);
  bool changed = from.ttl_ms != to.ttl_ms, any = false;
  for (size_t t = 0; t < to.aggs.size(); t++) {
    int i = MapAggregation(to_layout, t, v.layout_id);
    std::string_view sec = i >= 0 ? (*pe)->Section(v, static_cast<size_t>(i)) : std::string_view();
    PutVarint(body, sec.size());
    body.append(sec);
    any |= !sec.empty();
  }
  for (size_t i = 0; i < from.aggs.size(); i++)
    if (MapAggregation(v.layout_id, i, to_layout) < 0 && !(*pe)->Section(v, i).empty()) changed = true;  // its data is freed
  if (!any) return EntityDropView(pe, view_offset);
  EntityEditor::Replace(pe, view_offset, (*pe)->EndOfView(v) - view_offset, body.data(), body.size());
  return changed;
}

bool EntityTrim(EntityRecord** pe, int64_t now_ms) {
  uint32_t off = 0;
  for (uint8_t i = 0; i < (*pe)->nviews();) {
    EntityRecord::View v = (*pe)->ViewAt(off);
    if (!(*pe)->ttl_override() && !v.Live(now_ms)) {
      EntityDropView(pe, off);
      continue;
    }
    bool any = false;
    for (size_t a = 0; a < v.layout->aggs.size(); a++) {
      const AggSpec& spec = v.layout->aggs[a];
      SectionPos s = SectionOf(*pe, off, a);
      if (IsWindowed(spec.kind) && s.len > 0) {
        int64_t min_tile = FloorDiv(now_ms - spec.max_window_ms, spec.resolution_ms) + 1;
        RunCursor c(spec.kind, SectionView(*pe, s));
        while (c.Next())
          if (c.key() < min_tile) {
            EditSection(pe, s, c.key_offset(), s.len, {});
            s = SectionOf(*pe, off, a);
            break;
          }
      } else if (spec.kind == AggKind::kSession && s.len > 0) {
        // Closed sessions (SessionHorizon: nothing reads or joins them),
        // and the oldest beyond kMaxSessions (newest first: disjoint
        // sessions are in end order too).
        const int64_t keep_after = now_ms - SessionHorizon(spec);
        RunCursor c(spec.kind, SectionView(*pe, s));
        for (size_t n = 0; c.Next(); n++)
          if (n >= kMaxSessions || ParseSession(c.key(), c.value()).end <= keep_after) {
            EditSection(pe, s, c.key_offset(), s.len, {});
            s = SectionOf(*pe, off, a);
            break;
          }
      }
      any |= s.len > 0;
    }
    if (!any) {
      EntityDropView(pe, off);
      continue;
    }
    off = (*pe)->EndOfView((*pe)->ViewAt(off));
    i++;
  }
  EntityEditor::Shrink(pe);
  return (*pe)->empty();
}

// ---- reads ----

namespace {
// Folds the tile value at p into a.
inline void FoldTile(AggKind k, const uint8_t* p, Accum& a) {
  switch (k) {
    case AggKind::kCount: {
      uint64_t n;
      varint::Get(p, &n);
      a.n += static_cast<double>(n);
      break;
    }
    case AggKind::kSum:
      a.sum += GetF64(p);
      a.n += 1;
      break;
    case AggKind::kMin:
      a.min = std::min(a.min, GetF64(p));
      a.n += 1;
      break;
    case AggKind::kMax:
      a.max = std::max(a.max, GetF64(p));
      a.n += 1;
      break;
    case AggKind::kMean: {
      uint64_t n;
      varint::Get(p + 8, &n);
      a.sum += GetF64(p);
      a.n += static_cast<double>(n);
      break;
    }
    case AggKind::kStddev: {
      uint64_t n;
      const uint8_t* q = varint::Get(p, &n);
      Accum t;
      t.n = static_cast<double>(n);
      t.mean = GetF64(q);
      t.m2 = GetF64(q + 8);
      double keep_min = a.min, keep_max = a.max;
      a.Merge(t);
      a.min = keep_min;
      a.max = keep_max;
      break;
    }
    default: break;
  }
}
}  // namespace

Accum MergeTiles(AggKind k, std::string_view section, int64_t lo, int64_t hi) {
  Accum a;
  MergeTilesMulti(k, section, &lo, &hi, 1, &a);
  return a;
}

void MergeTilesMulti(AggKind k, std::string_view section, const int64_t* lo, const int64_t* hi, size_t m, Accum* out) {
  int64_t min_lo = INT64_MAX, max_hi = INT64_MIN;
  bool same_hi = true;
  for (size_t j = 0; j < m; j++) {
    out[j] = Accum{};
    min_lo = std::min(min_lo, lo[j]);
    max_hi = std::max(max_hi, hi[j]);
    same_hi = same_hi && hi[j] == hi[0];
  }
  constexpr size_t kMaxNested = 16;
  if (!same_hi || m > kMaxNested) {
    RunCursor c(k, section);
    while (c.Next()) {
      const int64_t key = c.key();
      if (key > max_hi) continue;
      if (key < min_lo) break;  // entries are newest first
      for (size_t j = 0; j < m; j++)
        if (key >= lo[j] && key <= hi[j]) FoldTile(k, c.value(), out[j]);
    }
    return;
  }
  // The windows of one aggregation at one time end at the same tile, so they
  // nest: one running merge over the walk, copied into a window's result
  // when the walk passes its oldest tile. Each window gets the fold of the
  // same tiles in the same order as its own walk would, so the same bits.
  size_t order[kMaxNested];
  for (size_t j = 0; j < m; j++) order[j] = j;
  std::sort(order, order + m, [&](size_t a, size_t b) { return lo[a] > lo[b]; });  // narrowest first
  Accum acc;
  size_t next = 0;
  auto passed = [&](int64_t key) {
    while (next < m && key < lo[order[next]]) out[order[next++]] = acc;
    return next == m;
  };
  if (k == AggKind::kCount) {  // the common kind, walked without the generic cursor
    const uint8_t* p = reinterpret_cast<const uint8_t*>(section.data());
    const uint8_t* end = p + section.size();
    int64_t key = 0;
    bool first = true;
    while (p < end) {
      uint64_t v, n;
      p = varint::Get(p, &v);
      key = first ? varint::UnZigZag(v) : key - static_cast<int64_t>(v);
      first = false;
      p = varint::Get(p, &n);
      if (key > max_hi) continue;
      if (passed(key)) break;
      acc.n += static_cast<double>(n);
    }
  } else {
    RunCursor c(k, section);
    while (c.Next()) {
      if (c.key() > max_hi) continue;
      if (passed(c.key())) break;
      FoldTile(k, c.value(), acc);
    }
  }
  while (next < m) out[order[next++]] = acc;
}

namespace {
// The number of distinct values among v[0..n): an open-addressing set of
// the 32-bit hashes (already uniform, so the low bits index it), sized to
// at least twice n. Linear in n, where sorting was n log n.
size_t CountUnique(const uint32_t* v, size_t n) {
  size_t cap = 64;
  while (cap < 2 * n) cap *= 2;
  constexpr size_t kStackSlots = 1024;
  uint32_t stack[kStackSlots];
  thread_local std::vector<uint32_t> heap;
  uint32_t* slots = stack;
  if (cap > kStackSlots) {
    heap.assign(cap, 0);
    slots = heap.data();
  } else {
    std::memset(slots, 0, cap * sizeof(uint32_t));
  }
  const size_t mask = cap - 1;
  size_t unique = 0;
  bool zero = false;  // 0 marks an empty slot, so the value 0 is counted apart
  for (size_t j = 0; j < n; j++) {
    uint32_t h = v[j];
    if (h == 0) {
      zero = true;
      continue;
    }
    for (size_t s = h & mask;; s = (s + 1) & mask) {
      if (slots[s] == h) break;
      if (slots[s] == 0) {
        slots[s] = h;
        unique++;
        break;
      }
    }
  }
  return unique + (zero ? 1 : 0);
}
}  // namespace

uint64_t CountDistinct(std::string_view section, int64_t lo, int64_t hi) {
  // Exact while no tile is a sketch and the union holds at most 256 values:
  // the values of the tiles gather in a small array on the stack.
  constexpr size_t kMaxExact = kExactLimit * 4;
  uint32_t small[kMaxExact];
  size_t n = 0, tiles_seen = 0;
  bool exact = true;
  thread_local std::vector<const uint8_t*> sketches;
  thread_local std::vector<uint32_t> spill;  // values past kMaxExact (they go into the sketch)
  sketches.clear();
  spill.clear();
  RunCursor c(AggKind::kCountDistinct, section);
  while (c.Next()) {
    if (c.key() > hi) continue;
    if (c.key() < lo) break;
    tiles_seen++;
    uint64_t tag;
    const uint8_t* q = varint::Get(c.value(), &tag);
    if (tag % 2 != 0) {
      sketches.push_back(c.value());
      exact = false;
      continue;
    }
    size_t k = tag / 2;
    for (size_t j = 0; j < k; j++) {
      uint32_t v;
      std::memcpy(&v, q + 4 * j, 4);
      if (n < kMaxExact) small[n++] = v;
      else spill.push_back(v);
    }
  }
  if (exact && spill.empty()) {
    if (tiles_seen <= 1) return n;  // one tile's set is already unique
    return CountUnique(small, n);     // n <= 256 values: at most 256 distinct
  } else if (exact) {
    // More than 256 values gathered: they may still be few distinct ones.
    spill.insert(spill.end(), small, small + n);
    size_t u = CountUnique(spill.data(), spill.size());
    if (u <= kMaxExact) return u;
    n = 0;
  }
  uint8_t regs[hll::kRegisters] = {};
  auto add = [&](uint32_t h) { regs[hll::Register(h)] = std::max(regs[hll::Register(h)], hll::Rank(h)); };
  for (size_t j = 0; j < n; j++) add(small[j]);
  for (uint32_t h : spill) add(h);
  for (const uint8_t* p : sketches) {
    uint64_t tag;
    const uint8_t* q = varint::Get(p, &tag);
    if (tag == 1) {
      for (size_t r = 0; r < hll::kRegisters; r++) regs[r] = std::max(regs[r], q[r]);
    } else {
      for (size_t j = 0; j < tag / 2; j++) {
        uint16_t r;
        std::memcpy(&r, q + 3 * j, 2);
        regs[r] = std::max(regs[r], q[3 * j + 2]);
      }
    }
  }
  return static_cast<uint64_t>(std::llround(hll::Estimate(regs)));
}

void MergeQuantileTiles(std::string_view section, int64_t lo, int64_t hi, dds::Sketch* out) {
  out->Clear();
  RunCursor c(AggKind::kQuantile, section);
  while (c.Next()) {
    if (c.key() > hi) continue;
    if (c.key() < lo) break;
    out->MergeEncoded(c.value());
  }
}

SectionCounts CountSection(AggKind k, std::string_view section) {
  SectionCounts n;
  RunCursor c(k, section);
  while (c.Next()) {
    if (k == AggKind::kLast || k == AggKind::kLastN) {
      n.values++;
      continue;
    }
    n.tiles++;
    if (k == AggKind::kCountDistinct) {
      uint64_t tag;
      varint::Get(c.value(), &tag);
      if (tag % 2 == 0) n.values += tag / 2;
      else n.sketches++;
    }
    if (k == AggKind::kQuantile) n.sketches++;
  }
  return n;
}

// ---- validation of blocks from outside ----

namespace {
// Times and durations beyond this (~73 million years in ms) cannot come from
// the server; refusing them keeps every later sum of two inside int64.
constexpr int64_t kMaxAbs = int64_t{1} << 61;

struct Checked {
  const uint8_t* p;
  const uint8_t* end;
  bool Varint(uint64_t* v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) return false;
      uint8_t b = *p++;
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = r;
        return true;
      }
    }
    return false;
  }
  bool Skip(uint64_t n) {
    if (n > static_cast<uint64_t>(end - p)) return false;
    p += n;
    return true;
  }
};

std::string CheckValue(AggKind k, Checked& c) {
  uint64_t n = 0;
  switch (k) {
    case AggKind::kCount:
      if (!c.Varint(&n) || n == 0 || n > (uint64_t{1} << 53)) return "bad tile count";
      return "";
    case AggKind::kSum:
    case AggKind::kMin:
    case AggKind::kMax: return c.Skip(8) ? "" : "truncated tile";
    case AggKind::kMean:
      if (!c.Skip(8) || !c.Varint(&n) || n == 0 || n > (uint64_t{1} << 53)) return "bad tile count";
      return "";
    case AggKind::kStddev:
      if (!c.Varint(&n) || n == 0 || n > (uint64_t{1} << 53) || !c.Skip(16)) return "bad tile count";
      return "";
    case AggKind::kCountDistinct: {
      uint64_t tag;
      if (!c.Varint(&tag)) return "truncated distinct set";
      if (tag == 1) {
        if (static_cast<size_t>(c.end - c.p) < hll::kRegisters) return "truncated sketch";
        for (size_t r = 0; r < hll::kRegisters; r++)
          if (c.p[r] > hll::kMaxRank) return "bad sketch register";
        c.p += hll::kRegisters;
        return "";
      }
      if (tag % 2 == 0) {
        uint64_t k2 = tag / 2;
        if (k2 == 0 || k2 > kExactLimit) return "bad distinct set size";
        if (static_cast<uint64_t>(c.end - c.p) < 4 * k2) return "truncated distinct set";
        uint32_t last = 0;
        for (uint64_t i = 0; i < k2; i++) {
          uint32_t v;
          std::memcpy(&v, c.p + 4 * i, 4);
          if (i > 0 && v <= last) return "distinct values out of order";
          last = v;
        }
        c.p += 4 * k2;
        return "";
      }
      uint64_t pairs = tag / 2;
      if (pairs == 0 || pairs > kSparseLimit) return "bad sparse sketch size";
      if (static_cast<uint64_t>(c.end - c.p) < 3 * pairs) return "truncated sketch";
      uint16_t last = 0;
      for (uint64_t i = 0; i < pairs; i++) {
        uint16_t r;
        std::memcpy(&r, c.p + 3 * i, 2);
        uint8_t rank = c.p[3 * i + 2];
        if (r >= hll::kRegisters || rank == 0 || rank > hll::kMaxRank || (i > 0 && r <= last))
          return "bad sparse sketch";
        last = r;
      }
      c.p += 3 * pairs;
      return "";
    }
    case AggKind::kLast:
    case AggKind::kLastN:
      if (!c.Varint(&n)) return "truncated last value";
      if (n & 1) return (n >> 1) < (uint64_t{1} << 61) ? "" : "bad integer value";  // |v| < 2^60
      if (!c.Skip(n >> 1)) return "truncated last value";
      return "";
    case AggKind::kQuantile: return dds::Check(&c.p, c.end);
    case AggKind::kSession: {
      if (c.p >= c.end) return "truncated session";
      const auto op = static_cast<AggKind>(*c.p++);
      uint64_t dur;
      if (!IsSessionOp(op)) return "bad session operation";
      if (!c.Varint(&dur) || dur > static_cast<uint64_t>(kMaxAbs)) return "bad session duration";
      if (!c.Varint(&n) || n == 0 || n > (uint64_t{1} << 53)) return "bad session events";
      switch (op) {
        case AggKind::kSum:
        case AggKind::kMin:
        case AggKind::kMax:
        case AggKind::kMean: return c.Skip(8) ? "" : "truncated session";
        case AggKind::kCountDistinct: return CheckValue(AggKind::kCountDistinct, c);
        case AggKind::kLast: return CheckValue(AggKind::kLast, c);
        default: return "";
      }
    }
  }
  return "unknown kind";
}

std::string CheckSection(const AggSpec& spec, std::string_view sec) {
  Checked c{reinterpret_cast<const uint8_t*>(sec.data()), reinterpret_cast<const uint8_t*>(sec.data()) + sec.size()};
  const bool session = spec.kind == AggKind::kSession;
  const bool windowed = IsWindowed(spec.kind) || session;  // keys strictly newest first
  const size_t cap = spec.kind == AggKind::kLast ? 1 : session ? kMaxSessions : static_cast<size_t>(std::max(1, spec.n));
  const char* order = session ? "sessions out of order" : windowed ? "tiles out of order" : "last values out of order";
  int64_t key = 0, newer_start = 0;
  size_t entries = 0;
  while (c.p < c.end) {
    newer_start = key;  // sessions: the newer one, which this one must end a gap before
    uint64_t v;
    if (!c.Varint(&v)) return "truncated entry";
    if (entries == 0) {
      key = varint::UnZigZag(v);
      if (key < -kMaxAbs || key > kMaxAbs) return session ? "bad session start" : windowed ? "bad tile" : "bad event time";
    } else {
      if (windowed && v == 0) return order;
      if (v > static_cast<uint64_t>(kMaxAbs) || key - static_cast<int64_t>(v) < -kMaxAbs) return order;
      key -= static_cast<int64_t>(v);
    }
    entries++;
    if (!windowed && entries > cap) return "more last values than the aggregation keeps";
    if (session && entries > cap) return "more sessions than an aggregation keeps";
    const uint8_t* value = c.p;
    if (session && c.p < c.end && static_cast<AggKind>(*c.p) != SessionOp(spec)) return "session of another operation";
    if (std::string e = CheckValue(spec.kind, c); !e.empty()) return e;
    if (session) {
      const SessionView sv = ParseSession(key, value);
      if (sv.end > kMaxAbs) return "bad session duration";
      if (entries > 1 && newer_start - sv.end < spec.resolution_ms) return "sessions closer than the gap";
    }
  }
  return "";
}
}  // namespace

std::string ValidateEntityBytes(std::string* bytes, uint8_t nviews, const std::vector<uint16_t>& map) {
  uint8_t* base = reinterpret_cast<uint8_t*>(bytes->data());
  Checked c{base, base + bytes->size()};
  std::vector<uint64_t> seen;
  for (uint8_t i = 0; i < nviews; i++) {
    if (c.end - c.p < static_cast<std::ptrdiff_t>(kViewHeader)) return "truncated view";
    uint16_t file_id = ReadU16(c.p);
    uint16_t id = file_id < map.size() ? map[file_id] : 0;
    const ViewLayout* layout = FindLayout(id);
    if (layout == nullptr) return "unknown view layout " + std::to_string(file_id);
    std::memcpy(const_cast<uint8_t*>(c.p), &id, 2);
    int64_t newest = ReadI64(c.p + 2);
    if (newest < -kMaxAbs || newest > kMaxAbs) return "bad event time";
    c.p += kViewHeader;
    const ViewLayout& L = *layout;
    if (std::find(seen.begin(), seen.end(), L.view_id) != seen.end()) return "duplicate view";
    seen.push_back(L.view_id);
    for (const AggSpec& spec : L.aggs) {
      uint64_t len;
      if (!c.Varint(&len) || len > static_cast<uint64_t>(c.end - c.p)) return "truncated section";
      std::string_view sec(reinterpret_cast<const char*>(c.p), len);
      if (std::string e = CheckSection(spec, sec); !e.empty()) return std::string(AggName(spec.kind)) + ": " + e;
      c.p += len;
    }
  }
  if (c.p != c.end) return "bytes left after the views";
  return "";
}

}  // namespace fkv
