// featurekv-export: point-in-time training sets (docs/operations.md,
// "Training sets: featurekv-export"), as Feast's get_historical_features.
// Reads a CSV of (entity key, timestamp[, label ...]) rows and writes each
// row with the value of every named feature AT its timestamp:
//   - from a running server, through pipelined `FMGET key ... FEATURES
//     f ... AT ts` (consecutive rows of one timestamp share a command);
//   - or straight from a snapshot file (--snapshot, with the registry),
//     through the same read code as FMGET (ReadEntityFeatures), rendered
//     as the server renders it, so both give the same bytes.
// Exit 0 when every row was written, 1 on a bad row, a server error or an
// unreadable snapshot (the output file is then not created), 2 on usage
// errors.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/registry.h"
#include "protocol/reply_writer.h"
#include "server/feature_values.h"
#include "storage/key_table.h"
#include "storage/snapshot.h"
#include "tools/resp_client.h"

namespace {
using namespace fkv;
using fkv::tools::Reply;
using ull = unsigned long long;

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "featurekv-export: %s\n"
               "usage: featurekv-export --entities FILE.csv --features f1,f2,... --out FILE.csv|-\n"
               "       [--entity TYPE] [--host 127.0.0.1] [--port 6380] [--user U] [--password P]\n"
               "       [--batch 256] [--pipeline 16]\n"
               "       [--snapshot FILE --registry FILE [--key-file KEY]...]\n",
               why.c_str());
  std::exit(2);
}

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "featurekv-export: %s\n", why.c_str());
  std::exit(1);
}

uint64_t Number(const char* s, const char* what, uint64_t lo, uint64_t hi) {
  std::string err;
  uint64_t v = fkv::tools::ParseNumber(s, what, lo, hi, &err);
  if (!err.empty()) Usage(err);
  return v;
}

// ---- CSV (RFC 4180: quoted fields may hold commas, quotes and newlines) ----

// Reads one record into *fields; false at the end of the input. *bad is
// set for an unterminated quote.
bool ReadRecord(std::istream& in, std::vector<std::string>* fields, uint64_t* line, bool* bad) {
  fields->clear();
  int c = in.get();
  if (c == EOF) return false;
  (*line)++;
  std::string f;
  bool quoted = false, was_quoted = false;
  size_t closed_at = 0;  // f's size where its closing quote was: a '\r' after it ends the line
  for (;; c = in.get()) {
    if (quoted) {
      if (c == EOF) {
        *bad = true;
        return true;
      }
      if (c == '"') {
        if (in.peek() == '"') {
          in.get();
          f += '"';
        } else {
          quoted = false;
          closed_at = f.size();
        }
      } else {
        if (c == '\n') (*line)++;
        f += static_cast<char>(c);
      }
      continue;
    }
    if (c == '"' && f.empty() && !was_quoted) {
      quoted = was_quoted = true;
      continue;
    }
    if (c == ',' || c == '\n' || c == EOF) {
      if (c != ',' && f.size() > closed_at && f.back() == '\r') f.pop_back();
      fields->push_back(std::move(f));
      f.clear();
      was_quoted = false;
      closed_at = 0;
      if (c != ',') return true;
      continue;
    }
    f += static_cast<char>(c);
  }
}

void PutField(std::string* out, std::string_view f) {
  if (f.find_first_of(",\"\r\n") == std::string_view::npos) {
    out->append(f);
    return;
  }
  *out += '"';
  for (char c : f) {
    if (c == '"') *out += '"';
    *out += c;
  }
  *out += '"';
}

// ---- timestamps: Unix milliseconds, or ISO 8601 ----

// Digits only, exactly n of them, at s[at..].
bool Digits(const std::string& s, size_t at, size_t n, int* out) {
  if (at + n > s.size()) return false;
  int v = 0;
  for (size_t i = at; i < at + n; i++) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// Unix milliseconds (an integer, possibly negative), or ISO 8601:
// YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z | +HH:MM | +HHMM | +HH] (no zone:
// UTC). A date that does not exist (Feb 30) is refused.
bool ParseTime(const std::string& s, int64_t* ms) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (!s.empty() && end == s.c_str() + s.size() && errno == 0 && !std::isspace(static_cast<unsigned char>(s[0]))) {
    *ms = v;
    return true;
  }
  int Y, M, D, h, m, sec;
  if (!Digits(s, 0, 4, &Y) || s.size() < 19 || s[4] != '-' || !Digits(s, 5, 2, &M) || s[7] != '-' ||
      !Digits(s, 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !Digits(s, 11, 2, &h) ||
      s[13] != ':' || !Digits(s, 14, 2, &m) || s[16] != ':' || !Digits(s, 17, 2, &sec))
    return false;
  if (h > 23 || m > 59 || sec > 59) return false;
  tm t{};
  t.tm_year = Y - 1900;
  t.tm_mon = M - 1;
  t.tm_mday = D;
  t.tm_hour = h;
  t.tm_min = m;
  t.tm_sec = sec;
  time_t secs = timegm(&t);
  tm back{};
  if (gmtime_r(&secs, &back) == nullptr || back.tm_year != Y - 1900 || back.tm_mon != M - 1 || back.tm_mday != D)
    return false;  // timegm normalised it: no such date
  int64_t out = static_cast<int64_t>(secs) * 1000;
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    int64_t frac = 0, scale = 100;
    size_t first = ++i;
    for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); i++, scale /= 10) frac += (s[i] - '0') * scale;
    if (i == first) return false;  // a point without digits
    out += frac;
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    i++;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh = 0, om = 0;
    size_t j = i + 1;
    if (!Digits(s, j, 2, &oh)) return false;
    j += 2;
    if (j < s.size() && s[j] == ':') j++;
    if (j < s.size() && !Digits(s, j, 2, &om)) return false;
    if (j < s.size()) j += 2;
    if (oh > 23 || om > 59) return false;
    int64_t off = (oh * 60 + om) * 60000;
    out += s[i] == '+' ? -off : off;
    i = j;
  }
  if (i != s.size()) return false;
  *ms = out;
  return true;
}

// ---- values: a reply element as a CSV field ----

std::string Json(std::string_view s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += c;
    }
  }
  return o + '"';
}

// nil -> empty; an integer or a double's text as it is; a list (last_n) as
// a JSON array of strings, newest first.
std::string FieldOf(const Reply& v) {
  if (v.null) return "";
  if (v.type == ':') return std::to_string(v.integer);
  if (v.type == '*') {
    std::string o = "[";
    for (size_t i = 0; i < v.elements.size(); i++) o += (i ? "," : "") + Json(v.elements[i].text);
    return o + "]";
  }
  return v.text;
}

struct Row {
  std::vector<std::string> fields;
  std::string key;
  int64_t ts = 0;
};

// A group of consecutive rows with one timestamp: one FMGET.
struct Group {
  size_t first = 0, count = 0;
};

// ---- the two sources of values ----

class Source {
 public:
  virtual ~Source() = default;
  // The FMGET reply (one array of values per key) of each group, in order.
  virtual std::string Read(const std::vector<Row>& rows, const std::vector<Group>& groups,
                           const std::vector<std::string>& features, std::vector<Reply>* replies) = 0;
};

class ServerSource : public Source {
 public:
  ServerSource(const std::string& host, const std::string& port, const std::string& user, const std::string& password) {
    std::string err;
    fd_ = tools::Connect(host, port, &err);
    if (fd_ < 0) Fail("cannot connect to " + host + ":" + port + ": " + err);
    if (password.empty()) return;
    std::string out;
    if (user.empty()) tools::AppendCommand(&out, {"AUTH", password});
    else tools::AppendCommand(&out, {"AUTH", user, password});
    std::vector<Reply> r;
    if (std::string e = tools::Exchange(fd_, out, 1, &r); !e.empty()) Fail(e);
    if (r[0].type == '-') Fail("AUTH failed: " + r[0].text);
  }
  ~ServerSource() override { close(fd_); }
  std::string Read(const std::vector<Row>& rows, const std::vector<Group>& groups,
                   const std::vector<std::string>& features, std::vector<Reply>* replies) override {
    std::string out;
    for (const Group& g : groups) {
      std::vector<std::string_view> args{"FMGET"};
      for (size_t i = g.first; i < g.first + g.count; i++) args.push_back(rows[i].key);
      args.push_back("FEATURES");
      for (const std::string& f : features) args.push_back(f);
      std::string at = std::to_string(rows[g.first].ts);
      args.push_back("AT");
      args.push_back(at);
      tools::AppendCommand(&out, args);
    }
    return tools::Exchange(fd_, out, groups.size(), replies);
  }

 private:
  int fd_ = -1;
};

// The state of a snapshot in one store, read as FMGET reads a shard: at
// the snapshot's cut (view TTLs are judged then), rendered RESP2.
class SnapshotSource : public Source {
 public:
  SnapshotSource(const std::string& path, const std::string& registry, const crypt::KeyRing& keys) {
    try {
      reg_ = Registry::LoadFile(registry);
    } catch (const std::exception& e) {
      Fail(e.what());
    }
    snap::Visitor v;
    v.header = [&](const snap::Header& h) {
      now_ = h.cut_ms;
      return std::string();
    };
    std::map<std::string, int> defaults;  // FREGISTRY DEFAULT's choices: unqualified names read them
    v.defaults = [&](const std::map<std::string, int>& d) {
      defaults = d;
      return std::string();
    };
    v.records = [&](uint16_t, std::string_view payload, uint32_t count, const snap::LayoutMap& layouts) -> std::string {
      snap::Dec d(payload);
      for (uint32_t i = 0; i < count; i++) {
        snap::DecodedRecord rec;
        std::string err;
        if (!snap::DecodeRecord(d, layouts, &rec, &err)) return "record " + std::to_string(i) + ": " + err;
        uint64_t h = HashKey(rec.key);
        if (store_.Find(rec.key, h, now_) != nullptr) return "duplicate key '" + std::string(rec.key.substr(0, 64)) + "'";
        snap::Adopt(store_, rec, h);
      }
      if (!d.done()) return "bytes left after " + std::to_string(count) + " records";
      return std::string();
    };
    if (std::string err = snap::ReadFile(path, v, nullptr, &keys); !err.empty()) Fail(err);
    if (!defaults.empty()) reg_ = reg_->WithDefaults(defaults);
  }
  std::string Read(const std::vector<Row>& rows, const std::vector<Group>& groups,
                   const std::vector<std::string>& features, std::vector<Reply>* replies) override {
    replies->clear();
    std::string bytes;
    ReplyWriter w(&bytes, 2);
    std::vector<FeatureValue> values;
    for (const Group& g : groups) {
      bytes.clear();
      w.Array(g.count);
      for (size_t i = g.first; i < g.first + g.count; i++) {
        std::string_view key = rows[i].key;
        // The names resolve once per entity type, not per row.
        auto [it, fresh] = refs_.try_emplace(std::string(key.substr(0, key.find(':'))));
        std::vector<FeatureRef>& refs = it->second;
        if (fresh) {
          refs.resize(features.size());
          for (size_t f = 0; f < features.size(); f++)
            if (std::string err; !reg_->ResolveFeature(it->first, features[f], &refs[f], &err)) {
              refs_.erase(it);
              return "row with key " + std::string(key) + ": " + err;
            }
        }
        const EntityRecord* e = nullptr;
        if (Record* r = store_.Find(key, HashKey(key), now_); r != nullptr) {
          if (r->type != ValueType::kFeature)  // as FMGET answers for this key
            return "row with key " + std::string(key) + ": WRONGTYPE Operation against a key holding the wrong kind of value";
          e = r->entity();
        }
        ReadEntityFeatures(*reg_, e, refs, rows[i].ts, now_, true, &values);
        w.Array(values.size());
        for (const FeatureValue& v : values) RenderFeatureValue(w, v);
      }
      size_t pos = 0;
      replies->emplace_back();
      if (tools::ParseReply(bytes, &pos, &replies->back()) != tools::ParseResult::kComplete)
        return "internal error: a reply that does not parse";
    }
    return "";
  }

 private:
  std::shared_ptr<const Registry> reg_;
  std::map<std::string, std::vector<FeatureRef>> refs_;  // entity type -> the features asked for
  ShardStore store_;
  int64_t now_ = 0;
};

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); i++) {
    if (i == s.size() || s[i] == ',') {
      if (i > start) out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", port = "6380", user, password, entities, out_path, entity_type, snapshot, registry;
  std::vector<std::string> features;
  uint64_t batch = 256, pipeline = 16;
  crypt::KeyRing keys;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") Usage("writes the features of each row of a CSV as of the row's timestamp");
    if (i + 1 >= argc) Usage(a.rfind("--", 0) == 0 ? "missing value for " + a : "unexpected argument " + a);
    const char* v = argv[++i];
    if (a == "--entities") entities = v;
    else if (a == "--features") features = SplitComma(v);
    else if (a == "--out") out_path = v;
    else if (a == "--entity") entity_type = v;
    else if (a == "--host") host = v;
    else if (a == "--port") port = std::to_string(Number(v, "port", 1, 65535));
    else if (a == "--user") user = v;
    else if (a == "--password") password = v;
    else if (a == "--batch") batch = Number(v, "batch", 1, 10'000);
    else if (a == "--pipeline") pipeline = Number(v, "pipeline", 1, 1024);
    else if (a == "--snapshot") snapshot = v;
    else if (a == "--registry") registry = v;
    else if (a == "--key-file") {
      std::shared_ptr<const crypt::Key> k;
      if (std::string err = crypt::ReadKeyFile(v, &k); !err.empty()) Usage(err);
      keys.current() ? keys.AddOld(k) : keys.SetCurrent(k);
    } else {
      Usage("unknown option " + a);
    }
  }
  if (entities.empty()) Usage("--entities is required");
  if (features.empty()) Usage("--features is required (comma-separated names)");
  if (out_path.empty()) Usage("--out is required (- for standard output)");
  if (!snapshot.empty() && registry.empty()) Usage("--snapshot needs --registry (the feature definitions)");
  if (snapshot.empty() && !registry.empty()) Usage("--registry is only for --snapshot");

  std::ifstream in(entities, std::ios::binary);
  if (!in) Usage("cannot open " + entities + ": " + std::strerror(errno));
  std::unique_ptr<Source> source;
  if (!snapshot.empty()) source = std::make_unique<SnapshotSource>(snapshot, registry, keys);
  else source = std::make_unique<ServerSource>(host, port, user, password);

  // Output: a temporary file renamed into place once every row is written.
  std::string tmp = out_path == "-" ? "" : out_path + ".tmp";
  FILE* out = out_path == "-" ? stdout : std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) Fail("cannot create " + tmp + ": " + std::strerror(errno));
  auto fail = [&](const std::string& why) {
    if (!tmp.empty()) {
      std::fclose(out);
      std::remove(tmp.c_str());
    }
    Fail(why);
  };

  uint64_t line = 0, rows_done = 0;
  bool bad = false;
  std::vector<std::string> header;
  if (in.peek() == 0xEF) {  // a UTF-8 byte order mark (spreadsheets write one)
    char bom[3];
    in.read(bom, 3);
    if (in.gcount() != 3 || std::string_view(bom, 3) != "\xEF\xBB\xBF") fail(entities + ": not UTF-8 text");
  }
  if (!ReadRecord(in, &header, &line, &bad) || bad) fail(entities + ": no header line");
  if (header.size() < 2) fail(entities + ":1: the header needs an entity key column and a timestamp column");
  std::string text;
  for (size_t i = 0; i < header.size(); i++) {
    if (i) text += ',';
    PutField(&text, header[i]);
  }
  for (const std::string& f : features) {
    text += ',';
    PutField(&text, f);
  }
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), out);

  auto start = std::chrono::steady_clock::now();
  const size_t chunk_rows = batch * pipeline;
  std::vector<Row> rows;
  std::vector<Group> groups;
  std::vector<Reply> replies;
  for (bool more = true; more;) {
    rows.clear();
    groups.clear();
    while (rows.size() < chunk_rows) {
      Row r;
      uint64_t at = line + 1;
      if (!ReadRecord(in, &r.fields, &line, &bad)) {
        more = false;
        break;
      }
      if (bad) fail(entities + ":" + std::to_string(at) + ": unterminated quoted field");
      if (r.fields.size() == 1 && r.fields[0].empty()) continue;  // a blank line
      if (r.fields.size() < 2) fail(entities + ":" + std::to_string(at) + ": needs an entity key and a timestamp");
      if (r.fields[0].empty()) fail(entities + ":" + std::to_string(at) + ": empty entity key");
      if (!ParseTime(r.fields[1], &r.ts))
        fail(entities + ":" + std::to_string(at) + ": bad timestamp '" + r.fields[1] +
             "' (Unix milliseconds or ISO 8601, e.g. 2026-12-01T10:00:00Z)");
      r.key = entity_type.empty() ? r.fields[0] : entity_type + ":" + r.fields[0];
      if (!groups.empty() && rows[groups.back().first].ts == r.ts && groups.back().count < batch)
        groups.back().count++;
      else
        groups.push_back(Group{rows.size(), 1});
      rows.push_back(std::move(r));
    }
    if (rows.empty()) break;
    if (std::string err = source->Read(rows, groups, features, &replies); !err.empty()) fail(err);
    for (size_t gi = 0; gi < groups.size(); gi++) {
      const Reply& rep = replies[gi];
      if (rep.type == '-') fail("row with key " + rows[groups[gi].first].key + ": " + rep.text);
      if (rep.type != '*' || rep.elements.size() != groups[gi].count) fail("unexpected reply to FMGET");
      for (size_t k = 0; k < groups[gi].count; k++) {
        const Row& r = rows[groups[gi].first + k];
        const Reply& vals = rep.elements[k];
        if (vals.type == '-') fail("row with key " + r.key + ": " + vals.text);
        if (vals.type != '*' || vals.elements.size() != features.size()) fail("unexpected reply to FMGET");
        text.clear();
        for (size_t i = 0; i < r.fields.size(); i++) {
          if (i) text += ',';
          PutField(&text, r.fields[i]);
        }
        for (const Reply& v : vals.elements) {
          text += ',';
          PutField(&text, FieldOf(v));
        }
        text += '\n';
        std::fwrite(text.data(), 1, text.size(), out);
      }
    }
    rows_done += rows.size();
  }
  if (std::fflush(out) != 0 || std::ferror(out)) fail("write error: " + std::string(std::strerror(errno)));
  if (!tmp.empty()) {
    if (fsync(fileno(out)) != 0 || std::fclose(out) != 0) fail("cannot write " + tmp + ": " + std::strerror(errno));
    if (std::rename(tmp.c_str(), out_path.c_str()) != 0)
      Fail("cannot rename " + tmp + " to " + out_path + ": " + std::strerror(errno));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "featurekv-export: done: %llu rows, %zu features, %.2f s (%.0f rows/s)\n",
               static_cast<ull>(rows_done), features.size(), secs, static_cast<double>(rows_done) / std::max(secs, 1e-9));
  return 0;
}
