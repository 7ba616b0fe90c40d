// EntityRecord: see entity.h.
#include "storage/entity.h"

#include <algorithm>

namespace fkv {

void DestroyEntity(EntityRecord* e) { delete e; }

bool AggState::empty() const {
  if (IsWindowed(spec.kind)) return spec.kind == AggKind::kCountDistinct ? (!distinct || distinct->empty()) : tile_len == 0;
  return !last || last->empty();
}

size_t AggState::MemoryUsage() const {
  return sizeof(*this) + (distinct ? distinct->MemoryUsage() : 0) + (last ? last->MemoryUsage() : 0);
}

AggState* ViewState::Find(uint64_t signature) {
  for (auto& a : aggs)
    if (a.spec.signature == signature) return &a;
  return nullptr;
}

AggState& ViewState::Get(const AggSpec& spec) {
  if (AggState* a = Find(spec.signature)) return *a;
  aggs.emplace_back();
  aggs.back().spec = spec;
  return aggs.back();
}

namespace {
size_t OffsetOf(const ViewState& v, const AggState& a) {
  size_t off = 0;
  for (const AggState* p = v.aggs.data(); p != &a; ++p) off += p->tile_len;
  return off;
}
}  // namespace

void ViewState::AddTile(AggState& a, int64_t tile, double x) {
  a.tile_len += static_cast<uint32_t>(tiles::Add(arena, OffsetOf(*this, a), a.tile_len, a.spec.kind, tile, x));
}

Accum ViewState::MergeTiles(const AggState& a, int64_t lo, int64_t hi) const {
  return tiles::Merge(arena.data() + OffsetOf(*this, a), a.tile_len, a.spec.kind, lo, hi);
}

void ViewState::DropTilesBefore(AggState& a, int64_t min_tile) {
  a.tile_len -= static_cast<uint32_t>(tiles::DropBefore(arena, OffsetOf(*this, a), a.tile_len, a.spec.kind, min_tile));
}

ViewState* EntityRecord::FindView(uint64_t id) {
  for (auto& v : views)
    if (v.view_id == id) return &v;
  return nullptr;
}

ViewState& EntityRecord::GetView(uint64_t id, int64_t ttl_ms) {
  ViewState* v = FindView(id);
  if (v == nullptr) {
    views.emplace_back();
    v = &views.back();
    v->view_id = id;
  }
  v->ttl_ms = ttl_ms;
  return *v;
}

int64_t EntityRecord::ExpireAt() const {
  int64_t at = 0;
  for (const auto& v : views) {
    int64_t e = v.ExpireAt();
    if (e == 0) return 0;
    at = std::max(at, e);
  }
  return at;
}

bool EntityRecord::Trim(int64_t now_ms) {
  if (!ttl_override) std::erase_if(views, [&](const ViewState& v) { return !v.Live(now_ms); });
  for (auto& v : views) {
    for (auto& a : v.aggs) {
      if (!IsWindowed(a.spec.kind)) continue;
      int64_t min_tile = FloorDiv(now_ms - a.spec.max_window_ms, a.spec.resolution_ms) + 1;
      if (a.spec.kind == AggKind::kCountDistinct) {
        if (a.distinct) a.distinct->DropBefore(min_tile);
      } else {
        v.DropTilesBefore(a, min_tile);
      }
    }
    v.EraseAggsIf([](const AggState& a) { return a.empty(); });
  }
  std::erase_if(views, [](const ViewState& v) { return v.aggs.empty(); });
  return views.empty();
}

size_t EntityRecord::MemoryUsage() const {
  size_t m = sizeof(*this) + views.capacity() * sizeof(ViewState);
  for (const auto& v : views) {
    m += v.aggs.capacity() * sizeof(AggState) + v.arena.capacity() * sizeof(double);
    for (const auto& a : v.aggs) m += a.MemoryUsage() - sizeof(AggState);
  }
  return m;
}

}  // namespace fkv
