// Feature values: see feature_values.h.
#include "server/feature_values.h"

#include <algorithm>
#include <cmath>

namespace fkv {

void CoveredTiles(int64_t t, int64_t w, int64_t res, int64_t* lo, int64_t* hi) {
  *lo = FloorDiv(t - w, res) + 1;
  *hi = FloorDiv(t, res);
}

std::string_view SectionOf(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t now) {
  if (e == nullptr) return {};
  const ViewDef& v = reg.views()[static_cast<size_t>(f.view)];
  EntityRecord::View vs;
  if (!e->FindView(v.id, &vs) || (!e->ttl_override() && !vs.Live(now))) return {};
  int idx = f.agg;
  if (vs.layout_id != v.layout_id) idx = vs.layout->Find(v.aggs[static_cast<size_t>(f.agg)].signature);
  return idx < 0 ? std::string_view() : e->Section(vs, static_cast<size_t>(idx));
}

void WindowValue(const AggregationDef& a, std::string_view section, int64_t lo, int64_t hi, FeatureValue* out) {
  using K = FeatureValue::Kind;
  if (a.kind == AggKind::kCountDistinct) {
    out->kind = K::kInt;
    out->i = static_cast<int64_t>(CountDistinct(section, lo, hi));
    return;
  }
  Accum acc = MergeTiles(a.kind, section, lo, hi);
  auto dbl = [&](bool present, double d) {
    out->kind = present ? K::kDouble : K::kNull;
    out->d = d;
  };
  switch (a.kind) {
    case AggKind::kCount:
      out->kind = K::kInt;
      out->i = static_cast<int64_t>(acc.n);
      return;
    case AggKind::kSum: return dbl(true, acc.sum + 0.0);
    case AggKind::kMin: return dbl(acc.n > 0, acc.min);
    case AggKind::kMax: return dbl(acc.n > 0, acc.max);
    case AggKind::kMean: return dbl(acc.n > 0, acc.n > 0 ? acc.sum / acc.n : 0);
    case AggKind::kStddev: return dbl(acc.n > 0, acc.n > 0 ? std::sqrt(std::max(0.0, acc.m2 / acc.n)) : 0);
    default: out->kind = K::kNull; return;
  }
}

void FeatureValueAt(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t t, int64_t now, bool as_of,
                    FeatureValue* out) {
  using K = FeatureValue::Kind;
  out->kind = K::kNull;
  if (e == nullptr) return;
  const AggregationDef& a = reg.views()[static_cast<size_t>(f.view)].aggs[static_cast<size_t>(f.agg)];
  std::string_view sec = SectionOf(reg, f, e, now);
  if (IsWindowed(a.kind)) {
    int64_t lo, hi;
    CoveredTiles(t, a.windows_ms[static_cast<size_t>(f.window)], a.resolution_ms, &lo, &hi);
    return WindowValue(a, sec, lo, hi, out);
  }
  out->list.clear();
  out->text.clear();
  thread_local std::vector<uint32_t> ends;  // of each value in out->text
  ends.clear();
  ForEachLastItem(sec, [&](int64_t ts, std::string_view value) {
    if (as_of && ts > t) return;
    out->text.append(value);
    ends.push_back(static_cast<uint32_t>(out->text.size()));
  });
  for (size_t i = 0, start = 0; i < ends.size(); start = ends[i++])
    out->list.emplace_back(out->text.data() + start, ends[i] - start);
  if (a.kind == AggKind::kLast) {
    if (out->list.empty()) return;
    out->kind = K::kString;
    out->s = out->list[0];
    return;
  }
  out->kind = K::kList;
}

OpStatus EntityAt(ShardStore& st, std::string_view key, uint64_t hash, int64_t now, const EntityRecord** e) {
  *e = nullptr;
  Record* r = st.Lookup(key, hash, now);
  if (r == nullptr) return OpStatus::kOk;
  if (r->type != ValueType::kFeature) return OpStatus::kWrongType;
  *e = r->entity();
  return OpStatus::kOk;
}

OpStatus ReadFeatures(ShardStore& st, const Registry& reg, std::string_view key, uint64_t hash,
                      std::span<const FeatureRef> refs, int64_t t, int64_t now, bool as_of,
                      std::vector<FeatureValue>* out) {
  const EntityRecord* e;
  if (OpStatus s = EntityAt(st, key, hash, now, &e); s != OpStatus::kOk) return s;
  out->resize(refs.size());  // keeps the lists' capacity from the last call
  for (size_t i = 0; i < refs.size(); i++) FeatureValueAt(reg, refs[i], e, t, now, as_of, &(*out)[i]);
  return OpStatus::kOk;
}

void RenderFeatureValue(ReplyWriter& out, const FeatureValue& v) {
  using K = FeatureValue::Kind;
  switch (v.kind) {
    case K::kNull: return out.Null();
    case K::kInt: return out.Integer(v.i);
    case K::kDouble: return out.Double(v.d);
    case K::kString: return out.Bulk(v.s);
    case K::kList:
      out.Array(v.list.size());
      for (std::string_view s : v.list) out.Bulk(s);
      return;
  }
}

}  // namespace fkv
