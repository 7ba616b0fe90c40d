// EntityRecord: the value of an entity key (`user:42`, TYPE `feature`) as
// one contiguous block of bytes (docs/architecture.md, "Entity state"):
//
//   header (size, capacity, flags, view count) | view | view | ...
//   view    = u16 layout id | i64 newest event time | one section per aggregation
//   section = varint length | entries
//
// A view's layout (ViewLayout: view id, TTL, the aggregation specs in
// registry order) is interned once per process and shared by every entity
// of that view; an entity holds only its data. Sections hold runs of
// entries, newest first, each keyed by a tile index (windowed kinds) or an
// event time (last / last_n): the first key is a zigzag varint, the next
// ones varint differences to the previous (newer) key. Values:
//
//   count            varint n
//   sum | min | max  f64
//   mean             f64 sum, varint n
//   stddev           varint n, f64 mean, f64 m2 (Welford/Chan)
//   count_distinct   varint tag: 2k -> k sorted u32 value hashes (k <= 64);
//                    2n+1 -> sparse HyperLogLog, n (u16 register, u8 rank)
//                    pairs; 1 -> dense HyperLogLog, 4096 u8 registers
//   quantile         a DDSketch: varint length | bucket counts (storage/quantile.h)
//   last | last_n    varint h: h even -> h/2 bytes of text follow; h odd ->
//                    the text is the canonical decimal integer
//                    unzigzag(h >> 1) (as a listpack stores "12345")
//   session          keyed by the session's first event time: u8 operation |
//                    varint duration (last - first event time) | varint
//                    events | the operation's value: nothing (count), f64
//                    (sum, min, max; mean: the sum), a count_distinct value,
//                    or a last value (of the session's last event)
//
// Owned by a Record; touched only by the owning shard's thread. Every
// mutation may move the block (it grows in place when it can): functions
// that change an entity take `EntityRecord**` and update the pointer.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "storage/aggregate.h"

namespace fkv {

// Floor division for tile indexes (timestamps may precede the epoch).
inline int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

// ---- view layouts ----

struct ViewLayout {
  uint64_t view_id = 0;
  int64_t ttl_ms = 0;  // 0 = never expires
  std::vector<AggSpec> aggs;
  int Find(uint64_t signature) const;  // index or -1
  // The index of the aggregation with a's signature and the same kind,
  // tiles, retention and n, or -1: state moves between layouts only to the
  // same definition (a snapshot's layouts are not trusted to agree with
  // their signatures).
  int FindSame(const AggSpec& a) const;
  bool operator==(const ViewLayout& o) const;  // (run is not compared)
  // Set by InternLayout: run[i] names the run of this view's successive
  // layouts that all had aggregation i unchanged (a new number when the
  // view's latest layout lacked it). State moves between two layouts only
  // within one run (MapAggregation): an aggregation dropped and defined
  // again (or a view dropped, RetireView, and added again) starts empty,
  // even for updates planned before the drop and applied after it.
  std::vector<uint32_t> run = {};
};

// The process-wide table of layouts. Intern returns the id (>= 1) of an
// equal layout when it is the latest one of its view, else a new, larger
// id: ids of one view only grow, so the larger id is the newer definition.
// Thread-safe; LayoutAt is lock-free. Throws std::length_error past
// kMaxLayouts (65,535 distinct definitions in one process lifetime).
inline constexpr uint32_t kMaxLayouts = 65535;
uint16_t InternLayout(const ViewLayout& l);
// An older definition read from a snapshot (not the view's latest, which
// the registry interned first): a new id that does not become the view's
// latest; its aggregations continue the latest's runs where they match.
uint16_t InternOlderLayout(const ViewLayout& l);
const ViewLayout* FindLayout(uint16_t id);  // nullptr when not interned
uint16_t LatestLayout(uint64_t view_id);    // 0 when the view has none
// The latest layout of the view of layout `id` (lock-free).
uint16_t NewestOf(uint16_t id);
// A view left the registry: its next layout starts a new run (an empty
// layout is interned as its latest), so nothing of it lives on into a
// view of that name defined again.
void RetireView(uint64_t view_id);
// The index in layout to_id of aggregation from_index of layout from_id
// (two layouts of one view) when it lives on unchanged between them (see
// ViewLayout::run), else -1.
int MapAggregation(uint16_t from_id, size_t from_index, uint16_t to_id);
// The id of an interned layout equal to `l` (the newest such), or 0: how
// a snapshot or an append-only PUT names an older definition it holds
// without minting a new id at every read.
uint16_t FindEqualLayout(const ViewLayout& l);
inline const ViewLayout& LayoutAt(uint16_t id) { return *FindLayout(id); }
// Every interned layout as (id, layout), for snapshots (but RetireView's
// empty ones, which no entity names).
std::vector<std::pair<uint16_t, const ViewLayout*>> AllLayouts();

// ---- the entity block ----

class EntityRecord {
 public:
  static EntityRecord* New();
  // A block holding `bytes` (views, already validated) and `nviews` views.
  static EntityRecord* FromBytes(std::string_view bytes, uint8_t nviews, bool ttl_override);
  static void Destroy(EntityRecord* e);
  EntityRecord* Clone() const { return FromBytes(bytes(), nviews_, ttl_override()); }

  std::string_view bytes() const { return {reinterpret_cast<const char*>(data()), size_}; }
  uint8_t nviews() const { return nviews_; }
  bool empty() const { return nviews_ == 0; }
  // Set by EXPIRE / PERSIST on the key: the key's own expiry decides until
  // the next applied event (view TTLs are not enforced meanwhile).
  bool ttl_override() const { return flags_ & 1; }
  void set_ttl_override(bool on) { flags_ = static_cast<uint8_t>(on ? (flags_ | 1) : (flags_ & ~1)); }
  // Key expiry: the latest of the views' expiries; 0 when a view never expires.
  int64_t ExpireAt() const;
  size_t MemoryUsage() const { return sizeof(EntityRecord) + cap_; }

  // A view of the block, for reads. Valid until the entity changes.
  struct View {
    uint16_t layout_id = 0;
    const ViewLayout* layout = nullptr;
    int64_t newest_ts = 0;
    uint32_t offset = 0;  // of the view header in bytes()
    bool Live(int64_t now_ms) const { return layout->ttl_ms == 0 || newest_ts + layout->ttl_ms > now_ms; }
    int64_t ExpireAt() const { return layout->ttl_ms > 0 ? newest_ts + layout->ttl_ms : 0; }
  };
  bool FindView(uint64_t view_id, View* out) const;
  // Calls f(const View&) for every view, in order.
  template <class F>
  void ForEachView(F&& f) const {
    uint32_t off = 0;
    for (uint8_t i = 0; i < nviews_; i++) {
      View v = ViewAt(off);
      f(v);
      off = EndOfView(v);
    }
  }
  // The entries of aggregation `agg` (an index into the view's layout).
  std::string_view Section(const View& v, size_t agg) const;

  // Internal layout helpers (entity.cc, snapshot codec).
  View ViewAt(uint32_t off) const;
  uint32_t EndOfView(const View& v) const;
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(this + 1); }
  uint8_t* data() { return reinterpret_cast<uint8_t*>(this + 1); }
  uint32_t size() const { return size_; }

 private:
  friend struct EntityEditor;
  EntityRecord() = default;
  uint32_t size_ = 0, cap_ = 0;
  uint8_t flags_ = 0, nviews_ = 0;
  uint8_t pad_[2] = {0, 0};
};
static_assert(sizeof(EntityRecord) == 12);

// ---- operations (storage/entity.cc) ----

// One aggregation's share of an event, for EntityApply.
struct AggInput {
  uint16_t index = 0;     // in the layout of the update
  double x = 0;           // sum, min, max, mean, stddev
  uint32_t hash = 0;      // count_distinct: the value's 32-bit hash
  std::string_view text;  // last, last_n
  bool replace = false;   // last: replaces the value whatever its time (a table source)
  bool clear = false;     // with replace: removes the value instead
};

// Applies one event of view layout `layout_id` (event time ts) to the
// entity: creates the view when absent; moves a view kept under an older
// layout of the same view to this one first; maps the inputs of an update
// planned with an older layout by aggregation signature (dropping those
// the view no longer has). Clears the TTL override. now_ms is the clock of
// the apply: sessions close by it (SessionHorizon). Returns the number of
// session inputs dropped as too old.
size_t EntityApply(EntityRecord** pe, uint16_t layout_id, int64_t ts, int64_t now_ms, const AggInput* in, size_t n);
// Drops expired views (unless the TTL override is on) and tiles that can
// no longer be inside any window (tile start <= now - largest window), then
// views left without any data. Returns true when nothing is left.
bool EntityTrim(EntityRecord** pe, int64_t now_ms);
// Moves every view to the layout `target(view_id)` returns (0: drop the
// view): aggregations with the same signature keep their data, others
// start empty. Returns true when anything changed (data or TTL).
template <class F>
bool EntityReconcile(EntityRecord** pe, F&& target);

// Reads of one section.
Accum MergeTiles(AggKind k, std::string_view section, int64_t lo, int64_t hi);
// Several windows of one section in one walk: out[j] merges tiles lo[j]..hi[j].
void MergeTilesMulti(AggKind k, std::string_view section, const int64_t* lo, const int64_t* hi, size_t m, Accum* out);
uint64_t CountDistinct(std::string_view section, int64_t lo, int64_t hi);
namespace dds {
class Sketch;
}
// The sketch of tiles lo..hi of a quantile section (replacing *out's).
void MergeQuantileTiles(std::string_view section, int64_t lo, int64_t hi, dds::Sketch* out);
// Calls f(int64_t ts, std::string_view value) for last / last_n items,
// newest first; `value` is valid during the call only (integer-encoded
// items are rendered into a local buffer).
template <class F>
void ForEachLastItem(std::string_view section, F&& f);
// One session of a session section (docs/architecture.md, "Session windows").
struct SessionView {
  int64_t start = 0, end = 0;  // first and last event time
  uint64_t events = 0;
  AggKind op = AggKind::kCount;
  double x = 0;                    // sum, min, max; mean: the sum
  const uint8_t* value = nullptr;  // count_distinct: its set or sketch; last: the value at `end` (LastValueText)
};
SessionView ParseSession(int64_t start, const uint8_t* value);
// Calls f(const SessionView&) for each session, newest first, while f returns true.
template <class F>
void ForEachSession(std::string_view section, F&& f);
// The number of distinct values of one count_distinct value (a set or a sketch).
uint64_t DistinctValueCount(const uint8_t* value);
// Sessions kept per aggregation: the oldest beyond this are dropped.
inline constexpr size_t kMaxSessions = 4096;

// Counts of a section, for featurekv-snapshot and MEMORY statistics.
struct SectionCounts {
  uint64_t tiles = 0, sketches = 0, values = 0;  // values: distinct hashes or last items
};
SectionCounts CountSection(AggKind k, std::string_view section);

// Checks a block read from outside (a snapshot) against the layouts it
// names: `map` translates the file's layout ids to this process's (0 =
// unknown); the ids in *bytes are rewritten. Returns "" or the problem.
std::string ValidateEntityBytes(std::string* bytes, uint8_t nviews, const std::vector<uint16_t>& map);

// 32-bit value hash of count_distinct from the 64-bit hash of the value text.
inline uint32_t DistinctHash(uint64_t h64) { return static_cast<uint32_t>(h64 >> 32); }

// ---- varints (little-endian base 128) over trusted bytes ----
namespace varint {
inline const uint8_t* Get(const uint8_t* p, uint64_t* v) {
  uint64_t r = 0;
  int shift = 0;
  while (*p & 0x80) {
    r |= static_cast<uint64_t>(*p++ & 0x7f) << shift;
    shift += 7;
  }
  *v = r | (static_cast<uint64_t>(*p++) << shift);
  return p;
}
inline size_t Put(uint8_t* p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  p[n++] = static_cast<uint8_t>(v);
  return n;
}
inline uint64_t ZigZag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
inline int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }
}  // namespace varint

// A walk over the entries of a section, newest first.
class RunCursor {
 public:
  RunCursor(AggKind k, std::string_view section)
      : kind_(k),
        p_(reinterpret_cast<const uint8_t*>(section.data())),
        begin_(p_),
        end_(p_ + section.size()) {}
  // Advances to the next entry; false at the end.
  bool Next() {
    if (p_ >= end_) return false;
    key_start_ = p_;
    uint64_t v;
    p_ = varint::Get(p_, &v);
    key_ = first_ ? varint::UnZigZag(v) : key_ - static_cast<int64_t>(v);
    first_ = false;
    value_ = p_;
    p_ += ValueSize(kind_, p_);
    return true;
  }
  int64_t key() const { return key_; }
  const uint8_t* value() const { return value_; }
  size_t value_size() const { return static_cast<size_t>(p_ - value_); }
  size_t key_offset() const { return static_cast<size_t>(key_start_ - begin_); }
  size_t value_offset() const { return static_cast<size_t>(value_ - begin_); }
  size_t end_offset() const { return static_cast<size_t>(p_ - begin_); }
  static size_t ValueSize(AggKind k, const uint8_t* p);

 private:
  AggKind kind_;
  const uint8_t* p_;
  const uint8_t* begin_;
  const uint8_t* end_;
  const uint8_t* key_start_ = nullptr;
  const uint8_t* value_ = nullptr;
  int64_t key_ = 0;
  bool first_ = true;
};

// A last / last_n value at p: text, or an integer rendered into buf[21].
std::string_view LastValueText(const uint8_t* p, char* buf);

template <class F>
void ForEachSession(std::string_view section, F&& f) {
  RunCursor c(AggKind::kSession, section);
  while (c.Next())
    if (!f(ParseSession(c.key(), c.value()))) return;
}

template <class F>
void ForEachLastItem(std::string_view section, F&& f) {
  RunCursor c(AggKind::kLast, section);
  char buf[24];
  while (c.Next()) f(c.key(), LastValueText(c.value(), buf));
}

// Rebuilds one view under a new layout (EntityReconcile's step).
bool EntityMoveView(EntityRecord** pe, uint32_t view_offset, uint16_t to_layout);
bool EntityDropView(EntityRecord** pe, uint32_t view_offset);
// Drops view `view_id` when none of its sections holds data; true if it did.
bool EntityDropViewIfEmpty(EntityRecord** pe, uint64_t view_id);
// Gives back the block's spare capacity when it is more than half unused.
void EntityShrink(EntityRecord** pe);

template <class F>
bool EntityReconcile(EntityRecord** pe, F&& target) {
  bool changed = false;
  uint32_t off = 0;
  for (uint8_t i = 0; i < (*pe)->nviews();) {
    EntityRecord::View v = (*pe)->ViewAt(off);
    uint16_t to = target(v.layout->view_id);
    if (to == 0) {
      EntityDropView(pe, off);
      changed = true;
      continue;
    }
    if (to != v.layout_id) {
      const uint8_t before = (*pe)->nviews();
      changed |= EntityMoveView(pe, off, to);
      if ((*pe)->nviews() < before) continue;  // nothing of it survived: dropped, the next view is at `off`
      v = (*pe)->ViewAt(off);
    }
    off = (*pe)->EndOfView(v);
    i++;
  }
  if (changed) EntityShrink(pe);  // a dropped view's bytes go back to the allocator
  return changed;
}

}  // namespace fkv
