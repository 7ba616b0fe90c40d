// The read side of the feature model as shard-local operations that return
// values (FeatureValue), never RESP, and the one place that renders those
// values as RESP2/RESP3 (docs/architecture.md, "Feature operations"). Used
// by FGET, FMGET and FWINDOW (feature_family.cc), the unit tests and the
// benchmarks. Every function runs on the thread of the shard owning the
// entity; a FeatureValue's strings point into the entity and are valid
// until the shard changes it (render them before returning to the loop).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/registry.h"
#include "protocol/reply_writer.h"
#include "storage/entity.h"
#include "storage/shard_store.h"

namespace fkv {

// The outcome of a shard-local operation on the request path.
enum class OpStatus : uint8_t {
  kOk,
  kWrongType,  // the key holds a string or a hash
};

struct FeatureValue {
  enum class Kind : uint8_t { kNull, kInt, kDouble, kString, kList };
  Kind kind = Kind::kNull;
  int64_t i = 0;                       // kInt
  double d = 0;                        // kDouble
  std::string_view s;                  // kString
  std::vector<std::string_view> list;  // kList, newest first
  std::string text;                    // what s and list point into
};

// Tiles [lo, hi] covered by a window of length w at time t (docs/architecture.md,
// "Tiles and the window rule": tile starts s with t - w < s <= t).
void CoveredTiles(int64_t t, int64_t w, int64_t res, int64_t* lo, int64_t* hi);
// The entries of feature f's aggregation in entity e (storage/entity.h);
// empty when e is null, lacks the view or the aggregation, or the view is
// not live at `now`.
std::string_view SectionOf(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t now);
// The aggregate of tiles lo..hi (empty: 0 for count/sum/count_distinct, nil
// otherwise); q: which of a quantile aggregation's quantiles.
void WindowValue(const AggregationDef& a, std::string_view section, int64_t lo, int64_t hi, FeatureValue* out,
                 int q = -1);
// Feature f at time t; nil for every feature of an unknown entity (e null).
// as_of: an AT was given (last/last_n then show only values with ts <= t).
void FeatureValueAt(const Registry& reg, const FeatureRef& f, const EntityRecord* e, int64_t t, int64_t now, bool as_of,
                    FeatureValue* out);
// The current values of join j's features for the joined entity at key, on
// its shard's store (docs/architecture.md, "Joins"): out->found is false
// when there is no such entity (or the key holds another type).
void ReadJoined(ShardStore& st, const Registry& reg, const JoinDef& j, std::string_view key, uint64_t hash, int64_t now,
                JoinValues* out);
// The entity at key: *e is null when the key does not exist; kWrongType
// when it holds something else. Counts a keyspace hit or miss.
OpStatus EntityAt(ShardStore& st, std::string_view key, uint64_t hash, int64_t now, const EntityRecord** e);
// Reads `refs` of the entity at key into *out (one value each, in order).
OpStatus ReadFeatures(ShardStore& st, const Registry& reg, std::string_view key, uint64_t hash,
                      std::span<const FeatureRef> refs, int64_t t, int64_t now, bool as_of,
                      std::vector<FeatureValue>* out);
// The same for an entity already looked up (e null: every value nil). The
// windows of one aggregation are merged in one walk of its section.
void ReadEntityFeatures(const Registry& reg, const EntityRecord* e, std::span<const FeatureRef> refs, int64_t t,
                        int64_t now, bool as_of, std::vector<FeatureValue>* out);
// The one renderer: count/count_distinct integers, sum..stddev doubles
// (RESP3 `,`, RESP2 bulk), last a bulk string, last_n an array, nil.
void RenderFeatureValue(ReplyWriter& out, const FeatureValue& v);

}  // namespace fkv
