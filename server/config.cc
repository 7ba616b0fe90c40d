// Config: see config.h. The directive table below is the one list of every
// directive, its default, whether CONFIG SET may change it, and how it is
// checked; conf/featurekv.conf documents each.
#include "server/config.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "ingest/duration.h"
#include "protocol/resp_parser.h"
#include "storage/glob.h"

namespace fkv {

namespace {

enum class Kind { kInt, kMemory, kDuration, kString, kEnum, kList, kSave, kKafkaProperty, kPercentiles, kUser };

std::string Lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

bool ParseInt(std::string_view s, int64_t* out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace

bool ParseMemory(std::string_view s, uint64_t* out) {
  std::string l = Lower(s);
  uint64_t mul = 1;
  auto ends = [&](std::string_view suf) { return l.size() > suf.size() && l.compare(l.size() - suf.size(), suf.size(), suf) == 0; };
  size_t cut = 0;
  if (ends("kb")) mul = 1024, cut = 2;
  else if (ends("mb")) mul = 1024ull * 1024, cut = 2;
  else if (ends("gb")) mul = 1024ull * 1024 * 1024, cut = 2;
  else if (ends("k")) mul = 1000, cut = 1;
  else if (ends("m")) mul = 1000ull * 1000, cut = 1;
  else if (ends("g")) mul = 1000ull * 1000 * 1000, cut = 1;
  else if (ends("b")) mul = 1, cut = 1;
  int64_t v = 0;
  if (!ParseInt(std::string_view(l).substr(0, l.size() - cut), &v) || v < 0) return false;
  if (mul > 1 && static_cast<uint64_t>(v) > UINT64_MAX / mul) return false;
  *out = static_cast<uint64_t>(v) * mul;
  return true;
}

struct Config::Directive {
  const char* name;
  Kind kind;
  const char* def;
  bool live;
  int64_t min = 0, max = INT64_MAX;
  const char* choices = nullptr;  // for kEnum: space separated
};


namespace {
const Config::Directive kDirectives[] = {
    {"port", Kind::kInt, "6380", false, 0, 65535},
    {"bind", Kind::kList, "127.0.0.1", false},
    {"requirepass", Kind::kString, "", true},
    {"user", Kind::kUser, "", false},
    {"aclfile", Kind::kString, "", false},
    {"acllog-max-len", Kind::kInt, "128", true, 0, INT32_MAX},
    {"protected-mode", Kind::kEnum, "yes", true, 0, 0, "yes no"},
    {"audit-log", Kind::kString, "", false},
    {"tls-port", Kind::kInt, "0", false, 0, 65535},
    {"tls-cert-file", Kind::kString, "", true},
    {"tls-key-file", Kind::kString, "", true},
    {"tls-ca-cert-file", Kind::kString, "", true},
    {"tls-auth-clients", Kind::kEnum, "yes", true, 0, 0, "yes no optional"},
    {"tls-protocols", Kind::kString, "", true},
    {"tls-ciphers", Kind::kString, "", true},
    {"tls-ciphersuites", Kind::kString, "", true},
    {"dir", Kind::kString, ".", true},
    {"dbfilename", Kind::kString, "featurekv.snap", true},
    {"snapshot-encryption-key-file", Kind::kString, "", true},
    {"snapshot-encryption-previous-key-file", Kind::kString, "", true},
    {"save", Kind::kSave, "3600 1 300 100 60 10000", true},
    {"shards", Kind::kInt, "0", false, 0, 256},
    {"maxclients", Kind::kInt, "10000", true, 1, 1000000},
    {"maxmemory", Kind::kMemory, "0", true},
    {"registry", Kind::kString, "", false},
    {"kafka-brokers", Kind::kString, "", false},
    {"kafka-group", Kind::kString, "", false},
    {"cluster-enabled", Kind::kEnum, "no", false, 0, 0, "yes no"},
    {"cluster-announce-ip", Kind::kString, "", false},
    {"cluster-announce-port", Kind::kInt, "0", false, 0, 65535},
    {"cluster-config-file", Kind::kString, "nodes.conf", false},
    {"cluster-node-timeout", Kind::kInt, "15000", false, 1000, 3600000},
    {"cluster-repartition-topic", Kind::kString, "", false},
    {"cluster-repartition-partitions", Kind::kInt, "16", false, 1, 16384},
    {"kafka-dlq-topic", Kind::kString, "", false},
    {"kafka-property", Kind::kKafkaProperty, "", false},
    {"kafka-fetch-wait-max-ms", Kind::kInt, "10", false, 0, 300000},
    {"kafka-ingest-nice", Kind::kInt, "10", false, 0, 19},
    {"kafka-replay-rate", Kind::kInt, "0", false, 0, 100000000},
    {"max-event-skew", Kind::kDuration, "5m", true},
    {"loglevel", Kind::kEnum, "notice", true, 0, 0, "debug verbose notice warning"},
    {"logfile", Kind::kString, "", false},
    {"proto-max-bulk-len", Kind::kMemory, "512mb", true, 1024},
    {"client-query-buffer-limit", Kind::kMemory, "1gb", true, 1024 * 1024},
    {"hz", Kind::kInt, "10", true, 1, 500},
    {"timeout", Kind::kInt, "0", true, 0, INT32_MAX},
    {"shutdown-timeout", Kind::kInt, "10", true, 1, 3600},
    {"databases", Kind::kInt, "1", false, 1, 1},
    {"appendonly", Kind::kEnum, "no", false, 0, 0, "yes no"},
    {"appendfsync", Kind::kEnum, "everysec", true, 0, 0, "always everysec no"},
    {"appenddirname", Kind::kString, "appendonlydir", false},
    {"appendfilename", Kind::kString, "appendonly.aof", false},
    {"aof-load-truncated", Kind::kEnum, "yes", true, 0, 0, "yes no"},
    {"hash-max-listpack-entries", Kind::kInt, "512", true, 0, INT32_MAX},
    {"hash-max-listpack-value", Kind::kInt, "64", true, 0, INT32_MAX},
    {"slowlog-log-slower-than", Kind::kInt, "10000", true, -1, INT64_MAX},
    {"slowlog-max-len", Kind::kInt, "128", true, 0, INT32_MAX},
    {"latency-tracking", Kind::kEnum, "yes", true, 0, 0, "yes no"},
    {"latency-tracking-info-percentiles", Kind::kPercentiles, "50 99 99.9", true},
    {"metrics-port", Kind::kInt, "0", false, 0, 65535},
    {"metrics-bind", Kind::kString, "", false},
    {"ready-max-lag", Kind::kInt, "1000", true, 0, INT64_MAX},
    {"drift-interval", Kind::kInt, "60", true, 0, INT32_MAX},
    {"key-load-delay", Kind::kInt, "0", true, 0, 1000000},
};

// Old names Redis 7 still accepts, as aliases of the directive they name.
const std::pair<const char*, const char*> kAliases[] = {
    {"hash-max-ziplist-entries", "hash-max-listpack-entries"},
    {"hash-max-ziplist-value", "hash-max-listpack-value"},
};
}  // namespace

const Config::Directive* Config::Find(std::string_view name) const {
  std::string l = Lower(name);
  for (const auto& [alias, target] : kAliases)
    if (l == alias) l = target;
  for (const auto& d : kDirectives)
    if (l == d.name) return &d;
  return nullptr;
}

Config::Config() {
  for (const auto& d : kDirectives)
    if (d.kind != Kind::kUser) values_[d.name] = d.def;  // `user` lines are not a CONFIG GET value
  // Canonicalize the defaults (e.g. "512mb" -> bytes) through the same checks.
  for (const auto& d : kDirectives) {
    if (d.kind == Kind::kKafkaProperty || d.kind == Kind::kUser || d.def[0] == '\0') continue;
    std::vector<std::string> words;
    std::istringstream in(d.def);
    for (std::string w; in >> w;) words.push_back(w);
    if (d.kind == Kind::kSave) words = {d.def};
    Set(d.name, words, false);
  }
  unsigned hc = std::thread::hardware_concurrency();
  shards_ = hc == 0 ? 1 : static_cast<int>(hc);
  values_["shards"] = std::to_string(shards_);
}

namespace {
// The whitespace-separated words of a directive's values ("3600 1" "300 10").
std::vector<std::string> Words(const std::vector<std::string>& values) {
  std::vector<std::string> words;
  for (const auto& v : values) {
    std::istringstream in(v);
    std::string w;
    while (in >> w) words.push_back(w);
  }
  return words;
}
}  // namespace

std::string Config::Set(std::string_view name, const std::vector<std::string>& values, bool live) {
  const Directive* d = Find(name);
  if (d == nullptr) return "unknown directive '" + std::string(name) + "'";
  if (live && !d->live) return "can't set immutable config";
  std::string joined;
  for (size_t i = 0; i < values.size(); i++) joined += (i ? " " : "") + values[i];
  auto need_one = [&]() -> std::string {
    return values.size() == 1 ? "" : "directive '" + std::string(d->name) + "' takes exactly one value";
  };
  std::string canonical = joined;
  switch (d->kind) {
    case Kind::kInt: {
      if (auto e = need_one(); !e.empty()) return e;
      int64_t v;
      if (!ParseInt(values[0], &v)) return "argument must be an integer: '" + values[0] + "'";
      if (v < d->min || v > d->max)
        return "argument must be between " + std::to_string(d->min) + " and " + std::to_string(d->max) + " inclusive";
      canonical = std::to_string(v);
      break;
    }
    case Kind::kMemory: {
      if (auto e = need_one(); !e.empty()) return e;
      uint64_t v;
      if (!ParseMemory(values[0], &v)) return "argument must be a memory value: '" + values[0] + "'";
      if (static_cast<int64_t>(v) < d->min) return "argument must be at least " + std::to_string(d->min);
      canonical = std::to_string(v);
      break;
    }
    case Kind::kDuration: {
      if (auto e = need_one(); !e.empty()) return e;
      int64_t v;
      if (!ParseDurationMs(values[0], &v)) return "argument must be a duration like 500ms, 30s, 5m, 1h, 7d: '" + values[0] + "'";
      break;
    }
    case Kind::kString:
      if (values.size() > 1) return "directive '" + std::string(d->name) + "' takes one value";
      canonical = values.empty() ? "" : values[0];
      break;
    case Kind::kEnum: {
      if (auto e = need_one(); !e.empty()) return e;
      std::string l = Lower(values[0]);
      std::istringstream in(d->choices);
      std::string c;
      bool ok = false;
      while (in >> c) ok |= c == l;
      if (!ok) return "argument must be one of: " + std::string(d->choices);
      canonical = l;
      break;
    }
    case Kind::kList:
      if (values.empty()) return "directive '" + std::string(d->name) + "' needs at least one value";
      break;
    case Kind::kSave: {
      // "" disables; else pairs of <seconds> <changes>
      std::vector<std::string> words = Words(values);
      if (words.size() % 2 != 0) return "save takes pairs of <seconds> <changes>";
      for (const auto& w : words) {
        int64_t v;
        if (!ParseInt(w, &v) || v < 0) return "save takes pairs of positive integers";
      }
      canonical.clear();
      for (size_t i = 0; i < words.size(); i++) canonical += (i ? " " : "") + words[i];
      break;
    }
    case Kind::kPercentiles: {
      // Any number of percentiles in [0, 100], as Redis's directive.
      std::vector<std::string> words = Words(values);
      canonical.clear();
      for (const auto& w : words) {
        char* end = nullptr;
        double q = std::strtod(w.c_str(), &end);
        if (end == w.c_str() || *end != '\0' || !(q >= 0 && q <= 100))
          return "latency-tracking-info-percentiles takes numbers between 0 and 100: '" + w + "'";
        canonical += (canonical.empty() ? "" : " ") + w;
      }
      break;
    }
    case Kind::kUser: {
      // Checked when the server starts (the ACL rules need the command table).
      if (values.empty()) return "user takes a name and rules";
      std::lock_guard lk(mu_);
      user_lines_.push_back("user " + joined);
      return "";
    }
    case Kind::kKafkaProperty: {
      if (values.size() != 2) return "kafka-property takes a name and a value";
      std::lock_guard lk(mu_);
      kafka_properties_.push_back(values[0] + " " + values[1]);
      canonical.clear();
      for (size_t i = 0; i < kafka_properties_.size(); i++) canonical += (i ? " " : "") + kafka_properties_[i];
      values_[d->name] = canonical;
      return "";
    }
  }
  std::lock_guard lk(mu_);
  values_[d->name] = canonical;
  if (d->kind == Kind::kList) bind_ = values;
  SyncAtomics(live);
  return "";
}

void Config::SyncAtomics(bool live) {
  auto num = [&](const char* n) { return std::stoull(values_[n]); };
  if (!live) {  // start-up values: other threads read them unlocked once the server runs
    port_ = static_cast<int>(num("port"));
    int64_t sh = static_cast<int64_t>(num("shards"));
    if (sh > 0) shards_ = static_cast<int>(sh);
  }
  hz_.store(static_cast<int>(num("hz")));
  maxclients_.store(num("maxclients"));
  maxmemory_.store(num("maxmemory"));
  proto_max_bulk_len_.store(num("proto-max-bulk-len"));
  qbuf_limit_.store(num("client-query-buffer-limit"));
  hash_max_listpack_entries_.store(num("hash-max-listpack-entries"));
  hash_max_listpack_value_.store(num("hash-max-listpack-value"));
  slowlog_slower_than_.store(std::stoll(values_["slowlog-log-slower-than"]));
  slowlog_max_len_.store(num("slowlog-max-len"));
  latency_tracking_.store(values_["latency-tracking"] == "yes");
  const std::string& fs = values_["appendfsync"];
  appendfsync_.store(fs == "always" ? Fsync::kAlways : fs == "no" ? Fsync::kNo : Fsync::kEverySec);
  {
    std::vector<double> qs;
    std::istringstream in(values_["latency-tracking-info-percentiles"]);
    double q;
    while (in >> q) qs.push_back(q);
    percentiles_ = std::move(qs);
  }
  int64_t skew = 0;
  if (ParseDurationMs(values_["max-event-skew"], &skew)) max_event_skew_ms_.store(skew);
}

std::vector<std::pair<std::string, std::string>> Config::Get(std::string_view pattern) const {
  std::lock_guard lk(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [k, v] : values_)
    if (GlobMatch(pattern, k, true)) out.emplace_back(k, v);
  for (const auto& [alias, target] : kAliases)
    if (GlobMatch(pattern, alias, true)) out.emplace_back(alias, values_.at(target));
  return out;
}

std::string Config::GetString(std::string_view name) const {
  std::lock_guard lk(mu_);
  auto it = values_.find(std::string(name));
  return it == values_.end() ? "" : it->second;
}

namespace {
bool IsPathDirective(std::string_view name) {
  for (std::string_view d : {"registry", "dir", "logfile", "aclfile", "audit-log", "tls-cert-file", "tls-key-file",
                             "tls-ca-cert-file", "snapshot-encryption-key-file", "snapshot-encryption-previous-key-file"})
    if (name.size() == d.size() && std::equal(d.begin(), d.end(), name.begin(),
                                              [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }))
      return true;
  return false;
}
}  // namespace

void Config::LoadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot open config file '" + path + "'");
  config_file_ = path;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    size_t a = line.find_first_not_of(" \t\r");
    if (a == std::string::npos || line[a] == '#') continue;
    std::vector<std::string> words;
    if (!SplitInlineArgs(line, &words))
      throw ConfigError(path + ":" + std::to_string(lineno) + ": unbalanced quotes");
    if (words.empty()) continue;
    std::vector<std::string> vals(words.begin() + 1, words.end());
    // A relative path in a conf file names a file beside it, wherever the
    // server was started from (docs/operations.md, "Running").
    if (vals.size() == 1 && !vals[0].empty() && vals[0][0] != '/' && IsPathDirective(words[0])) {
      std::filesystem::path dir = std::filesystem::path(path).parent_path();
      if (!dir.empty()) vals[0] = (dir / vals[0]).lexically_normal().string();
    }
    std::string err = Set(words[0], vals, false);
    if (!err.empty()) throw ConfigError(path + ":" + std::to_string(lineno) + ": " + err);
  }
  std::lock_guard lk(mu_);
  SyncAtomics(false);
}

void Config::ApplyArgs(const std::vector<std::string>& args) {
  size_t i = 0;
  while (i < args.size()) {
    if (args[i].rfind("--", 0) != 0) throw ConfigError("unexpected argument '" + args[i] + "' (directives are --name value)");
    std::string name = args[i].substr(2);
    std::vector<std::string> vals;
    i++;
    while (i < args.size() && args[i].rfind("--", 0) != 0) vals.push_back(args[i++]);
    std::string err = Set(name, vals, false);
    if (!err.empty()) throw ConfigError("--" + name + ": " + err);
  }
  std::lock_guard lk(mu_);
  SyncAtomics(false);
}

}  // namespace fkv
