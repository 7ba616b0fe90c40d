// EntityRecord: the value of an entity key (`user:42`, TYPE `feature`): per
// view its newest event time and per aggregation its state (tiles, distinct
// sets, last values), keyed by the aggregation's signature so that a
// registry reload keeps unchanged aggregations. Owned by a Record; touched
// only by the owning shard's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "storage/aggregate.h"

namespace fkv {

// Floor division for tile indexes (timestamps may precede the epoch).
inline int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

struct AggState {
  AggSpec spec;
  uint32_t tile_len = 0;                     // count..stddev: doubles in the view's arena
  std::unique_ptr<DistinctSeries> distinct;  // count_distinct
  std::unique_ptr<LastList> last;            // last, last_n
  bool empty() const;
  size_t MemoryUsage() const;
};

struct ViewState {
  uint64_t view_id = 0;
  int64_t newest_ts = INT64_MIN;  // newest event time applied (TTL runs from it)
  int64_t ttl_ms = 0;             // 0 = never expires
  std::vector<AggState> aggs;
  // The numeric tiles of every aggregation, one segment per aggregation in
  // the order of `aggs` (segment i starts at the sum of tile_len before it).
  std::vector<double> arena;
  AggState* Find(uint64_t signature);
  AggState& Get(const AggSpec& spec);  // creates when absent
  void AddTile(AggState& a, int64_t tile, double x);
  Accum MergeTiles(const AggState& a, int64_t lo, int64_t hi) const;
  void DropTilesBefore(AggState& a, int64_t min_tile);
  // Removes the aggregations `drop` selects, with their tiles.
  template <class F>
  void EraseAggsIf(F&& drop) {
    std::vector<double> kept;
    std::vector<AggState> keep_aggs;
    size_t off = 0;
    for (auto& a : aggs) {
      if (!drop(a)) {
        kept.insert(kept.end(), arena.begin() + static_cast<std::ptrdiff_t>(off),
                    arena.begin() + static_cast<std::ptrdiff_t>(off + a.tile_len));
        keep_aggs.push_back(std::move(a));
      }
      off += a.tile_len;
    }
    aggs = std::move(keep_aggs);
    arena = std::move(kept);
  }
  int64_t ExpireAt() const { return ttl_ms > 0 && newest_ts != INT64_MIN ? newest_ts + ttl_ms : 0; }
  bool Live(int64_t now_ms) const { return ttl_ms == 0 || newest_ts + ttl_ms > now_ms; }
};

class EntityRecord {
 public:
  std::vector<ViewState> views;
  // Set by EXPIRE / PERSIST on the key: the key's own expiry decides until
  // the next applied event (view TTLs are not enforced meanwhile).
  bool ttl_override = false;

  ViewState* FindView(uint64_t id);
  const ViewState* FindView(uint64_t id) const { return const_cast<EntityRecord*>(this)->FindView(id); }
  ViewState& GetView(uint64_t id, int64_t ttl_ms);
  // Key expiry: the latest of the views' expiries; 0 when a view never expires.
  int64_t ExpireAt() const;
  // Drops expired views and tiles that can no longer be inside any window
  // (tile start <= now - largest window). Returns true when nothing is left.
  bool Trim(int64_t now_ms);
  // Drops aggregation states whose signature `keep` rejects (registry reload).
  template <class F>
  void DropAggsIf(F&& drop) {
    for (auto& v : views) v.EraseAggsIf([&](const AggState& a) { return drop(v.view_id, a.spec.signature); });
    std::erase_if(views, [](const ViewState& v) { return v.aggs.empty(); });
  }
  bool empty() const { return views.empty(); }
  size_t MemoryUsage() const;
};

}  // namespace fkv
