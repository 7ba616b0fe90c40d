// Feature values: see feature_values.h.
#include "server/feature_values.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "storage/quantile.h"

namespace fkv {

void CoveredTiles(int64_t t, int64_t w, int64_t res, int64_t* lo, int64_t* hi) {
  *lo = FloorDiv(t - w, res) + 1;
  *hi = FloorDiv(t, res);
}

namespace {
// The view of one entity looked up once for several features of it.
struct ViewCache {
  int view = -1;
  bool usable = false;  // found and live
  EntityRecord::View vs;
};

std::string_view SectionIn(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t now, ViewCache& vc) {
  if (e == nullptr) return {};
  const ViewDef& v = reg.views()[static_cast<size_t>(f.view)];
  if (vc.view != f.view) {
    vc.view = f.view;
    vc.usable = e->FindView(v.id, &vc.vs) && (e->ttl_override() || vc.vs.Live(now));
  }
  if (!vc.usable) return {};
  int idx = f.agg;
  if (vc.vs.layout_id != v.layout_id) idx = MapAggregation(v.layout_id, static_cast<size_t>(f.agg), vc.vs.layout_id);
  return idx < 0 ? std::string_view() : e->Section(vc.vs, static_cast<size_t>(idx));
}

// A numeric window's value from its merged tiles.
void AccumValue(AggKind k, const Accum& acc, FeatureValue* out) {
  using K = FeatureValue::Kind;
  auto dbl = [&](bool present, double d) {
    out->kind = present ? K::kDouble : K::kNull;
    out->d = d;
  };
  switch (k) {
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

// last / last_n from their section.
void LastValues(const AggregationDef& a, std::string_view sec, int64_t t, bool as_of, FeatureValue* out) {
  using K = FeatureValue::Kind;
  out->kind = K::kNull;
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

// Quantile q of a merged window sketch (nil when the window is empty).
void QuantileValue(const AggregationDef& a, const dds::Sketch& sk, int q, FeatureValue* out) {
  out->kind = FeatureValue::Kind::kNull;
  if (q >= 0 && sk.Quantile(a.quantiles[static_cast<size_t>(q)], &out->d)) out->kind = FeatureValue::Kind::kDouble;
}

// A session aggregation's part at time t (docs/commands.md, "Session
// windows"): sessions that start after t, or closed for good by now, are
// not seen; the current session is the newest one still open at t (t - its
// last event < gap).
void SessionValue(const AggregationDef& a, std::string_view sec, const FeatureRef& f, int64_t t, int64_t now,
                  FeatureValue* out) {
  using K = FeatureValue::Kind;
  const AggKind op = SessionOp(a);
  const int64_t closed = now - SessionHorizon(a);
  out->kind = K::kNull;
  if (f.q == kSessionCount) {
    const int64_t w = a.windows_ms[static_cast<size_t>(f.window)];
    int64_t n = 0;
    ForEachSession(sec, [&](const SessionView& s) {
      // Newest first: the rest started earlier still, or are closed too.
      if (s.start <= t - w || s.end <= closed || s.op != op) return false;  // (another op: never, see ApplySession)
      n += s.start <= t;
      return true;
    });
    out->kind = K::kInt;
    out->i = n;
    return;
  }
  SessionView cur;
  bool open = false;
  ForEachSession(sec, [&](const SessionView& s) {
    if (s.op != op || s.end <= closed) return false;  // (another op: never, see ApplySession)
    if (s.start > t) return true;
    open = t - s.end < a.resolution_ms;
    cur = s;
    return false;
  });
  auto integer = [&](int64_t v) {
    out->kind = K::kInt;
    out->i = v;
  };
  switch (f.q) {
    case kSessionStart:
      if (open) integer(cur.start);
      return;
    case kSessionDuration:
      if (open) integer(cur.end - cur.start);
      return;
    case kSessionEvents: return integer(open ? static_cast<int64_t>(cur.events) : 0);
    default: break;
  }
  switch (op) {  // the operation over the current session
    case AggKind::kCount: return integer(open ? static_cast<int64_t>(cur.events) : 0);
    case AggKind::kCountDistinct: return integer(open ? static_cast<int64_t>(DistinctValueCount(cur.value)) : 0);
    case AggKind::kSum:
      out->kind = K::kDouble;
      out->d = open ? cur.x + 0.0 : 0.0;
      return;
    case AggKind::kMin:
    case AggKind::kMax:
    case AggKind::kMean:
      if (!open) return;
      out->kind = K::kDouble;
      out->d = op == AggKind::kMean ? cur.x / static_cast<double>(cur.events) : cur.x;
      return;
    case AggKind::kLast: {
      if (!open) return;
      char buf[21];
      out->text.assign(LastValueText(cur.value, buf));
      out->kind = K::kString;
      out->s = out->text;
      return;
    }
    default: return;
  }
}

const AggregationDef& AggOf(const Registry& reg, const FeatureRef& f) {
  return reg.views()[static_cast<size_t>(f.view)].aggs[static_cast<size_t>(f.agg)];
}
}  // namespace

std::string_view SectionOf(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t now) {
  ViewCache vc;
  return SectionIn(reg, f, e, now, vc);
}

void WindowValue(const AggregationDef& a, std::string_view section, int64_t lo, int64_t hi, FeatureValue* out, int q) {
  if (a.kind == AggKind::kQuantile) {
    thread_local dds::Sketch sk;
    MergeQuantileTiles(section, lo, hi, &sk);
    return QuantileValue(a, sk, q, out);
  }
  if (a.kind == AggKind::kCountDistinct) {
    out->kind = FeatureValue::Kind::kInt;
    out->i = static_cast<int64_t>(CountDistinct(section, lo, hi));
    return;
  }
  AccumValue(a.kind, MergeTiles(a.kind, section, lo, hi), out);
}

void FeatureValueAt(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t t, int64_t now, bool as_of,
                    FeatureValue* out) {
  out->kind = FeatureValue::Kind::kNull;
  if (e == nullptr) return;
  const AggregationDef& a = AggOf(reg, f);
  std::string_view sec = SectionOf(reg, f, e, now);
  if (a.kind == AggKind::kSession) return SessionValue(a, sec, f, t, now, out);
  if (!IsWindowed(a.kind)) return LastValues(a, sec, t, as_of, out);
  int64_t lo, hi;
  CoveredTiles(t, a.windows_ms[static_cast<size_t>(f.window)], a.resolution_ms, &lo, &hi);
  WindowValue(a, sec, lo, hi, out, f.q);
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
  ReadEntityFeatures(reg, e, refs, t, now, as_of, out);
  return OpStatus::kOk;
}

void ReadEntityFeatures(const Registry& reg, const EntityRecord* e, std::span<const FeatureRef> refs, int64_t t,
                        int64_t now, bool as_of, std::vector<FeatureValue>* out) {
  const size_t n = refs.size();
  out->resize(n);  // keeps the lists' capacity from the last call
  if (e == nullptr) {
    for (auto& v : *out) v.kind = FeatureValue::Kind::kNull;
    return;
  }
  // The windows of one aggregation are merged in one walk of its section,
  // and each view is looked up once.
  thread_local std::vector<uint8_t> done;
  done.assign(n, 0);
  ViewCache vc;
  constexpr size_t kMaxGroup = 16;
  for (size_t i = 0; i < n; i++) {
    if (done[i]) continue;
    const FeatureRef& f = refs[i];
    const AggregationDef& a = AggOf(reg, f);
    std::string_view sec = SectionIn(reg, f, e, now, vc);
    if (a.kind == AggKind::kSession) {
      SessionValue(a, sec, f, t, now, &(*out)[i]);
      continue;
    }
    if (!IsWindowed(a.kind)) {
      LastValues(a, sec, t, as_of, &(*out)[i]);
      continue;
    }
    if (a.kind == AggKind::kCountDistinct) {
      int64_t lo, hi;
      CoveredTiles(t, a.windows_ms[static_cast<size_t>(f.window)], a.resolution_ms, &lo, &hi);
      WindowValue(a, sec, lo, hi, &(*out)[i]);
      continue;
    }
    if (a.kind == AggKind::kQuantile) {  // one merge per window, whatever its quantiles asked
      int64_t lo, hi;
      CoveredTiles(t, a.windows_ms[static_cast<size_t>(f.window)], a.resolution_ms, &lo, &hi);
      thread_local dds::Sketch sk;
      MergeQuantileTiles(sec, lo, hi, &sk);
      for (size_t j = i; j < n; j++) {
        if (done[j] || refs[j].view != f.view || refs[j].agg != f.agg || refs[j].window != f.window) continue;
        QuantileValue(a, sk, refs[j].q, &(*out)[j]);
        done[j] = 1;
      }
      continue;
    }
    size_t group[kMaxGroup];
    int64_t lo[kMaxGroup], hi[kMaxGroup];
    size_t m = 0;
    for (size_t j = i; j < n && m < kMaxGroup; j++) {
      if (done[j] || refs[j].view != f.view || refs[j].agg != f.agg) continue;
      CoveredTiles(t, a.windows_ms[static_cast<size_t>(refs[j].window)], a.resolution_ms, &lo[m], &hi[m]);
      group[m++] = j;
      done[j] = 1;
    }
    Accum acc[kMaxGroup];
    MergeTilesMulti(a.kind, sec, lo, hi, m, acc);
    for (size_t g = 0; g < m; g++) AccumValue(a.kind, acc[g], &(*out)[group[g]]);
  }
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

void ReadJoined(ShardStore& st, const Registry& reg, const JoinDef& j, std::string_view key, uint64_t hash, int64_t now,
                JoinValues* out) {
  out->Clear();
  const EntityRecord* e;
  if (EntityAt(st, key, hash, now, &e) != OpStatus::kOk || e == nullptr) return;
  // Missing too: an entity without the joined view's state (another view
  // of it made it; a table's tombstone deleted the joined one).
  EntityRecord::View jv;
  if (!e->FindView(reg.views()[static_cast<size_t>(j.view)].id, &jv) || !(e->ttl_override() || jv.Live(now))) return;
  out->found = true;
  // Text values are copied first, then pointed at (the vector no longer grows).
  FeatureValue fv;
  std::vector<std::pair<size_t, size_t>> texts;  // (value, text index)
  for (const JoinDef::Ref& ref : j.refs) {
    FeatureValueAt(reg, ref.f, e, now, now, false, &fv);
    FieldValue v;
    switch (fv.kind) {
      case FeatureValue::Kind::kNull: v.kind = ValueKind::kNull; break;
      case FeatureValue::Kind::kInt:
        v.kind = ValueKind::kInt;
        v.i = fv.i;
        break;
      case FeatureValue::Kind::kDouble:
        v.kind = ValueKind::kDouble;
        v.d = fv.d;
        break;
      case FeatureValue::Kind::kString: {
        // A `last` value is text; one that reads as a number is the
        // number, as the event field it came from was (docs/architecture.md, "Joins").
        std::string t(fv.s);
        char* end = nullptr;
        errno = 0;
        const long long i = t.empty() ? 0 : std::strtoll(t.c_str(), &end, 10);
        if (!t.empty() && *end == '\0' && errno == 0 && !std::isspace(static_cast<unsigned char>(t[0]))) {
          v.kind = ValueKind::kInt;
          v.i = i;
          break;
        }
        const double d = t.empty() ? 0 : std::strtod(t.c_str(), &end);
        if (!t.empty() && *end == '\0' && std::isfinite(d) && !std::isspace(static_cast<unsigned char>(t[0])) &&
            t.find_first_of("xXnN") == std::string::npos) {  // not hex floats, inf or nan
          v.kind = ValueKind::kDouble;
          v.d = d;
          break;
        }
        v.kind = ValueKind::kString;
        texts.emplace_back(out->values.size(), out->text.size());
        out->text.push_back(std::move(t));
        break;
      }
      case FeatureValue::Kind::kList: v.kind = ValueKind::kOther; break;  // last_n: not a scalar
    }
    out->values.push_back(v);
  }
  for (auto [vi, ti] : texts) out->values[vi].s = out->text[ti];
}

}  // namespace fkv
