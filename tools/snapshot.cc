// featurekv-snapshot FILE: checks a snapshot (docs/architecture.md, "File format (version 2)") and prints its
// summary. snap::ReadFile verifies the checksum of every frame and section
// and the FOOTER counts; every record is decoded as the server's load
// decodes it (snap::DecodeRecord), and keys must be unique. Prints the
// header, the registry's views, counts per shard (section) and record type,
// the entities of each view with their aggregation states and tiles, and
// the stored Kafka positions and FDRIFT baselines; --json prints the same as one JSON object
// (view ids as hex strings: 64-bit hashes do not fit a JSON double).
// Exit 0 when the file verifies, 1 with the reason (file, section, byte
// offset) on standard error when not, 2 on usage errors.
#include "storage/snapshot.h"

#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {
using namespace fkv;
using ull = unsigned long long;

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "featurekv-snapshot: %s\nusage: featurekv-snapshot [--json] [--key-file KEY]... FILE\n", why.c_str());
  std::exit(2);
}

struct ShardCounts {
  uint64_t records = 0, strings = 0, hashes = 0, features = 0, expiring = 0, bytes = 0;
};
struct ViewCounts {
  uint64_t id = 0;
  std::string name;    // "" when the VIEWS frame does not know the id
  size_t defined = 0;  // aggregations in the registry at the cut
  uint64_t entities = 0, aggs = 0, tiles = 0, sketches = 0, last_values = 0;
};

std::string Iso(int64_t ms) {
  time_t s = static_cast<time_t>(FloorDiv(ms, 1000));
  tm t{};
  gmtime_r(&s, &t);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(ms - FloorDiv(ms, 1000) * 1000));
  return buf;
}

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<ull>(v));
  return buf;
}

// A JSON string: quotes, backslashes and control bytes escaped; bytes that
// are not valid UTF-8 become U+FFFD.
std::string Json(std::string_view s) {
  std::string o = "\"";
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size() && !(n == 2 && c < 0xc2);
    for (size_t k = 1; ok && k < n; k++) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (!ok) {
      o += "\\ufffd";
      i++;
    } else if (c == '"' || c == '\\') {
      o += {'\\', static_cast<char>(c)};
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
      i++;
    } else {
      o.append(s.substr(i, n));
      i += n;
    }
  }
  return o + "\"";
}

struct Summary {
  uint32_t version = snap::kVersion;  // ReadFile refuses any other
  uint64_t size = 0, expired_now = 0;
  std::string key_id;  // "" = a plain file
  snap::Header header;
  snap::Footer footer;
  std::vector<ShardCounts> shards;
  std::vector<ViewCounts> views;  // the VIEWS frame's order, then unknown ids
  std::map<uint64_t, size_t> view_index;
  std::vector<snap::KafkaPosition> kafka;
  std::vector<drift::ViewBaseline> drift;  // FDRIFT baselines
  std::vector<XXH128_hash_t> keys;  // for the duplicate check

  ViewCounts& View(uint64_t id) {
    auto [it, added] = view_index.emplace(id, views.size());
    if (added) views.emplace_back().id = id;
    return views[it->second];
  }
  void Count(const EntityRecord& e) {
    e.ForEachView([&](const EntityRecord::View& v) {
      ViewCounts& c = View(v.layout->view_id);
      c.entities++;
      for (size_t i = 0; i < v.layout->aggs.size(); i++) {
        std::string_view sec = e.Section(v, i);
        if (sec.empty()) continue;
        c.aggs++;
        SectionCounts n = CountSection(v.layout->aggs[i].kind, sec);
        c.tiles += n.tiles;
        c.sketches += n.sketches;
        if (!IsWindowed(v.layout->aggs[i].kind)) c.last_values += n.values;
      }
    });
  }
  std::string Records(uint16_t section, std::string_view payload, uint32_t count, const snap::LayoutMap& layouts,
                      int64_t now) {
    ShardCounts& s = shards[section];
    s.bytes += payload.size() + 4;
    snap::Dec d(payload);
    for (uint32_t i = 0; i < count; i++) {
      snap::DecodedRecord rec;
      std::string err;
      if (!snap::DecodeRecord(d, layouts, &rec, &err)) return "record " + std::to_string(i) + ": " + err;
      s.records++;
      s.strings += rec.type == ValueType::kString;
      s.hashes += rec.type == ValueType::kHash;
      s.features += rec.type == ValueType::kFeature;
      s.expiring += rec.expire_at != 0;
      expired_now += rec.expire_at != 0 && rec.expire_at <= now;
      if (rec.entity) Count(*rec.entity);
      keys.push_back(XXH3_128bits(rec.key.data(), rec.key.size()));
    }
    return d.done() ? "" : "bytes left after " + std::to_string(count) + " records";
  }
};

void PrintText(const std::string& path, const Summary& s) {
  const snap::Header& h = s.header;
  ShardCounts t;
  for (const auto& c : s.shards)
    t.strings += c.strings, t.hashes += c.hashes, t.features += c.features, t.expiring += c.expiring;
  std::printf("%s: OK, every checksum verified\n", path.c_str());
  std::printf("  file:             %" PRIu64 " bytes, format version %u, %" PRIu64 " frames\n", s.size, s.version,
              s.footer.frames + 1);
  std::printf("  encryption:       %s\n", s.key_id.empty() ? "none" : ("AES-256-GCM, key " + s.key_id).c_str());
  std::printf("  server version:   %s\n", h.server_version.c_str());
  std::printf("  created:          %s (%" PRId64 " ms)\n", Iso(h.created_ms).c_str(), h.created_ms);
  std::printf("  cut:              %s (%" PRId64 " ms)\n", Iso(h.cut_ms).c_str(), h.cut_ms);
  std::printf("  registry version: %s\n", h.registry_version.c_str());
  std::printf("  sections:         %u (shards at save time)\n", h.sections);
  std::printf("  records:          %" PRIu64 ": %" PRIu64 " strings, %" PRIu64 " hashes, %" PRIu64 " features; %" PRIu64
              " with an expiry, %" PRIu64 " expired by now\n",
              s.footer.records, t.strings, t.hashes, t.features, t.expiring, s.expired_now);
  std::printf("\n  %-6s %10s %10s %10s %10s %10s %12s\n", "shard", "records", "strings", "hashes", "features",
              "expiring", "bytes");
  for (size_t i = 0; i < s.shards.size(); i++) {
    const ShardCounts& c = s.shards[i];
    std::printf("  %-6zu %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %12" PRIu64 "\n", i,
                c.records, c.strings, c.hashes, c.features, c.expiring, c.bytes);
  }
  std::printf("\n  %-24s %-16s %8s %10s %12s %10s %10s %12s\n", "view", "id", "defined", "entities", "aggregations",
              "tiles", "sketches", "last values");
  for (const ViewCounts& v : s.views)
    std::printf("  %-24s %-16s %8zu %10" PRIu64 " %12" PRIu64 " %10" PRIu64 " %10" PRIu64 " %12" PRIu64 "\n",
                v.name.empty() ? "(unknown)" : v.name.c_str(), Hex(v.id).c_str(), v.defined, v.entities, v.aggs,
                v.tiles, v.sketches, v.last_values);
  if (s.views.empty()) std::printf("  (no views)\n");
  std::printf("\n  kafka positions:  %s\n", s.kafka.empty() ? "none" : "(topic partition: next offset)");
  for (const auto& p : s.kafka) std::printf("    %s %d: %" PRId64 "\n", p.topic.c_str(), p.partition, p.offset);
  std::printf("\n  drift baselines:  %s\n", s.drift.empty() ? "none" : "(view: feature entities bins)");
  for (const auto& b : s.drift) {
    std::printf("    %s (taken %s):", b.view.c_str(), Iso(b.created_ms).c_str());
    for (const auto& f : b.features) std::printf(" %s %llu %zu", f.feature.c_str(), ull(f.n), f.fractions.size());
    std::printf("\n");
  }
}

// One JSON object, built field by field.
struct Obj {
  std::string s = "{";
  Obj& Raw(const char* k, const std::string& v) {
    s += (s.size() > 1 ? "," : "") + Json(k) + ":" + v;
    return *this;
  }
  Obj& Str(const char* k, std::string_view v) { return Raw(k, Json(v)); }
  template <class T>
  Obj& Num(const char* k, T v) {
    return Raw(k, std::to_string(v));
  }
  std::string End() const { return s + "}"; }
};

template <class T, class F>
std::string Array(const std::vector<T>& v, F&& one) {
  std::string o = "[";
  for (size_t i = 0; i < v.size(); i++) o += (i ? "," : "") + one(i, v[i]).End();
  return o + "]";
}

void PrintJson(const std::string& path, const Summary& s) {
  const snap::Header& h = s.header;
  Obj o;
  o.Str("file", path).Raw("ok", "true").Num("size", s.size).Num("format_version", s.version);
  o.Num("frames", s.footer.frames + 1).Raw("encryption_key", s.key_id.empty() ? "null" : Json(s.key_id));
  o.Str("server_version", h.server_version);
  o.Str("created", Iso(h.created_ms)).Num("created_ms", h.created_ms).Str("cut", Iso(h.cut_ms)).Num("cut_ms", h.cut_ms);
  o.Str("registry_version", h.registry_version).Num("sections", h.sections).Num("records", s.footer.records);
  o.Num("expired_now", s.expired_now);
  auto shard = [](size_t i, const ShardCounts& c) {
    Obj j;
    j.Num("shard", i).Num("records", c.records).Num("strings", c.strings).Num("hashes", c.hashes);
    return j.Num("features", c.features).Num("expiring", c.expiring).Num("bytes", c.bytes);
  };
  auto view = [](size_t, const ViewCounts& v) {
    Obj j;
    j.Str("id", Hex(v.id)).Raw("name", v.name.empty() ? "null" : Json(v.name)).Num("defined", v.defined);
    j.Num("entities", v.entities).Num("aggregations", v.aggs).Num("tiles", v.tiles).Num("sketches", v.sketches);
    return j.Num("last_values", v.last_values);
  };
  auto position = [](size_t, const snap::KafkaPosition& p) {
    return Obj().Str("topic", p.topic).Num("partition", p.partition).Num("offset", p.offset);
  };
  auto feature = [](size_t, const drift::FeatureBaseline& f) {
    return Obj().Str("feature", f.feature).Num("entities", f.n).Num("bins", f.fractions.size());
  };
  auto baseline = [&](size_t, const drift::ViewBaseline& b) {
    return Obj().Str("view", b.view).Num("created_ms", b.created_ms).Raw("features", Array(b.features, feature));
  };
  o.Raw("shards", Array(s.shards, shard)).Raw("views", Array(s.views, view)).Raw("kafka", Array(s.kafka, position));
  o.Raw("drift", Array(s.drift, baseline));
  std::printf("%s\n", o.End().c_str());
}
// The id of the key an encrypted file names, or "" for a plain one (the
// file was verified already).
std::string EncryptionKeyId(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char h[snap::kEncryptedHeaderSize] = {};
  in.read(h, sizeof h);
  uint32_t flags;
  uint64_t id;
  std::memcpy(&flags, h + 12, 4);
  std::memcpy(&id, h + snap::kFileHeaderSize, 8);
  return in && (flags & snap::kFlagEncrypted) ? crypt::KeyIdHex(id) : "";
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  bool json = false;
  crypt::KeyRing keys;  // the first --key-file is the current key, later ones older keys
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: featurekv-snapshot [--json] [--key-file KEY]... FILE\nchecks a featurekv snapshot and prints its "
          "summary; an encrypted one is read with the --key-file that wrote it\n");
      return 0;
    }
    if (a == "--json") {
      json = true;
      continue;
    }
    if (a == "--key-file") {
      if (i + 1 >= argc) Usage("--key-file needs a file");
      std::shared_ptr<const crypt::Key> k;
      if (std::string err = crypt::ReadKeyFile(argv[++i], &k); !err.empty()) {
        std::fprintf(stderr, "featurekv-snapshot: %s\n", err.c_str());
        return 2;
      }
      keys.current() ? keys.AddOld(k) : keys.SetCurrent(k);
      continue;
    }
    if (a.size() > 1 && a[0] == '-') Usage("unknown option " + a);
    if (!path.empty()) Usage("one FILE only");
    path = a;
  }
  if (path.empty()) Usage("FILE is required");

  Summary s;
  int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  snap::Visitor v;
  v.header = [&](const snap::Header& h) {
    s.header = h;
    s.shards.resize(h.sections);
    return std::string();
  };
  v.views = [&](const std::vector<snap::ViewInfo>& views) {
    for (const auto& vi : views) {
      ViewCounts& c = s.View(vi.id);
      c.name = vi.name;
      c.defined = vi.aggs.size();
    }
    return std::string();
  };
  v.kafka = [&](const std::vector<snap::KafkaPosition>& pos) {
    s.kafka = pos;
    return std::string();
  };
  v.drift = [&](const std::vector<drift::ViewBaseline>& b) {
    s.drift = b;
    return std::string();
  };
  v.records = [&](uint16_t section, std::string_view payload, uint32_t count, const snap::LayoutMap& layouts) {
    return s.Records(section, payload, count, layouts, now);
  };
  std::string err = snap::ReadFile(path, v, &s.footer, &keys);
  if (err.empty()) {
    std::sort(s.keys.begin(), s.keys.end(), [](auto& a, auto& b) { return XXH128_cmp(&a, &b) < 0; });
    auto dup = std::adjacent_find(s.keys.begin(), s.keys.end(), [](auto& a, auto& b) { return XXH128_isEqual(a, b); });
    if (dup != s.keys.end())
      err = "snapshot " + path + ": records: a key is stored twice (the server refuses the file)";
  }
  struct stat st {};
  if (err.empty() && ::stat(path.c_str(), &st) == 0) s.size = static_cast<uint64_t>(st.st_size);
  if (err.empty()) s.key_id = EncryptionKeyId(path);
  if (!err.empty()) {
    std::fprintf(stderr, "featurekv-snapshot: %s\n", err.c_str());
    return 1;
  }
  json ? PrintJson(path, s) : PrintText(path, s);
  return 0;
}
