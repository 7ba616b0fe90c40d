// Key-space commands: EXISTS DEL UNLINK TOUCH TYPE EXPIRE PEXPIRE EXPIREAT
// PEXPIREAT TTL PTTL EXPIRETIME PEXPIRETIME PERSIST SCAN KEYS RANDOMKEY
// RENAME RENAMENX COPY OBJECT MEMORY. Entity keys (type `feature`) behave
// here like any other key; RENAME and COPY keep an entity key within its
// entity type (docs/commands.md).
#include <charconv>
#include <climits>
#include <map>
#include <random>

#include "server/command.h"
#include "server/server.h"
#include "storage/glob.h"
#include "storage/key_table.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {

const char* TypeName(ValueType t) {
  switch (t) {
    case ValueType::kString: return "string";
    case ValueType::kHash: return "hash";
    case ValueType::kFeature: return "feature";
  }
  return "none";
}

// DEL / UNLINK / EXISTS / TOUCH: fan out to the shards of the keys and add
// up the per-shard counts.
void CountKeys(CommandContext& c, bool erase) {
  auto plan = c.PlanArgs(1, 1);
  auto total = std::make_shared<std::atomic<int64_t>>(0);
  const ArgList& args = c.args;
  int64_t now = c.now_ms;
  c.FanOut(
      plan,
      [plan, total, &args, now, erase](ShardStore& st, std::span<const uint32_t> keys) {
        int64_t n = 0;
        for (uint32_t i : keys) {
          if (erase) n += st.Erase(args[1 + i], plan->hash(i), now) ? 1 : 0;
          else n += st.Find(args[1 + i], plan->hash(i), now) != nullptr ? 1 : 0;
        }
        if (erase && n > 0) aof::LogKeysPart(st, now, "DEL", args, 1, 1, keys);
        total->fetch_add(n, std::memory_order_relaxed);
      },
      [total](ReplyWriter& out) { out.Integer(total->load(std::memory_order_relaxed)); });
}
void Del(CommandContext& c) { CountKeys(c, true); }
void Exists(CommandContext& c) { CountKeys(c, false); }

void Type(CommandContext& c) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  c.out.Simple(r == nullptr ? "none" : TypeName(r->type));
}

// After EXPIRE/PERSIST on an entity key, the key's own expiry rules until
// the next event (docs/architecture.md, "Entity keys and TTL": they work on entity keys as on plain keys).
void MarkTtlOverride(CommandContext& c) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r != nullptr && r->type == ValueType::kFeature) r->entity()->set_ttl_override(true);
}

// EXPIRE family. unit_ms: 1000 for seconds; absolute: *AT variants.
void ExpireGeneric(CommandContext& c, int64_t unit_ms, bool absolute) {
  int64_t v;
  if (!ParseI64(c.args[2], &v)) return c.out.Error(kErrNotInt);
  bool nx = false, xx = false, gt = false, lt = false;
  for (size_t i = 3; i < c.args.size(); i++) {
    std::string_view a = c.args[i];
    if (EqualsNoCase(a, "NX")) nx = true;
    else if (EqualsNoCase(a, "XX")) xx = true;
    else if (EqualsNoCase(a, "GT")) gt = true;
    else if (EqualsNoCase(a, "LT")) lt = true;
    else return c.out.Error("ERR Unsupported option " + std::string(a));
  }
  if (nx && (xx || gt || lt)) return c.out.Error("ERR NX and XX, GT or LT options at the same time are not compatible");
  if (gt && lt) return c.out.Error("ERR GT and LT options at the same time are not compatible");
  std::string bad = std::string("ERR invalid expire time in '") + c.spec->name + "' command";
  if (v > LLONG_MAX / unit_ms || v < LLONG_MIN / unit_ms) return c.out.Error(bad);
  int64_t when = v * unit_ms;
  if (!absolute) {
    if ((when > 0 && c.now_ms > LLONG_MAX - when)) return c.out.Error(bad);
    when += c.now_ms;
  }
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Integer(0);
  int64_t cur = r->expire_at();  // 0 = none (infinite)
  if (nx && cur != 0) return c.out.Integer(0);
  if (xx && cur == 0) return c.out.Integer(0);
  if (gt && (cur == 0 || when <= cur)) return c.out.Integer(0);
  if (lt && cur != 0 && when >= cur) return c.out.Integer(0);
  if (when <= 0) when = 1;  // in the past: deleted by SetExpire (0 would mean "persist")
  c.store->SetExpire(c.args[1], c.key_hash, when, c.now_ms);
  MarkTtlOverride(c);
  c.out.Integer(1);
}
void Expire(CommandContext& c) { ExpireGeneric(c, 1000, false); }
void PExpire(CommandContext& c) { ExpireGeneric(c, 1, false); }
void ExpireAt(CommandContext& c) { ExpireGeneric(c, 1000, true); }
void PExpireAt(CommandContext& c) { ExpireGeneric(c, 1, true); }

void TtlGeneric(CommandContext& c, bool ms, bool absolute) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Integer(-2);
  int64_t at = r->expire_at();
  if (at == 0) return c.out.Integer(-1);
  if (absolute) return c.out.Integer(ms ? at : (at + 500) / 1000);
  int64_t left = at - c.now_ms;
  if (left < 0) left = 0;
  c.out.Integer(ms ? left : (left + 500) / 1000);
}
void Ttl(CommandContext& c) { TtlGeneric(c, false, false); }
void PTtl(CommandContext& c) { TtlGeneric(c, true, false); }
void ExpireTime(CommandContext& c) { TtlGeneric(c, false, true); }
void PExpireTime(CommandContext& c) { TtlGeneric(c, true, true); }

void Persist(CommandContext& c) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Integer(0);
  if (!r->has_expiry()) {
    // An entity whose views have TTLs is still "volatile" through them.
    if (r->type != ValueType::kFeature || r->entity()->ttl_override() || r->entity()->ExpireAt() == 0) return c.out.Integer(0);
  }
  c.store->SetExpire(c.args[1], c.key_hash, 0, c.now_ms);
  MarkTtlOverride(c);
  c.out.Integer(1);
}

// SCAN cursor: low 8 bits = shard, the rest = that shard's table cursor.
void Scan(CommandContext& c) {
  uint64_t cursor = 0;
  std::string_view cs = c.args[1];
  auto r = std::from_chars(cs.data(), cs.data() + cs.size(), cursor);
  if (cs.empty() || r.ec != std::errc() || r.ptr != cs.data() + cs.size()) return c.out.Error("ERR invalid cursor");
  std::shared_ptr<const GlobPattern> match;  // null: every key
  int64_t count = 10;
  std::string type;
  for (size_t i = 2; i < c.args.size(); i++) {
    bool more = i + 1 < c.args.size();
    if (EqualsNoCase(c.args[i], "MATCH") && more) {
      std::string_view p = c.args[++i];
      match = p == "*" ? nullptr : std::make_shared<const GlobPattern>(p);  // "*" alone takes every key, as Redis
    } else if (EqualsNoCase(c.args[i], "COUNT") && more) {
      if (!ParseI64(c.args[++i], &count)) return c.out.Error(kErrNotInt);
      if (count < 1) return c.out.Error(kErrSyntax);
    } else if (EqualsNoCase(c.args[i], "TYPE") && more) {
      type.assign(c.args[++i]);
      for (char& ch : type) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  int nshards = c.server->shards().size();
  int shard = static_cast<int>(cursor & 0xff);
  uint64_t sc = cursor >> 8;
  if (shard >= nshards) {  // not a cursor we handed out: end the scan
    c.out.Array(2);
    c.out.Bulk("0");
    c.out.Array(0);
    return;
  }
  struct Result {
    std::vector<std::string> keys;
    uint64_t next = 0;
  };
  auto res = std::make_shared<Result>();
  int64_t now = c.now_ms;
  c.FanOut(
      {shard},
      [res, sc, count, match, type, now](int, ShardStore& st) {
        uint64_t cur = sc;
        int64_t budget = count * 10;  // buckets, as Redis's maxiterations
        do {
          cur = st.Scan(cur, now, [&](Record* rec) {
            if (match && !match->Match(rec->key())) return;
            if (!type.empty() && type != TypeName(rec->type)) return;
            res->keys.emplace_back(rec->key());
          });
        } while (cur != 0 && static_cast<int64_t>(res->keys.size()) < count && --budget > 0);
        res->next = cur;
      },
      [res, shard, nshards](ReplyWriter& out) {
        uint64_t next;
        if (res->next != 0) next = (res->next << 8) | static_cast<uint64_t>(shard);
        else next = shard + 1 < nshards ? static_cast<uint64_t>(shard + 1) : 0;
        out.Array(2);
        out.Bulk(std::to_string(next));
        out.Array(res->keys.size());
        for (const auto& k : res->keys) out.Bulk(k);
      });
}

void Keys(CommandContext& c) {
  int n = c.server->shards().size();
  auto per = std::make_shared<std::vector<std::vector<std::string>>>(static_cast<size_t>(n));
  auto pattern = std::make_shared<const GlobPattern>(c.args[1]);
  bool all = c.args[1] == "*";  // every key, the empty one too, as Redis
  int64_t now = c.now_ms;
  c.FanOut(
      c.server->shards().All(),
      [per, pattern, all, now](int shard, ShardStore& st) {
        auto& out = (*per)[static_cast<size_t>(shard)];
        uint64_t cur = 0;
        do {
          cur = st.Scan(cur, now, [&](Record* r) {
            if (all || pattern->Match(r->key())) out.emplace_back(r->key());
          });
        } while (cur != 0);
      },
      [per](ReplyWriter& out) {
        size_t total = 0;
        for (auto& v : *per) total += v.size();
        out.Array(total);
        for (auto& v : *per)
          for (auto& k : v) out.Bulk(k);
      });
}

uint64_t Random64() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

// RANDOMKEY: every shard proposes one of its keys at random and says how many
// it holds; the reply is the proposal of a shard picked with probability
// proportional to its key count, so every key is equally likely (up to the
// bucket bias Redis has too).
void RandomKey(CommandContext& c) {
  struct Proposal {
    bool found = false;
    std::string key;
    size_t keys = 0;
  };
  int n = c.server->shards().size();
  auto per = std::make_shared<std::vector<Proposal>>(static_cast<size_t>(n));
  int64_t now = c.now_ms;
  c.FanOut(
      c.server->shards().All(),
      [per, now](int shard, ShardStore& st) {
        Proposal& p = (*per)[static_cast<size_t>(shard)];
        if (Record* r = st.RandomLive(Random64, now)) {
          p.found = true;
          p.key.assign(r->key());
        }
        p.keys = st.size();
      },
      [per](ReplyWriter& out) {
        size_t total = 0;
        for (const Proposal& p : *per) total += p.found ? p.keys : 0;
        if (total == 0) return out.Null();
        uint64_t pick = Random64() % total;
        for (const Proposal& p : *per) {
          if (!p.found) continue;
          if (pick < p.keys) return out.Bulk(p.key);
          pick -= p.keys;
        }
        out.Null();  // not reached
      });
}

// RENAME and COPY move feature state only between keys of one entity type:
// under another type its views would not be found.
std::string CheckEntityTarget(const Record& r, std::string_view from, std::string_view to) {
  if (r.type != ValueType::kFeature || EntityTypeOf(to) == EntityTypeOf(from)) return "";
  return "ERR '" + std::string(from) + "' holds feature state of entity '" + std::string(EntityTypeOf(from)) +
         "': it can only be renamed or copied to a key '" + std::string(EntityTypeOf(from)) + ":<id>'";
}

using Reply = std::function<void(std::function<void(ReplyWriter&)>)>;
void ReplyError(const Reply& reply, std::string e) {
  reply([e = std::move(e)](ReplyWriter& out) { out.Error(e); });
}
void ReplyInt(const Reply& reply, int64_t n) {
  reply([n](ReplyWriter& out) { out.Integer(n); });
}

// The source and destination of RENAME / COPY: names (kept alive for the
// steps that run after the connection's buffer moved on), hashes, shards.
struct KeyPair {
  std::shared_ptr<const std::string> src, dst;
  uint64_t hs, hd;
  int ss, sd;
  static KeyPair Of(CommandContext& c) {
    auto src = std::make_shared<const std::string>(c.args[1]);
    auto dst = std::make_shared<const std::string>(c.args[2]);
    uint64_t hs = HashKey(*src), hd = HashKey(*dst);
    return {src, dst, hs, hd, c.server->shards().ShardOf(hs), c.server->shards().ShardOf(hd)};
  }
};

// The source key of RENAME, gone from its shard: a DEL in its append-only file.
void LogDel(ShardStore& st, int64_t now, std::string_view key) {
  std::string_view args[] = {"DEL", key};
  aof::LogWrite(st, aof::Kind::kCommand, now, args);
}

// RENAME / RENAMENX. The value leaves the source's shard and is stored at
// the destination's (moved whole: objects are handed over, not copied).
// Across shards another client may, for an instant, see neither key.
void RenameGeneric(CommandContext& c, bool nx) {
  ShardSet* set = &c.server->shards();
  auto [src, dst, hs, hd, ss, sd] = KeyPair::Of(c);
  int64_t now = c.now_ms;
  Reply reply = c.Defer();
  auto done = [reply, nx] {
    if (nx) return ReplyInt(reply, 1);
    reply([](ReplyWriter& out) { out.Ok(); });
  };
  set->Post(ss, [=] {
    ShardStore& st = set->shard(ss).store;
    Record* r = st.Find(*src, hs, now);
    if (r == nullptr) return ReplyError(reply, "ERR no such key");
    if (*src == *dst) {
      if (nx) return ReplyInt(reply, 0);
      return done();
    }
    if (std::string e = CheckEntityTarget(*r, *src, *dst); !e.empty()) return ReplyError(reply, e);
    if (ss == sd) {
      if (nx && st.Find(*dst, hd, now) != nullptr) return ReplyInt(reply, 0);
      st.Put(*dst, hd, st.Take(*src, hs, now));
      LogDel(st, now, *src);
      aof::LogPut(st, now, *dst, hd);
      return done();
    }
    // Across shards: take, then store at the destination. RENAMENX checks the
    // destination first; should it appear between that check and the store,
    // the value goes back to the source key.
    auto take_and_put = [=] {
      set->Post(ss, [=] {
        auto v = std::make_shared<DetachedValue>(set->shard(ss).store.Take(*src, hs, now));
        if (v->empty()) return ReplyError(reply, "ERR no such key");
        LogDel(set->shard(ss).store, now, *src);
        set->Post(sd, [=] {
          ShardStore& dt = set->shard(sd).store;
          if (nx && dt.Find(*dst, hd, now) != nullptr) {
            return set->Post(ss, [=] {
              ShardStore& back = set->shard(ss).store;
              if (back.Find(*src, hs, now) == nullptr) {
                back.Put(*src, hs, std::move(*v));
                aof::LogPut(back, now, *src, hs);
              }
              ReplyInt(reply, 0);
            });
          }
          dt.Put(*dst, hd, std::move(*v));
          aof::LogPut(dt, now, *dst, hd);
          done();
        });
      });
    };
    if (!nx) return take_and_put();
    set->Post(sd, [=] {
      if (set->shard(sd).store.Find(*dst, hd, now) != nullptr) return ReplyInt(reply, 0);
      take_and_put();
    });
  });
}
void Rename(CommandContext& c) { RenameGeneric(c, false); }
void RenameNx(CommandContext& c) { RenameGeneric(c, true); }

// COPY source destination [DB 0] [REPLACE]: a deep copy (entity state
// included) with the source's expiry.
void Copy(CommandContext& c) {
  bool replace = false;
  for (size_t i = 3; i < c.args.size(); i++) {
    if (EqualsNoCase(c.args[i], "REPLACE")) {
      replace = true;
    } else if (EqualsNoCase(c.args[i], "DB") && i + 1 < c.args.size()) {
      int64_t db;
      if (!ParseI64(c.args[++i], &db) || db < INT32_MIN || db > INT32_MAX) return c.out.Error(kErrNotInt);
      if (db != 0) return c.out.Error("ERR DB index is out of range");
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  if (c.args[1] == c.args[2]) return c.out.Error("ERR source and destination objects are the same");
  ShardSet* set = &c.server->shards();
  auto [src, dst, hs, hd, ss, sd] = KeyPair::Of(c);
  int64_t now = c.now_ms;
  Reply reply = c.Defer();
  set->Post(ss, [=] {
    Record* r = set->shard(ss).store.Lookup(*src, hs, now);
    if (r == nullptr) return ReplyInt(reply, 0);
    if (std::string e = CheckEntityTarget(*r, *src, *dst); !e.empty()) return ReplyError(reply, e);
    auto v = std::make_shared<DetachedValue>(ShardStore::Copy(*r));
    set->Post(sd, [=] {
      ShardStore& dt = set->shard(sd).store;
      if (!replace && dt.Find(*dst, hd, now) != nullptr) return ReplyInt(reply, 0);
      dt.Put(*dst, hd, std::move(*v));
      aof::LogPut(dt, now, *dst, hd);
      ReplyInt(reply, 1);
    });
  });
}

// Error for a known subcommand with the wrong number of arguments, or an
// unknown one, in Redis 7's words.
void SubcommandError(CommandContext& c, const char* cmd, bool known) {
  std::string sub(c.args[1]);
  for (char& ch : sub) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (known) return c.out.Error("ERR wrong number of arguments for '" + std::string(cmd) + "|" + sub + "' command");
  std::string upper(cmd);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  c.out.Error("ERR unknown subcommand '" + std::string(c.args[1]).substr(0, 128) + "'. Try " + upper + " HELP.");
}

void HelpReply(CommandContext& c, std::initializer_list<const char*> lines) {
  c.out.Array(lines.size());
  for (const char* l : lines) c.out.Simple(l);
}

// OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key (docs/commands.md: the values
// Redis would report for the same data; access times are not tracked).
void Object(CommandContext& c) {
  std::string_view sub = c.args[1];
  bool known = EqualsNoCase(sub, "ENCODING") || EqualsNoCase(sub, "FREQ") || EqualsNoCase(sub, "IDLETIME") ||
               EqualsNoCase(sub, "REFCOUNT");
  if (EqualsNoCase(sub, "HELP") && c.args.size() == 2) {
    return HelpReply(c, {"OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "ENCODING <key>",
                         "    Return the kind of internal representation used in order to store the value",
                         "    associated with a <key>.", "FREQ <key>",
                         "    Return the access frequency index of the <key>. The returned integer is",
                         "    proportional to the logarithm of the recent access frequency of the key.",
                         "IDLETIME <key>", "    Return the idle time of the <key>, that is the approximated",
                         "    number of seconds elapsed since the last access to the key.", "REFCOUNT <key>",
                         "    Return the number of references of the value associated with the specified",
                         "    <key>.", "HELP", "    Print this help."});
  }
  if (!known || c.args.size() != 3) return SubcommandError(c, "object", known);
  Record* r = c.store->Find(c.args[2], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Null();
  if (EqualsNoCase(sub, "FREQ")) {
    return c.out.Error(
        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching "
        "between policies at runtime LRU and LFU data will take some time to adjust.");
  }
  if (EqualsNoCase(sub, "IDLETIME")) return c.out.Integer(0);
  auto small_int = [](std::string_view v, int64_t* n) {
    return v.size() <= 20 && ParseI64(v, n) && std::to_string(*n) == v;
  };
  int64_t n = 0;
  if (EqualsNoCase(sub, "REFCOUNT")) {
    bool shared = r->type == ValueType::kString && small_int(r->string_value(), &n) && n >= 0 && n < 10000;
    return c.out.Integer(shared ? INT32_MAX : 1);
  }
  switch (r->type) {
    case ValueType::kString: {
      std::string_view v = r->string_value();
      if (r->flags & Record::kRawString) return c.out.Bulk("raw");  // APPEND/SETRANGE, as Redis
      return c.out.Bulk(small_int(v, &n) ? "int" : v.size() <= 44 ? "embstr" : "raw");
    }
    case ValueType::kHash: {
      const HashValue* h = r->hash_value();
      const Config& cfg = c.server->config();
      size_t max_len = cfg.hash_max_listpack_value();
      bool small = h->size() <= cfg.hash_max_listpack_entries();
      h->ForEach([&](const std::string& f, const std::string& v) { small = small && f.size() <= max_len && v.size() <= max_len; });
      return c.out.Bulk(small ? "listpack" : "hashtable");
    }
    case ValueType::kFeature: return c.out.Bulk("entity");
  }
}

// MEMORY USAGE key [SAMPLES n] | DOCTOR | HELP. USAGE counts everything the
// key owns (for entity keys: views, aggregation states, tiles, last values)
// plus its slot in the table: the real cost, not an estimate from samples.
void Memory(CommandContext& c) {
  std::string_view sub = c.args[1];
  if (EqualsNoCase(sub, "HELP") && c.args.size() == 2) {
    return HelpReply(c, {"MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "DOCTOR",
                         "    Return memory problems reports.", "USAGE <key> [SAMPLES <count>]",
                         "    Return memory in bytes used by <key> and its value. Nested values are",
                         "    sampled up to <count> times (default: 5, 0 means sample all).", "HELP",
                         "    Print this help."});
  }
  if (EqualsNoCase(sub, "DOCTOR") && c.args.size() == 2) {
    return c.out.Verbatim("Hi Sam, I can't find any memory issue in your instance. I can only account for what "
                          "occurs on this base.\n");
  }
  if (!EqualsNoCase(sub, "USAGE") || c.args.size() < 3) return SubcommandError(c, "memory", false);
  for (size_t i = 3; i < c.args.size(); i++) {
    int64_t samples;
    if (EqualsNoCase(c.args[i], "SAMPLES") && i + 1 < c.args.size()) {
      if (!ParseI64(c.args[++i], &samples)) return c.out.Error(kErrNotInt);
      if (samples < 0) return c.out.Error(kErrSyntax);
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  Record* r = c.store->Find(c.args[2], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Null();
  c.out.Integer(static_cast<int64_t>(ShardStore::MemoryUsage(*r) + sizeof(Record*)));
}

}  // namespace

void RegisterGenericFamily(CommandTable& t) {
  const uint32_t W = kCmdWrite, R = kCmdReadonly, F = kCmdFast, M = kCmdMultiShard;
  t.Register({"del", -2, W | M, 1, -1, 1, Del, "generic", "Deletes one or more keys."});
  t.Register({"unlink", -2, W | F | M, 1, -1, 1, Del, "generic", "Asynchronously deletes one or more keys."});
  t.Register({"exists", -2, R | F | M, 1, -1, 1, Exists, "generic", "Determines whether one or more keys exist."});
  t.Register({"touch", -2, R | F | M, 1, -1, 1, Exists, "generic", "Returns the number of existing keys out of those specified."});
  t.Register({"type", 2, R | F, 1, 1, 1, Type, "generic", "Determines the type of value stored at a key."});
  t.Register({"expire", -3, W | F, 1, 1, 1, Expire, "generic", "Sets the expiration time of a key in seconds."});
  t.Register({"pexpire", -3, W | F, 1, 1, 1, PExpire, "generic", "Sets the expiration time of a key in milliseconds."});
  t.Register({"expireat", -3, W | F, 1, 1, 1, ExpireAt, "generic", "Sets the expiration time of a key to a Unix timestamp."});
  t.Register({"pexpireat", -3, W | F, 1, 1, 1, PExpireAt, "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp."});
  t.Register({"ttl", 2, R | F, 1, 1, 1, Ttl, "generic", "Returns the expiration time in seconds of a key."});
  t.Register({"pttl", 2, R | F, 1, 1, 1, PTtl, "generic", "Returns the expiration time in milliseconds of a key."});
  t.Register({"expiretime", 2, R | F, 1, 1, 1, ExpireTime, "generic", "Returns the expiration time of a key as a Unix timestamp."});
  t.Register({"pexpiretime", 2, R | F, 1, 1, 1, PExpireTime, "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp."});
  t.Register({"persist", 2, W | F, 1, 1, 1, Persist, "generic", "Removes the expiration time of a key."});
  t.Register({"scan", -2, R | M, 0, 0, 0, Scan, "generic", "Iterates over the key names in the database."});
  t.Register({"keys", 2, R | M, 0, 0, 0, Keys, "generic", "Returns all key names that match a pattern (slow: visits every key)."});
  t.Register({"rename", 3, W | M, 1, 2, 1, Rename, "generic", "Renames a key and overwrites the destination."});
  t.Register({"renamenx", 3, W | F | M, 1, 2, 1, RenameNx, "generic", "Renames a key only when the target key name doesn't exist."});
  t.Register({"copy", -3, W | kCmdDenyOom | M, 1, 2, 1, Copy, "generic", "Copies the value of a key to a new key."});
  t.Register({"object", -2, R, 2, 2, 1, Object, "generic", "A container for object introspection commands."});
  t.Register({"memory", -2, R, 2, 2, 1, Memory, "server", "A container for memory diagnostics commands."});
  t.Register({"randomkey", 1, R | M, 0, 0, 0, RandomKey, "generic", "Returns a key name from the database."});
}

}  // namespace fkv
