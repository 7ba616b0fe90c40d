// Registry: the feature definitions (sources, entities, views and their
// aggregations) loaded from the YAML file named by the `registry` directive,
// validated completely, with field paths resolved to event slots and
// `where` filters compiled. Immutable once loaded; shared between threads
// through std::shared_ptr<const Registry>; a reload builds a new one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ingest/filter.h"
#include "storage/aggregate.h"

namespace fkv {


enum class TsUnit : uint8_t { kSeconds, kMillis, kMicros, kArrival };

// A declared field of a typed source (`fields:`): an event whose field has
// another type is rejected whole (bad_type, or bad_enum for a string
// outside the list); an absent or null field is fine unless required
// (then missing_field). docs/operations.md, "Features and the registry".
enum class FieldType : uint8_t { kInt, kFloat, kString, kBool, kEnum };
struct FieldCheck {
  std::string field;
  int slot = -1;
  FieldType type = FieldType::kString;
  bool required = false;
  std::vector<std::string> values;  // kEnum: the allowed strings, sorted
};

struct SourceDef {
  std::string name, topic, format;
  std::string ts_field;
  TsUnit ts_unit = TsUnit::kArrival;
  int ts_slot = -1;
  std::vector<std::string> slots;  // slot -> field path, for the decoder
  std::vector<int> views;          // indexes of the views fed by this source
  std::vector<FieldCheck> checks;  // declared field types, in declaration order
  bool has_joins = false;          // a view of it joins (its events need lookups)
  // kind: table (docs/architecture.md, "Table sources"): a changelog, as a
  // compacted topic: the Kafka message key is the entity's id, each message
  // replaces its entity's `last` features (latest by offset, not by event
  // time) and a message without a value (a tombstone) deletes them.
  bool table = false;
};

struct EntityDef {
  std::string name, key_field;
};

struct AggregationDef : AggSpec {  // AggSpec: kind, signature, resolution, max window, n
  std::string name;  // as in the registry ("clicks")
  std::string field;  // aggregated field ("" for count)
  int field_slot = -1;
  std::vector<int64_t> windows_ms;         // as written
  std::vector<std::string> window_texts;   // "5m": feature names keep the text
  std::vector<double> quantiles;           // quantile: the q list, as written
  std::vector<std::string> quantile_texts; // "p95", "p99.9" -> "p999": in feature names
  std::string where_text;
  std::shared_ptr<const Filter> where;  // null: every event
  std::vector<int> joins_used;          // the view's joins its field or where reads (indexes)
};

// One servable feature name: aggregation `agg` of view `view`, window
// `window` (-1 for last / last_n), quantile `q` (quantile only, else -1).
// A session aggregation's features are its parts: q is the part
// (kSessionValue...), window the window of sessions_<W>.
struct FeatureRef {
  int view = -1, agg = -1, window = -1, q = -1;
};

// An enrichment join of a view (docs/architecture.md, "Joins"): for each
// event, the current values of features of another view, for the entity
// whose key is the event's field `key_field`; `where` and `field` name them
// `alias.feature`. Each joined feature the view uses has an event slot of
// its own, which the planner fills before it evaluates the view.
// The slot path of a joined feature starts with this byte: no event field
// has such a name, so the decoder leaves it missing for the planner.
inline constexpr char kJoinedSlot = '\x01';
struct JoinDef {
  std::string alias;      // "product"
  std::string view_name;  // the joined view, as written ("product_info", "product_info@2")
  int view = -1;          // its index in the registry
  std::string key_field;  // the event field holding the joined entity's key
  int key_slot = -1;
  struct Ref {
    std::string feature;  // as written after the alias ("price_last")
    FeatureRef f;
    int slot = -1;
  };
  std::vector<Ref> refs;
};

struct ViewDef {
  std::string name, entity, source;  // name: "user_activity", or "user_activity@2" for version 2
  std::string base;                  // the name without its version: "user_activity"
  int version = 1;
  uint64_t id = 0;  // hash of the name
  int64_t ttl_ms = 0;  // 0 = never
  // backfill: true: Kafka ingest holds the view (applies nothing to it)
  // until FREPLAY releases it, and the replay fills it with the events
  // before that moment (docs/architecture.md, "Replay").
  bool backfill = false;
  int entity_key_slot = -1;
  int source_index = -1;
  int entity_index = -1;
  std::vector<AggregationDef> aggs;
  std::vector<JoinDef> joins;
  uint16_t layout_id = 0;  // the interned storage layout of this definition (storage/entity.h)
};
enum SessionPart { kSessionValue, kSessionStart, kSessionDuration, kSessionEvents, kSessionCount, kSessionParts };
// <name><suffix>: visits_session, visits_session_start, ...,
// visits_sessions_24h (the window's text follows).
inline constexpr const char* kSessionSuffix[kSessionParts] = {"_session", "_session_start", "_session_duration_ms",
                                                              "_session_events", "_sessions_"};

struct RegistryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RegistryBuilder;

class Registry {
 public:
  // Parses and validates a registry file; throws RegistryError whose text
  // names the file, the line and the problem.
  static std::shared_ptr<const Registry> LoadFile(const std::string& path);
  static std::shared_ptr<const Registry> LoadText(const std::string& text, const std::string& name);
  static std::shared_ptr<const Registry> Empty();

  const std::vector<SourceDef>& sources() const { return sources_; }
  const std::vector<EntityDef>& entities() const { return entities_; }
  const std::vector<ViewDef>& views() const { return views_; }
  const std::string& path() const { return path_; }
  // Hash of the definitions (hex), FREGISTRY VERSION.
  const std::string& version() const { return version_; }
  int FindSource(std::string_view name) const;
  // A view by name: "user_activity@2" (or "user_activity@1") names a
  // version, "user_activity" the default version.
  int FindView(std::string_view name) const;
  // Versions (docs/commands.md, "Feature versions"): the version that
  // unqualified names read, and every version of a view, ascending.
  int DefaultVersion(std::string_view base) const;
  std::vector<int> VersionsOf(std::string_view base) const;
  bool IsDefault(const ViewDef& v) const { return DefaultVersion(v.base) == v.version; }
  // A copy whose defaults are `wanted` where the version exists (else the
  // lowest version), for FREGISTRY DEFAULT and for reloads that keep them.
  std::shared_ptr<const Registry> WithDefaults(const std::map<std::string, int>& wanted) const;
  const std::map<std::string, int>& defaults() const { return defaults_; }
  // The views of an entity type ("user"), in registry order.
  const std::vector<int>* ViewsOfEntity(std::string_view entity) const;

  // Resolves a feature name (bare "clicks_5m" or qualified
  // "user_activity.clicks_5m") for an entity type. On failure returns false
  // with a Redis error text in *err.
  bool ResolveFeature(std::string_view entity, std::string_view name, FeatureRef* out, std::string* err) const;
  // Resolves an aggregation name for FWINDOW ("clicks" or "view.clicks").
  bool ResolveAggregation(std::string_view entity, std::string_view name, FeatureRef* out, std::string* err) const;
  // Every feature of an entity type, in registry order, with its name (bare,
  // or qualified "view.name" where two views of the entity share it).
  // Only default versions: what FGET without names lists.
  std::vector<std::pair<std::string, FeatureRef>> FeaturesOf(std::string_view entity) const;
  std::vector<std::pair<std::string, FeatureRef>> BareFeaturesOf(std::string_view entity) const;
  // The features of one view (any version), bare names.
  std::vector<std::pair<std::string, FeatureRef>> FeaturesOfView(int view) const;
  std::string FeatureName(const FeatureRef& f) const;

 private:
  friend struct RegistryBuilder;
  bool ResolveFeatureSlow(std::string_view entity, std::string_view name, FeatureRef* out, std::string* err) const;
  void BuildNameIndex();
  // "<entity>\0<name>" -> the feature (bare and qualified names); ambiguous
  // bare names map to their error text.
  struct NameEntry {
    FeatureRef ref;
    std::string error;
  };
  std::unordered_map<std::string, NameEntry> names_;
  std::string path_, version_;
  std::vector<SourceDef> sources_;
  std::vector<EntityDef> entities_;
  std::vector<ViewDef> views_;
  std::unordered_map<std::string, std::vector<int>> views_by_entity_;
  std::map<std::string, int> defaults_;  // base -> the version unqualified names read
  // The views a qualifier picks ("v", "v@2"; empty: the entity's defaults).
  std::vector<int> ViewsNamed(std::string_view entity, std::string_view qualifier) const;
};

}  // namespace fkv
