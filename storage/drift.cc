// Feature drift arithmetic: see drift.h.
#include "storage/drift.h"

#include <algorithm>
#include <cmath>

#include "storage/snapshot.h"

namespace fkv::drift {

uint64_t Reservoir::Next() {  // xorshift64*
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return rng_ * 0x2545F4914F6CDD1Dull;
}

void Reservoir::Add(double v) {
  seen_++;
  if (values_.size() < cap_) {
    values_.push_back(v);
    return;
  }
  uint64_t j = Next() % seen_;
  if (j < cap_) values_[j] = v;
}

void BuildBaseline(std::span<const Reservoir* const> samples, FeatureBaseline* b) {
  std::vector<std::pair<double, double>> vw;  // value, weight
  b->n = 0;
  for (const Reservoir* r : samples) {
    b->n += r->seen();
    if (r->values().empty()) continue;
    double w = static_cast<double>(r->seen()) / static_cast<double>(r->values().size());
    for (double v : r->values()) vw.emplace_back(v, w);
  }
  b->edges.clear();
  b->fractions.assign(1, 0.0);
  if (vw.empty()) return;
  std::sort(vw.begin(), vw.end());
  double total = 0;
  for (const auto& p : vw) total += p.second;
  double cum = 0;
  size_t k = 1;
  for (size_t i = 0; i < vw.size() && k < kBins; i++) {
    cum += vw[i].second;
    // Every decile this value reaches ends at it (ties merged: one edge).
    bool reached = false;
    while (k < kBins && cum >= total * static_cast<double>(k) / kBins * (1 - 1e-12)) {
      reached = true;
      k++;
    }
    if (reached && (b->edges.empty() || b->edges.back() < vw[i].first)) b->edges.push_back(vw[i].first);
  }
  b->fractions.assign(b->edges.size() + 1, 0.0);
  for (const auto& [v, w] : vw) b->fractions[BinOf(b->edges, v)] += w;
  for (double& f : b->fractions) f /= total;
}

size_t BinOf(const std::vector<double>& edges, double v) {
  return static_cast<size_t>(std::lower_bound(edges.begin(), edges.end(), v) - edges.begin());
}

double Psi(const FeatureBaseline& base, std::span<const uint64_t> counts, uint64_t n) {
  if (n == 0 || base.n == 0 || base.fractions.size() != counts.size()) return std::nan("");
  double psi = 0;
  for (size_t i = 0; i < counts.size(); i++) {
    double c = std::max(kFloor, static_cast<double>(counts[i]) / static_cast<double>(n));
    double b = std::max(kFloor, base.fractions[i]);
    psi += (c - b) * std::log(c / b);
  }
  return psi;
}

std::string EncodeBaselines(const std::vector<ViewBaseline>& views) {
  std::string s;
  snap::Enc e(&s);
  e.Varint(views.size());
  for (const ViewBaseline& v : views) {
    e.Str(v.view);
    e.I64(v.created_ms);
    e.Varint(v.features.size());
    for (const FeatureBaseline& f : v.features) {
      e.Str(f.feature);
      e.U64(f.signature);
      e.I64(f.window_ms);
      e.Varint(f.n);
      e.Varint(f.edges.size());
      for (double x : f.edges) e.F64(x);
      for (double x : f.fractions) e.F64(x);
    }
  }
  return s;
}

bool DecodeBaselines(std::string_view payload, std::vector<ViewBaseline>* views, std::string* err) {
  snap::Dec d(payload);
  auto fail = [&](const std::string& why) {
    *err = d.error().empty() ? why + " at byte " + std::to_string(d.offset()) : d.error();
    return false;
  };
  views->clear();
  uint64_t nv = 0;
  if (!d.Count(&nv, 10)) return fail("");
  for (uint64_t i = 0; i < nv; i++) {
    ViewBaseline v;
    std::string_view name;
    uint64_t nf = 0;
    if (!d.Str(&name) || !d.I64(&v.created_ms) || !d.Count(&nf, 27)) return fail("");
    if (name.empty()) return fail("empty view name");
    v.view.assign(name);
    for (uint64_t j = 0; j < nf; j++) {
      FeatureBaseline f;
      std::string_view fname;
      uint64_t ne = 0;
      if (!d.Str(&fname) || !d.U64(&f.signature) || !d.I64(&f.window_ms) || !d.Varint(&f.n) || !d.Count(&ne, 16))
        return fail("");
      if (fname.empty()) return fail("empty feature name");
      if (ne >= kBins) return fail("more than " + std::to_string(kBins - 1) + " bin edges");
      f.feature.assign(fname);
      f.edges.resize(ne);
      f.fractions.resize(ne + 1);
      for (double& x : f.edges)
        if (!d.F64(&x)) return fail("");
      double sum = 0;
      for (double& x : f.fractions) {
        if (!d.F64(&x)) return fail("");
        if (!(x >= 0 && x <= 1)) return fail("bin share out of [0, 1]");
        sum += x;
      }
      for (size_t k = 0; k < f.edges.size(); k++)
        if (!std::isfinite(f.edges[k]) || (k > 0 && !(f.edges[k - 1] < f.edges[k])))
          return fail("bin edges not finite and ascending");
      if (f.n > 0 && std::fabs(sum - 1) > 1e-6) return fail("bin shares do not sum to 1");
      v.features.push_back(std::move(f));
    }
    views->push_back(std::move(v));
  }
  if (!d.done()) return fail("bytes left after the baselines");
  return true;
}

}  // namespace fkv::drift
