// The value of one feature of one entity at a time T, written as a reply:
// the read side of the feature model, shared by FGET, FMGET and FWINDOW
// (feature_family.cc) and the benchmarks. Runs on the shard owning the entity.
#pragma once

#include <cstdint>

#include "ingest/registry.h"
#include "protocol/reply_writer.h"
#include "storage/entity.h"

namespace fkv {

// Tiles [lo, hi] covered by a window of length w at time t (spec §8:
// tile starts s with t - w < s <= t).
void CoveredTiles(int64_t t, int64_t w, int64_t res, int64_t* lo, int64_t* hi);
// The aggregate of tiles lo..hi (empty: 0 for count/sum/count_distinct, nil otherwise).
void WriteWindowValue(ReplyWriter& out, const AggregationDef& a, const ViewState* vs, const AggState* st, int64_t lo,
                      int64_t hi);
// The state of feature f in entity e, if live at `now`, and its view (*view).
const AggState* StateOf(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t now, const ViewState** view);
// Feature f at time t; nil for every feature of an unknown entity (e null).
// as_of: an AT was given (last/last_n then show only values with ts <= t).
void WriteFeatureValue(ReplyWriter& out, const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t t,
                       int64_t now, bool as_of);

}  // namespace fkv
