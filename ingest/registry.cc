// Registry loading and validation (yaml-cpp); see registry.h. Every error
// names file:line and the problem; nothing partial is ever returned.
#include "ingest/registry.h"

#include "storage/entity.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ingest/duration.h"
#include "storage/entity.h"

namespace fkv {

namespace {

uint64_t Hash(std::string_view s) { return XXH3_64bits(s.data(), s.size()); }

class Loader {
 public:
  explicit Loader(std::string name) : name_(std::move(name)) {}

  [[noreturn]] void Fail(const YAML::Node& at, const std::string& what) {
    int line = at.IsDefined() ? at.Mark().line + 1 : 0;
    throw RegistryError(name_ + ":" + std::to_string(line > 0 ? line : 1) + ": " + what);
  }

  void OnlyKeys(const YAML::Node& map, std::initializer_list<const char*> allowed, const std::string& where) {
    if (!map.IsMap()) Fail(map, where + " must be a mapping");
    for (const auto& kv : map) {
      std::string k = kv.first.as<std::string>();
      if (std::find_if(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; }) == allowed.end()) {
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        Fail(kv.first, "unknown key '" + k + "' in " + where + " (expected: " + list + ")");
      }
    }
  }

  std::string Scalar(const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar()) Fail(n, what + " must be a string");
    return n.as<std::string>();
  }

  static constexpr int64_t kMaxDurationMs = int64_t{3650} * 86'400'000;
  int64_t Duration(const YAML::Node& n, const std::string& what) {
    std::string s = Scalar(n, what);
    int64_t ms;
    if (!ParseDurationMs(s, &ms) || ms <= 0) Fail(n, "bad duration '" + s + "' for " + what + " (use e.g. 500ms, 30s, 5m, 1h, 7d)");
    // Ten years at most: time arithmetic on windows, gaps and TTLs then
    // stays far from overflow.
    if (ms > kMaxDurationMs) Fail(n, "duration '" + s + "' for " + what + " is longer than 3650d");
    return ms;
  }

  std::shared_ptr<Registry> Load(const YAML::Node& root, Registry* reg);

 private:
  std::string name_;
};

}  // namespace

// Friend-free construction: the loader fills a Registry through this helper.
struct RegistryBuilder {
  static void Build(Loader& L, const YAML::Node& root, Registry* r, std::string* canonical);
};

namespace {
int SlotOf(SourceDef& src, const std::string& path) {
  for (size_t i = 0; i < src.slots.size(); i++)
    if (src.slots[i] == path) return static_cast<int>(i);
  src.slots.push_back(path);
  return static_cast<int>(src.slots.size() - 1);
}
// `fields: {name: type, ...}` of a source, where a type is int, float,
// string or bool, {enum: [values...]}, or {type: T, required: true}.
void ParseFieldChecks(Loader& L, const YAML::Node& fields, SourceDef* s) {
  const std::string where = "fields of source '" + s->name + "'";
  if (!fields.IsMap()) L.Fail(fields, where + " must be a mapping of field name to type");
  for (const auto& kv : fields) {
    FieldCheck c;
    c.field = kv.first.as<std::string>();
    if (c.field.empty()) L.Fail(kv.first, "empty field name in " + where);
    for (const FieldCheck& other : s->checks)
      if (other.field == c.field) L.Fail(kv.first, "field '" + c.field + "' declared twice in " + where);
    const YAML::Node& t = kv.second;
    std::string type;
    if (t.IsScalar()) {
      type = t.as<std::string>();
    } else if (t.IsMap()) {
      L.OnlyKeys(t, {"type", "enum", "required"}, "field '" + c.field + "' of source '" + s->name + "'");
      if (t["enum"] && t["type"] && L.Scalar(t["type"], "type") != "enum")
        L.Fail(t["type"], "field '" + c.field + "': enum and type " + L.Scalar(t["type"], "type") + " at once");
      if (t["enum"]) {
        type = "enum";
        const YAML::Node& vs = t["enum"];
        if (!vs.IsSequence() || vs.size() == 0) L.Fail(vs, "field '" + c.field + "': enum must be a non-empty list");
        for (const auto& v : vs) {
          // Enum values match JSON strings only: a plain YAML number or
          // boolean would never match, so it must be quoted.
          std::string text = L.Scalar(v, "enum value");
          if (v.Tag() != "!") {
            char* end = nullptr;
            (void)std::strtod(text.c_str(), &end);
            bool number = !text.empty() && end == text.c_str() + text.size();
            bool looks_other = number || text == "true" || text == "false" || text == "True" || text == "False" ||
                               text == "null" || text == "~";
            if (looks_other)
              L.Fail(v, "field '" + c.field + "': enum value " + text +
                            " is not a string (enums match JSON strings; quote it: \"" + text + "\")");
          }
          c.values.push_back(std::move(text));
        }
        std::sort(c.values.begin(), c.values.end());
        if (std::adjacent_find(c.values.begin(), c.values.end()) != c.values.end())
          L.Fail(vs, "field '" + c.field + "': an enum value is listed twice");
      } else if (t["type"]) {
        type = L.Scalar(t["type"], "type");
      } else {
        L.Fail(t, "field '" + c.field + "' needs a type or an enum");
      }
      if (t["required"]) {
        std::string r = L.Scalar(t["required"], "required");
        for (char& ch : r) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (r != "true" && r != "false" && r != "yes" && r != "no")
          L.Fail(t["required"], "required must be true or false");
        c.required = r == "true" || r == "yes";
      }
    } else {
      L.Fail(t, "field '" + c.field + "' needs a type (int, float, string, bool or {enum: [...]})");
    }
    if (type == "int") c.type = FieldType::kInt;
    else if (type == "float") c.type = FieldType::kFloat;
    else if (type == "string") c.type = FieldType::kString;
    else if (type == "bool") c.type = FieldType::kBool;
    else if (type == "enum" && !c.values.empty()) c.type = FieldType::kEnum;
    else L.Fail(t, "unknown type '" + type + "' for field '" + c.field + "' (int, float, string, bool or {enum: [...]})");
    if (c.field == s->ts_field && c.type != FieldType::kInt && c.type != FieldType::kFloat)
      L.Fail(t, "field '" + c.field + "' is the source's timestamp: only int or float can be declared for it");
    c.slot = SlotOf(*s, c.field);
    s->checks.push_back(std::move(c));
  }
}

}  // namespace

std::shared_ptr<const Registry> Registry::LoadText(const std::string& text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw RegistryError(name + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  auto reg = std::make_shared<Registry>();
  reg->path_ = name;
  Loader L(name);
  std::string canonical;
  try {
    RegistryBuilder::Build(L, root, reg.get(), &canonical);
  } catch (const YAML::Exception& e) {
    throw RegistryError(name + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  for (const ViewDef& v : reg->views_) {  // the lowest version is the default until FREGISTRY DEFAULT says
    auto it = reg->defaults_.find(v.base);
    if (it == reg->defaults_.end() || v.version < it->second) reg->defaults_[v.base] = v.version;
  }
  reg->BuildNameIndex();
  for (const auto& [entity, views] : reg->views_by_entity_)
    if (views.size() > 255) throw RegistryError(name + ": entity '" + entity + "' has more than 255 views");
  for (ViewDef& v : reg->views_) {  // the storage layout every entity of the view shares
    ViewLayout l;
    l.view_id = v.id;
    l.ttl_ms = v.ttl_ms;
    for (const AggregationDef& a : v.aggs) l.aggs.push_back(a);
    try {
      v.layout_id = InternLayout(l);
    } catch (const std::length_error& e) {
      throw RegistryError(name + ": " + e.what());
    }
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(Hash(canonical)));
  reg->version_ = buf;
  return reg;
}

std::shared_ptr<const Registry> Registry::LoadFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw RegistryError(path + ": cannot open registry file");
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return LoadText(text, path);
}

std::shared_ptr<const Registry> Registry::Empty() {
  static std::shared_ptr<const Registry> empty = LoadText("{}", "(none)");
  return empty;
}

void RegistryBuilder::Build(Loader& L, const YAML::Node& root, Registry* r, std::string* canonical) {
  if (root.IsNull()) return;
  struct JoinNode {
    size_t view, join;
    YAML::Node node;
  };
  std::vector<JoinNode> join_nodes;  // resolved once every view is known
  L.OnlyKeys(root, {"sources", "entities", "views"}, "the registry");
  // Sources.
  if (root["sources"]) {
    const YAML::Node& ss = root["sources"];
    if (!ss.IsMap()) L.Fail(ss, "'sources' must be a mapping of source name to definition");
    for (const auto& kv : ss) {
      SourceDef s;
      s.name = kv.first.as<std::string>();
      const YAML::Node& d = kv.second;
      L.OnlyKeys(d, {"topic", "format", "timestamp", "fields", "kind"}, "source '" + s.name + "'");
      if (d["kind"]) {
        std::string kind = L.Scalar(d["kind"], "kind");
        if (kind != "stream" && kind != "table")
          L.Fail(d["kind"], "source '" + s.name + "': unknown kind '" + kind + "' (stream or table)");
        s.table = kind == "table";
      }
      s.topic = d["topic"] ? L.Scalar(d["topic"], "topic") : s.name;
      s.format = d["format"] ? L.Scalar(d["format"], "format") : "json";
      if (s.format != "json") L.Fail(d["format"], "unknown format '" + s.format + "' (only json)");
      if (d["timestamp"]) {
        const YAML::Node& t = d["timestamp"];
        L.OnlyKeys(t, {"field", "unit"}, "timestamp of source '" + s.name + "'");
        if (!t["field"]) L.Fail(t, "timestamp of source '" + s.name + "' needs a field");
        s.ts_field = L.Scalar(t["field"], "timestamp field");
        std::string unit = t["unit"] ? L.Scalar(t["unit"], "unit") : "ms";
        if (unit == "s") s.ts_unit = TsUnit::kSeconds;
        else if (unit == "ms") s.ts_unit = TsUnit::kMillis;
        else if (unit == "us") s.ts_unit = TsUnit::kMicros;
        else L.Fail(t["unit"], "unknown timestamp unit '" + unit + "' (s, ms or us)");
        s.ts_slot = SlotOf(s, s.ts_field);
      }
      if (d["fields"]) ParseFieldChecks(L, d["fields"], &s);
      *canonical += "source " + s.name + " " + s.topic + " " + s.format + " " + s.ts_field + " " +
                    std::to_string(static_cast<int>(s.ts_unit)) + (s.table ? " table" : "") + "\n";
      for (const FieldCheck& c : s.checks) {
        *canonical += "field " + std::to_string(c.field.size()) + ":" + c.field + " " +
                      std::to_string(static_cast<int>(c.type)) + (c.required ? " required" : "");
        for (const std::string& v : c.values) *canonical += " " + std::to_string(v.size()) + ":" + v;
        *canonical += "\n";
      }
      r->sources_.push_back(std::move(s));
    }
  }
  // Entities.
  if (root["entities"]) {
    const YAML::Node& es = root["entities"];
    if (!es.IsMap()) L.Fail(es, "'entities' must be a mapping of entity name to definition");
    for (const auto& kv : es) {
      EntityDef e;
      e.name = kv.first.as<std::string>();
      if (e.name.empty() || e.name.find(':') != std::string::npos) L.Fail(kv.first, "bad entity name '" + e.name + "'");
      L.OnlyKeys(kv.second, {"key"}, "entity '" + e.name + "'");
      if (!kv.second["key"]) L.Fail(kv.second, "entity '" + e.name + "' needs a key field");
      e.key_field = L.Scalar(kv.second["key"], "key");
      *canonical += "entity " + e.name + " " + e.key_field + "\n";
      r->entities_.push_back(std::move(e));
    }
  }
  // Views.
  if (root["views"]) {
    const YAML::Node& vs = root["views"];
    if (!vs.IsMap()) L.Fail(vs, "'views' must be a mapping of view name to definition");
    for (const auto& kv : vs) {
      ViewDef v;
      v.name = kv.first.as<std::string>();
      const YAML::Node& d = kv.second;
      // "name" or "name@N", and/or `version: N` (they must agree).
      std::string key = v.name;
      size_t at = key.find('@');
      v.base = key.substr(0, at);
      if (v.base.empty() || v.base.find('.') != std::string::npos || v.base.find('@') != std::string::npos ||
          (at != std::string::npos && key.find('@', at + 1) != std::string::npos))
        L.Fail(kv.first, "bad view name '" + key + "'");
      auto parse_version = [&](const std::string& text, const YAML::Node& where) {
        char* end = nullptr;
        long n = std::strtol(text.c_str(), &end, 10);
        if (text.empty() || *end != '\0' || n < 1 || n > 1000 || !std::isdigit(static_cast<unsigned char>(text[0])))
          L.Fail(where, "view '" + key + "': a version is a whole number from 1 to 1000, not '" + text + "'");
        return static_cast<int>(n);
      };
      if (at != std::string::npos) v.version = parse_version(key.substr(at + 1), kv.first);
      if (d.IsMap() && d["version"]) {
        int n = parse_version(L.Scalar(d["version"], "version"), d["version"]);
        if (at != std::string::npos && n != v.version)
          L.Fail(d["version"], "view '" + key + "': version " + std::to_string(n) + " disagrees with its name");
        v.version = n;
      }
      v.name = v.version == 1 ? v.base : v.base + "@" + std::to_string(v.version);
      for (const ViewDef& o : r->views_)
        if (o.name == v.name) L.Fail(kv.first, "view '" + v.base + "' version " + std::to_string(v.version) + " defined twice");
      v.id = Hash(v.name);
      L.OnlyKeys(d, {"entity", "source", "ttl", "features", "version", "backfill", "join"}, "view '" + v.name + "'");
      if (!d["entity"]) L.Fail(d, "view '" + v.name + "' needs an entity");
      if (!d["source"]) L.Fail(d, "view '" + v.name + "' needs a source");
      v.entity = L.Scalar(d["entity"], "entity");
      v.source = L.Scalar(d["source"], "source");
      auto ent = std::find_if(r->entities_.begin(), r->entities_.end(), [&](const EntityDef& e) { return e.name == v.entity; });
      if (ent == r->entities_.end()) L.Fail(d["entity"], "view '" + v.name + "': undefined entity '" + v.entity + "'");
      for (const ViewDef& o : r->views_)
        if (o.base == v.base && o.entity != v.entity)
          L.Fail(d["entity"], "view '" + v.name + "': every version of '" + v.base + "' must have the entity of '" +
                                  o.name + "' (" + o.entity + ")");
      v.entity_index = static_cast<int>(ent - r->entities_.begin());
      v.source_index = r->FindSource(v.source);
      if (v.source_index < 0) L.Fail(d["source"], "view '" + v.name + "': undefined source '" + v.source + "'");
      SourceDef& src = r->sources_[static_cast<size_t>(v.source_index)];
      // A table's message key names one entity: every view of it has that entity.
      for (const ViewDef& o : r->views_)
        if (src.table && o.source == v.source && o.entity != v.entity)
          L.Fail(d["entity"], "view '" + v.name + "': table source '" + src.name + "' feeds view '" + o.name +
                                  "' of entity '" + o.entity + "': a table's message key names an entity of one type");
      v.ttl_ms = d["ttl"] ? L.Duration(d["ttl"], "ttl") : 0;
      if (d["backfill"]) {
        std::string b = L.Scalar(d["backfill"], "backfill");
        if (b != "true" && b != "false") L.Fail(d["backfill"], "view '" + v.name + "': backfill is true or false, not '" + b + "'");
        v.backfill = b == "true";
        // A replay applies a table's older messages after live ones: by
        // offset, the older rows would win.
        if (v.backfill && src.table)
          L.Fail(d["backfill"], "view '" + v.name + "': source '" + src.name +
                                    "' is a table: its views load from the topic's start, not by backfill");
      }
      v.entity_key_slot = SlotOf(src, ent->key_field);
      // Joins (docs/architecture.md, "Joins"): `join: {alias: {view: V, key: field}}`.
      if (d["join"]) {
        const YAML::Node& jn = d["join"];
        if (!jn.IsMap() || jn.size() == 0)
          L.Fail(jn, "view '" + v.name + "': 'join' is a mapping of alias to {view: V, key: field}");
        for (const auto& jkv : jn) {
          JoinDef j;
          j.alias = jkv.first.as<std::string>();
          const std::string where = "join '" + j.alias + "' of view '" + v.name + "'";
          if (j.alias.empty() || j.alias.find('.') != std::string::npos)
            L.Fail(jkv.first, where + ": an alias is a name without dots");
          if (!jkv.second.IsMap()) L.Fail(jkv.second, where + " is a mapping {view: V, key: field}");
          L.OnlyKeys(jkv.second, {"view", "key"}, where);
          if (!jkv.second["view"] || !jkv.second["key"]) L.Fail(jkv.second, where + " needs 'view' and 'key'");
          j.view_name = L.Scalar(jkv.second["view"], "view");
          j.key_field = L.Scalar(jkv.second["key"], "key");
          j.key_slot = SlotOf(src, j.key_field);
          join_nodes.push_back({r->views_.size(), v.joins.size(), jkv.second});
          v.joins.push_back(std::move(j));
        }
      }
      // A field or where path "alias.feature" names a joined feature: it
      // gets a slot of its own (a path no event has), filled by the planner.
      std::set<std::string> aliases_used;
      auto slot_of = [&](const std::string& path) {
        size_t dot = path.find('.');
        for (JoinDef& j : v.joins) {
          if (dot != j.alias.size() || path.compare(0, dot, j.alias) != 0) continue;
          aliases_used.insert(j.alias);
          std::string feature = path.substr(dot + 1);
          for (const JoinDef::Ref& ref : j.refs)
            if (ref.feature == feature) return ref.slot;
          JoinDef::Ref ref;
          ref.feature = feature;
          ref.slot = SlotOf(src, std::string(1, kJoinedSlot) + v.name + std::string(1, kJoinedSlot) + path);
          j.refs.push_back(ref);
          return ref.slot;
        }
        return SlotOf(src, path);
      };
      if (!d["features"] || !d["features"].IsMap() || d["features"].size() == 0)
        L.Fail(d, "view '" + v.name + "' needs a 'features' mapping");
      std::set<std::string> names;
      for (const auto& fkv : d["features"]) {
        aliases_used.clear();
        AggregationDef a;
        a.name = fkv.first.as<std::string>();
        const YAML::Node& fd = fkv.second;
        std::string where = "feature '" + a.name + "' of view '" + v.name + "'";
        L.OnlyKeys(fd, {"agg", "field", "where", "windows", "resolution", "n", "q", "session"}, where);
        if (!fd["agg"]) L.Fail(fd, where + " needs 'agg'");
        std::string agg = L.Scalar(fd["agg"], "agg");
        static const std::pair<const char*, AggKind> kinds[] = {
            {"count", AggKind::kCount}, {"sum", AggKind::kSum},   {"min", AggKind::kMin},
            {"max", AggKind::kMax},     {"mean", AggKind::kMean}, {"stddev", AggKind::kStddev},
            {"count_distinct", AggKind::kCountDistinct}, {"last", AggKind::kLast}, {"last_n", AggKind::kLastN},
            {"quantile", AggKind::kQuantile}};
        bool found = false;
        for (auto& [n, k] : kinds)
          if (agg == n) a.kind = k, found = true;
        if (!found) L.Fail(fd["agg"], where + ": unknown aggregation '" + agg + "' (count, sum, min, max, mean, stddev, count_distinct, quantile, last, last_n)");
        if (fd["field"]) a.field = L.Scalar(fd["field"], "field");
        if (a.kind != AggKind::kCount && a.field.empty()) L.Fail(fd, where + ": aggregation '" + agg + "' needs a field");
        if (!a.field.empty()) a.field_slot = slot_of(a.field);
        if (IsNumeric(a.kind)) {
          // A typed source says what the field holds: a number aggregation of
          // a string, boolean or enum field could only reject every event.
          for (const FieldCheck& fc : src.checks)
            if (fc.field == a.field && fc.type != FieldType::kInt && fc.type != FieldType::kFloat)
              L.Fail(fd["field"], where + ": '" + agg + "' needs a number, and source '" + src.name + "' declares '" +
                                      a.field + "' as " + (fc.type == FieldType::kEnum ? "an enum" : fc.type == FieldType::kBool ? "bool" : "string"));
        }
        if (a.kind == AggKind::kQuantile) {
          if (!fd["q"] || !fd["q"].IsSequence() || fd["q"].size() == 0)
            L.Fail(fd, where + ": quantile needs a non-empty 'q' list, e.g. q: [0.5, 0.95, 0.99]");
          for (const auto& qn : fd["q"]) {
            double q = -1;
            try {
              q = qn.as<double>();
            } catch (const YAML::Exception&) {
            }
            if (!(q >= 0 && q <= 1)) L.Fail(qn, where + ": each q must be a number from 0 to 1");
            // The percent with up to 6 decimals, trailing zeros and the
            // point dropped: 0.5 -> p50, 0.999 -> p999, 0.00001 -> p0001.
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.6f", q * 100);
            std::string num = buf;
            while (num.back() == '0') num.pop_back();
            if (num.back() == '.') num.pop_back();
            std::string text = "p";
            for (char c : num)
              if (c != '.') text += c;
            if (std::find(a.quantile_texts.begin(), a.quantile_texts.end(), text) != a.quantile_texts.end())
              L.Fail(qn, where + ": q " + qn.as<std::string>() + " gives the name '" + text + "' twice");
            a.quantiles.push_back(q);
            a.quantile_texts.push_back(text);
          }
        } else if (fd["q"]) {
          L.Fail(fd["q"], where + ": 'q' is only for quantile");
        }
        if (fd["where"]) {
          a.where_text = L.Scalar(fd["where"], "where");
          std::string err;
          auto f = Filter::Compile(a.where_text, slot_of, &err);
          if (!f) L.Fail(fd["where"], where + ": bad where \"" + a.where_text + "\": " + err);
          a.where = std::move(f);
        }
        if (fd["session"]) {
          // Session windows (docs/architecture.md, "Session windows"): the
          // operation runs over sessions of events closer than the gap.
          if (!IsSessionOp(a.kind))
            L.Fail(fd["session"], where + ": a session aggregation is count, sum, min, max, mean, count_distinct or last, not '" + agg + "'");
          for (const char* k : {"windows", "resolution", "n"})
            if (fd[k])
              L.Fail(fd[k], where + ": '" + k + "' does not go with 'session' (its windows go inside it: session: {gap: 30m, windows: [24h]})");
          const YAML::Node& sn = fd["session"];
          if (!sn.IsMap()) L.Fail(sn, where + ": 'session' is a mapping, e.g. session: {gap: 30m}");
          L.OnlyKeys(sn, {"gap", "windows"}, where + " (session)");
          if (!sn["gap"]) L.Fail(sn, where + ": session needs 'gap'");
          a.n = static_cast<int>(a.kind);
          a.kind = AggKind::kSession;
          a.resolution_ms = L.Duration(sn["gap"], "gap");
          if (a.resolution_ms <= 0) L.Fail(sn["gap"], where + ": the session gap must be more than 0");
          if (sn["windows"]) {
            if (!sn["windows"].IsSequence() || sn["windows"].size() == 0)
              L.Fail(sn["windows"], where + ": session 'windows' is a non-empty list, e.g. [1h, 24h]");
            for (const auto& w : sn["windows"]) {
              int64_t ms = L.Duration(w, "window");
              std::string text = w.as<std::string>();
              if (std::find(a.window_texts.begin(), a.window_texts.end(), text) != a.window_texts.end())
                L.Fail(w, where + ": window '" + text + "' listed twice");
              if (ms <= 0) L.Fail(w, where + ": a window must be more than 0");
              a.windows_ms.push_back(ms);
              a.window_texts.push_back(text);
              a.max_window_ms = std::max(a.max_window_ms, ms);
            }
          }
        } else if (IsWindowed(a.kind)) {
          if (!fd["windows"] || !fd["windows"].IsSequence() || fd["windows"].size() == 0)
            L.Fail(fd, where + ": aggregation '" + agg + "' needs a non-empty 'windows' list");
          int64_t smallest = INT64_MAX;
          for (const auto& w : fd["windows"]) {
            int64_t ms = L.Duration(w, "window");
            std::string text = w.as<std::string>();
            if (std::find(a.window_texts.begin(), a.window_texts.end(), text) != a.window_texts.end())
              L.Fail(w, where + ": window '" + text + "' listed twice");
            a.windows_ms.push_back(ms);
            a.window_texts.push_back(text);
            smallest = std::min(smallest, ms);
            a.max_window_ms = std::max(a.max_window_ms, ms);
          }
          if (fd["resolution"]) {
            a.resolution_ms = L.Duration(fd["resolution"], "resolution");
          } else {
            a.resolution_ms = std::max<int64_t>(1000, smallest / 60 / 1000 * 1000);
          }
          for (size_t i = 0; i < a.windows_ms.size(); i++)
            if (a.windows_ms[i] % a.resolution_ms != 0)
              L.Fail(fd["windows"][i], where + ": window '" + a.window_texts[i] + "' is not a multiple of the resolution (" +
                                           std::to_string(a.resolution_ms) + " ms)");
          if (a.max_window_ms / a.resolution_ms > 1'000'000)
            L.Fail(fd, where + ": more than 1,000,000 tiles per window; raise 'resolution'");
          if (fd["n"]) L.Fail(fd["n"], where + ": 'n' is only for last_n");
        } else {
          if (fd["windows"]) L.Fail(fd["windows"], where + ": '" + agg + "' takes no windows");
          if (fd["resolution"]) L.Fail(fd["resolution"], where + ": '" + agg + "' takes no resolution");
          if (a.kind == AggKind::kLastN) {
            if (!fd["n"]) L.Fail(fd, where + ": last_n needs 'n'");
            int n = 0;
            try {
              n = fd["n"].as<int>();
            } catch (const YAML::Exception&) {
              L.Fail(fd["n"], where + ": 'n' must be an integer");
            }
            if (n < 1 || n > 1000) L.Fail(fd["n"], where + ": 'n' must be between 1 and 1000");
            a.n = n;
          } else if (fd["n"]) {
            L.Fail(fd["n"], where + ": 'n' is only for last_n");
          }
        }
        if (src.table && a.kind != AggKind::kLast)
          L.Fail(fd["agg"], where + ": source '" + src.name + "' is a table: its views hold only 'last' features " +
                                "(a table keeps each entity's latest values), not '" + agg + "'");
        // Feature names must be unique inside the view.
        std::vector<std::string> fnames;
        if (a.kind == AggKind::kSession)
          for (int part = 0; part < kSessionParts; part++)
            if (part != kSessionCount) fnames.push_back(a.name + kSessionSuffix[part]);
            else
              for (auto& t : a.window_texts) fnames.push_back(a.name + kSessionSuffix[part] + t);
        else if (a.kind == AggKind::kQuantile)
          for (auto& q : a.quantile_texts)
            for (auto& t : a.window_texts) fnames.push_back(a.name + "_" + q + "_" + t);
        else if (IsWindowed(a.kind))
          for (auto& t : a.window_texts) fnames.push_back(a.name + "_" + t);
        else
          fnames.push_back(a.name);
        for (auto& fn : fnames)
          if (!names.insert(fn).second) L.Fail(fkv.first, where + ": feature name '" + fn + "' defined twice in the view");
        std::string sig = v.name + "|" + a.name + "|" + agg + "|" + a.field + "|" + a.where_text + "|" +
                          std::to_string(a.resolution_ms) + "|" + std::to_string(a.max_window_ms) + "|" +
                          std::to_string(a.n) + "|" + v.source + (a.kind == AggKind::kSession ? "|session" : "");
        // A joined field means what its join says: the join is part of it.
        for (size_t ji = 0; ji < v.joins.size(); ji++)
          if (const JoinDef& j = v.joins[ji]; aliases_used.count(j.alias)) {
            sig += "|join " + j.alias + "=" + j.view_name + "/" + j.key_field;
            a.joins_used.push_back(static_cast<int>(ji));
          }
        a.signature = Hash(sig);
        std::string wins;
        for (auto& t : a.window_texts) wins += t + ",";
        // The q list is not in the signature: a sketch answers any q, so
        // changing the list keeps the state.
        for (auto& t : a.quantile_texts) wins += t + ";";
        *canonical += "agg " + sig + " " + wins + "\n";
        v.aggs.push_back(std::move(a));
      }
      // FWINDOW names a quantile "<name>_p<q>": no other aggregation of the
      // view may be called that.
      for (const AggregationDef& a : v.aggs)
        for (const std::string& qt : a.quantile_texts)
          for (const AggregationDef& b : v.aggs)
            if (b.name == a.name + "_" + qt)
              L.Fail(d["features"][b.name], "view '" + v.name + "': aggregation '" + b.name +
                                                "' has the name FWINDOW gives quantile " + qt + " of '" + a.name + "'");
      *canonical += "view " + v.name + " " + v.entity + " " + v.source + " " + std::to_string(v.ttl_ms) + "\n";
      r->views_by_entity_[v.entity].push_back(static_cast<int>(r->views_.size()));
      src.views.push_back(static_cast<int>(r->views_.size()));
      r->views_.push_back(std::move(v));
    }
  }
  // Joins: the joined view by its exact name ("v" is version 1, "v@2"
  // version 2), the features used, and no cycle.
  for (auto& [vi, ji, node] : join_nodes) {
    ViewDef& v = r->views_[vi];
    JoinDef& j = v.joins[ji];
    const std::string where = "join '" + j.alias + "' of view '" + v.name + "'";
    for (size_t k = 0; k < r->views_.size(); k++)
      if (r->views_[k].name == j.view_name) j.view = static_cast<int>(k);
    if (j.view < 0) L.Fail(node["view"], where + ": undefined view '" + j.view_name + "'");
    if (j.refs.empty())
      L.Fail(node, where + ": no feature of the view uses it (name its features '" + j.alias + ".<feature>')");
    const auto features = r->FeaturesOfView(j.view);
    for (JoinDef::Ref& ref : j.refs) {
      auto it = std::find_if(features.begin(), features.end(), [&](const auto& f) { return f.first == ref.feature; });
      if (it == features.end()) L.Fail(node, where + ": view '" + j.view_name + "' has no feature '" + ref.feature + "'");
      ref.f = it->second;
    }
    *canonical += "join " + v.name + " " + j.alias + " " + j.view_name + " " + j.key_field + "\n";
    r->sources_[static_cast<size_t>(v.source_index)].has_joins = true;
  }
  // A cycle (a view that joins itself, directly or through others) is
  // refused: its enrichment would depend on its own updates.
  std::vector<int> state(r->views_.size(), 0);  // 0 new, 1 on the path, 2 done
  std::function<void(size_t)> visit = [&](size_t vi) {
    state[vi] = 1;
    for (size_t ji = 0; ji < r->views_[vi].joins.size(); ji++) {
      const auto to = static_cast<size_t>(r->views_[vi].joins[ji].view);
      if (state[to] == 1) {
        for (auto& n : join_nodes)
          if (n.view == vi && n.join == ji)
            L.Fail(n.node, "join '" + r->views_[vi].joins[ji].alias + "' of view '" + r->views_[vi].name +
                               "' closes a cycle of joins through view '" + r->views_[to].name + "'");
      }
      if (state[to] == 0) visit(to);
    }
    // The joined features are part of what an aggregation reads: their
    // definitions (final: the joined views are done) go into its signature,
    // so redefining one starts it empty.
    for (AggregationDef& a : r->views_[vi].aggs) {
      std::string sig = std::to_string(a.signature);
      for (int ji : a.joins_used)
        for (const JoinDef::Ref& ref : r->views_[vi].joins[static_cast<size_t>(ji)].refs)
          sig += "|" + std::to_string(r->views_[static_cast<size_t>(ref.f.view)].aggs[static_cast<size_t>(ref.f.agg)].signature);
      if (!a.joins_used.empty()) a.signature = Hash(sig);
    }
    state[vi] = 2;
  };
  for (size_t vi = 0; vi < r->views_.size(); vi++)
    if (state[vi] == 0) visit(vi);
}

int Registry::FindSource(std::string_view name) const {
  for (size_t i = 0; i < sources_.size(); i++)
    if (sources_[i].name == name) return static_cast<int>(i);
  return -1;
}

int Registry::FindView(std::string_view name) const {
  size_t at = name.find('@');
  std::string_view base = name.substr(0, at);
  int version = DefaultVersion(base);
  if (at != std::string_view::npos) {
    std::string_view n = name.substr(at + 1);
    version = 0;
    for (char c : n) version = c >= '0' && c <= '9' && version < 100000 ? version * 10 + (c - '0') : -1;
    if (n.empty() || version < 1) return -1;
  }
  for (size_t i = 0; i < views_.size(); i++)
    if (views_[i].base == base && views_[i].version == version) return static_cast<int>(i);
  return -1;
}

int Registry::DefaultVersion(std::string_view base) const {
  auto it = defaults_.find(std::string(base));
  return it == defaults_.end() ? 0 : it->second;
}

std::vector<int> Registry::VersionsOf(std::string_view base) const {
  std::vector<int> out;
  for (const ViewDef& v : views_)
    if (v.base == base) out.push_back(v.version);
  std::sort(out.begin(), out.end());
  return out;
}

std::shared_ptr<const Registry> Registry::WithDefaults(const std::map<std::string, int>& wanted) const {
  auto r = std::make_shared<Registry>(*this);
  for (auto& [base, version] : r->defaults_) {
    auto w = wanted.find(base);
    std::vector<int> vs = VersionsOf(base);
    version = w != wanted.end() && std::binary_search(vs.begin(), vs.end(), w->second) ? w->second : vs.front();
  }
  r->names_.clear();
  r->BuildNameIndex();
  return r;
}

std::vector<int> Registry::ViewsNamed(std::string_view entity, std::string_view qualifier) const {
  std::vector<int> out;
  const std::vector<int>* vs = ViewsOfEntity(entity);
  if (vs == nullptr) return out;
  int picked = qualifier.empty() ? -1 : FindView(qualifier);
  for (int vi : *vs) {
    const ViewDef& v = views_[static_cast<size_t>(vi)];
    if (qualifier.empty() ? IsDefault(v) : vi == picked) out.push_back(vi);
  }
  return out;
}

const std::vector<int>* Registry::ViewsOfEntity(std::string_view entity) const {
  auto it = views_by_entity_.find(std::string(entity));
  return it == views_by_entity_.end() ? nullptr : &it->second;
}

std::string Registry::FeatureName(const FeatureRef& f) const {
  const AggregationDef& a = views_[static_cast<size_t>(f.view)].aggs[static_cast<size_t>(f.agg)];
  if (a.kind == AggKind::kSession)
    return a.name + kSessionSuffix[f.q] + (f.q == kSessionCount ? a.window_texts[static_cast<size_t>(f.window)] : "");
  if (f.window < 0) return a.name;
  std::string q = f.q < 0 ? "" : a.quantile_texts[static_cast<size_t>(f.q)] + "_";
  return a.name + "_" + q + a.window_texts[static_cast<size_t>(f.window)];
}

std::vector<std::pair<std::string, FeatureRef>> Registry::FeaturesOf(std::string_view entity) const {
  std::vector<std::pair<std::string, FeatureRef>> out = BareFeaturesOf(entity);
  // A bare name that two views share would be ambiguous: qualify those
  // (by the view's name without its version: the default is what it reads).
  std::map<std::string, int> uses;
  for (auto& [name, f] : out) uses[name]++;
  for (auto& [name, f] : out)
    if (uses[name] > 1) name = views_[static_cast<size_t>(f.view)].base + "." + name;
  return out;
}

std::vector<std::pair<std::string, FeatureRef>> Registry::BareFeaturesOf(std::string_view entity) const {
  std::vector<std::pair<std::string, FeatureRef>> out;
  for (int vi : ViewsNamed(entity, {})) {
    auto fs = FeaturesOfView(vi);
    out.insert(out.end(), fs.begin(), fs.end());
  }
  return out;
}

std::vector<std::pair<std::string, FeatureRef>> Registry::FeaturesOfView(int vi) const {
  std::vector<std::pair<std::string, FeatureRef>> out;
  const ViewDef& v = views_[static_cast<size_t>(vi)];
  for (size_t ai = 0; ai < v.aggs.size(); ai++) {
    const AggregationDef& a = v.aggs[ai];
    if (a.kind == AggKind::kQuantile) {
      for (size_t q = 0; q < a.quantiles.size(); q++)
        for (size_t w = 0; w < a.windows_ms.size(); w++) {
          FeatureRef f{vi, static_cast<int>(ai), static_cast<int>(w), static_cast<int>(q)};
          out.emplace_back(FeatureName(f), f);
        }
    } else if (a.kind == AggKind::kSession) {
      for (int part = 0; part < kSessionParts; part++)
        if (part != kSessionCount) {
          FeatureRef f{vi, static_cast<int>(ai), -1, part};
          out.emplace_back(FeatureName(f), f);
        } else {
          for (size_t w = 0; w < a.windows_ms.size(); w++) {
            FeatureRef f{vi, static_cast<int>(ai), static_cast<int>(w), part};
            out.emplace_back(FeatureName(f), f);
          }
        }
    } else if (IsWindowed(a.kind)) {
      for (size_t w = 0; w < a.windows_ms.size(); w++) {
        FeatureRef f{vi, static_cast<int>(ai), static_cast<int>(w)};
        out.emplace_back(FeatureName(f), f);
      }
    } else {
      FeatureRef f{vi, static_cast<int>(ai), -1};
      out.emplace_back(FeatureName(f), f);
    }
  }
  return out;
}

namespace {
// Splits "view.name" into its parts; view empty when unqualified.
void SplitQualified(std::string_view name, std::string_view* view, std::string_view* rest) {
  size_t dot = name.find('.');
  if (dot == std::string_view::npos) {
    *view = {};
    *rest = name;
  } else {
    *view = name.substr(0, dot);
    *rest = name.substr(dot + 1);
  }
}
// The one match of a name lookup, or the Redis error for none / several
// (several: the qualified names to use instead).
bool PickOne(const std::vector<std::pair<std::string, FeatureRef>>& hits, const char* what, std::string_view entity,
             std::string_view name, std::string_view bare, FeatureRef* out, std::string* err) {
  if (hits.size() == 1) {
    *out = hits[0].second;
    return true;
  }
  if (hits.empty()) {
    *err = "ERR unknown " + std::string(what) + " '" + std::string(name) + "' for entity '" + std::string(entity) + "'";
    return false;
  }
  *err = "ERR ambiguous " + std::string(what) + " '" + std::string(name) + "': qualify it as";
  for (size_t i = 0; i < hits.size(); i++) *err += (i ? " or '" : " '") + hits[i].first + "." + std::string(bare) + "'";
  return false;
}
}  // namespace

void Registry::BuildNameIndex() {
  // Every name a feature answers to: "<base>@<N>.<f>" for every version,
  // and for default versions "<base>.<f>" and the bare "<f>", which two views of the
  // entity may share (then it is ambiguous). One pass: no name is looked
  // up through the slow path.
  std::unordered_map<std::string, std::vector<std::pair<std::string, FeatureRef>>> bare_hits;  // entity\0f
  for (size_t vi = 0; vi < views_.size(); vi++) {
    const ViewDef& v = views_[vi];
    const bool is_default = IsDefault(v);
    for (const auto& [bare, f] : FeaturesOfView(static_cast<int>(vi))) {
      std::vector<std::string> names{v.base + "@" + std::to_string(v.version) + "." + bare};
      if (is_default) names.push_back(v.base + "." + bare);  // (version 1's name is the base: only when default)
      for (const std::string& name : names) names_[v.entity + '\0' + name] = NameEntry{f, {}};
      if (is_default) bare_hits[v.entity + '\0' + bare].push_back({v.base, f});
    }
  }
  for (auto& [k, hits] : bare_hits) {
    size_t nul = k.find('\0');
    std::string_view entity(k.data(), nul), bare(k.data() + nul + 1, k.size() - nul - 1);
    NameEntry e;
    if (!PickOne(hits, "feature", entity, bare, bare, &e.ref, &e.error)) e.ref = FeatureRef{};
    names_[k] = std::move(e);
  }
}

bool Registry::ResolveFeature(std::string_view entity, std::string_view name, FeatureRef* out, std::string* err) const {
  thread_local std::string k;  // reused: no allocation per lookup
  k.clear();
  k.append(entity).push_back('\0');
  k.append(name);
  auto it = names_.find(k);
  if (it == names_.end()) return ResolveFeatureSlow(entity, name, out, err);  // unknown: the slow path words the error
  if (!it->second.error.empty()) {
    *err = it->second.error;
    return false;
  }
  *out = it->second.ref;
  return true;
}

bool Registry::ResolveFeatureSlow(std::string_view entity, std::string_view name, FeatureRef* out, std::string* err) const {
  std::string_view vname, fname;
  SplitQualified(name, &vname, &fname);
  std::vector<std::pair<std::string, FeatureRef>> hits;
  for (int vi : ViewsNamed(entity, vname))
    for (const auto& [bare, f] : FeaturesOfView(vi))
      if (bare == fname) hits.push_back({views_[static_cast<size_t>(vi)].base, f});
  return PickOne(hits, "feature", entity, name, fname, out, err);
}

bool Registry::ResolveAggregation(std::string_view entity, std::string_view name, FeatureRef* out, std::string* err) const {
  std::string_view vname, aname;
  SplitQualified(name, &vname, &aname);
  std::vector<std::pair<std::string, FeatureRef>> hits;
  const AggregationDef* several = nullptr;  // a quantile aggregation named bare, with several quantiles
  {
    for (int vi : ViewsNamed(entity, vname)) {
      const ViewDef& v = views_[static_cast<size_t>(vi)];
      for (size_t ai = 0; ai < v.aggs.size(); ai++) {
        const AggregationDef& a = v.aggs[ai];
        if (a.kind == AggKind::kSession && a.name == aname) {  // FWINDOW lists its sessions
          hits.push_back({v.base, FeatureRef{vi, static_cast<int>(ai), -1}});
          continue;
        }
        if (!IsWindowed(a.kind)) continue;
        // A quantile aggregation is named with one of its quantiles
        // ("latency_p95"), or bare when it has only one.
        if (a.kind == AggKind::kQuantile) {
          for (size_t q = 0; q < a.quantiles.size(); q++)
            if (aname == a.name + "_" + a.quantile_texts[q] || (aname == a.name && a.quantiles.size() == 1))
              hits.push_back({v.base, FeatureRef{vi, static_cast<int>(ai), -1, static_cast<int>(q)}});
          if (aname == a.name && a.quantiles.size() > 1) several = &a;
        } else if (a.name == aname) {
          hits.push_back({v.base, FeatureRef{vi, static_cast<int>(ai), -1}});
        }
      }
    }
  }
  if (hits.empty() && several != nullptr) {
    *err = "ERR '" + std::string(name) + "' has several quantiles: name one, e.g. '" + several->name + "_" +
           several->quantile_texts[0] + "'";
    return false;
  }
  return PickOne(hits, "windowed aggregation", entity, name, aname, out, err);
}

}  // namespace fkv
