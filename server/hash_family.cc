// Hash commands: HSET HMSET HSETNX HGET HMGET HGETALL HKEYS HVALS HDEL HLEN
// HEXISTS HSTRLEN HINCRBY HINCRBYFLOAT HSCAN HRANDFIELD. All run on the
// key's shard.
#include <charconv>
#include <climits>
#include <cmath>
#include <random>

#include "storage/glob.h"

#include "server/command.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {

// The hash at args[1], or nullptr with the reply already written (nil / empty
// / WRONGTYPE) when there is none to read.
constexpr int64_t kMaxRandomReply = 10'000'000;  // HRANDFIELD with a negative count

const HashValue* ReadHash(CommandContext& c, bool* wrongtype) {
  *wrongtype = false;
  Record* r = c.store->Lookup(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return nullptr;
  if (r->type != ValueType::kHash) {
    *wrongtype = true;
    return nullptr;
  }
  return r->hash_value();
}

HashValue* WriteHash(CommandContext& c) {
  HashValue* h = c.store->GetOrCreateHash(c.args[1], c.key_hash, c.now_ms);
  if (h == nullptr) c.out.Error(kErrWrongType);
  return h;
}

void HSet(CommandContext& c) {
  if (c.args.size() % 2 != 0) return c.out.Error(ErrWrongArgs(c.spec->name));
  HashValue* h = WriteHash(c);
  if (h == nullptr) return;
  int64_t added = 0;
  for (size_t i = 2; i + 1 < c.args.size(); i += 2) added += h->Set(c.args[i], c.args[i + 1]) ? 1 : 0;
  if (c.spec->name[1] == 'm') return c.out.Ok();  // HMSET
  c.out.Integer(added);
}

void HSetNx(CommandContext& c) {
  HashValue* h = WriteHash(c);
  if (h == nullptr) return;
  if (h->Get(c.args[2]) != nullptr) return c.out.Integer(0);
  h->Set(c.args[2], c.args[3]);
  c.out.Integer(1);
}

void HGet(CommandContext& c) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  const std::string* v = h ? h->Get(c.args[2]) : nullptr;
  if (v == nullptr) return c.out.Null();
  c.out.Bulk(*v);
}

void HMGet(CommandContext& c) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  c.out.Array(c.args.size() - 2);
  for (size_t i = 2; i < c.args.size(); i++) {
    const std::string* v = h ? h->Get(c.args[i]) : nullptr;
    if (v == nullptr) c.out.Null();
    else c.out.Bulk(*v);
  }
}

void HGetAll(CommandContext& c) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  if (h == nullptr) return c.out.Map(0);
  c.out.Map(h->size());
  h->ForEach([&](const std::string& k, const std::string& v) {
    c.out.Bulk(k);
    c.out.Bulk(v);
  });
}

void HKeysVals(CommandContext& c, bool keys) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  if (h == nullptr) return c.out.Array(0);
  c.out.Array(h->size());
  h->ForEach([&](const std::string& k, const std::string& v) { c.out.Bulk(keys ? k : v); });
}
void HKeys(CommandContext& c) { HKeysVals(c, true); }
void HVals(CommandContext& c) { HKeysVals(c, false); }

void HDel(CommandContext& c) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Integer(0);
  if (r->type != ValueType::kHash) return c.out.Error(kErrWrongType);
  HashValue* h = r->hash_value();
  int64_t n = 0;
  for (size_t i = 2; i < c.args.size(); i++) n += h->Del(c.args[i]) ? 1 : 0;
  if (h->size() == 0) c.store->Erase(c.args[1], c.key_hash, c.now_ms);  // empty hashes vanish, as in Redis
  c.out.Integer(n);
}

void HLen(CommandContext& c) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  c.out.Integer(h ? static_cast<int64_t>(h->size()) : 0);
}

void HExists(CommandContext& c) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  c.out.Integer(h && h->Get(c.args[2]) ? 1 : 0);
}

void HStrLen(CommandContext& c) {
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  const std::string* v = h ? h->Get(c.args[2]) : nullptr;
  c.out.Integer(v ? static_cast<int64_t>(v->size()) : 0);
}

void HIncrBy(CommandContext& c) {
  int64_t by;
  if (!ParseI64(c.args[3], &by)) return c.out.Error(kErrNotInt);
  // Validate before creating the key, so an error changes nothing.
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r != nullptr && r->type != ValueType::kHash) return c.out.Error(kErrWrongType);
  int64_t cur = 0;
  if (r != nullptr) {
    if (const std::string* v = r->hash_value()->Get(c.args[2])) {
      if (!ParseI64(*v, &cur)) return c.out.Error("ERR hash value is not an integer");
    }
  }
  if ((by < 0 && cur < 0 && by < LLONG_MIN - cur) || (by > 0 && cur > 0 && by > LLONG_MAX - cur))
    return c.out.Error("ERR increment or decrement would overflow");
  cur += by;
  HashValue* h = WriteHash(c);
  if (h == nullptr) return;
  h->Set(c.args[2], std::to_string(cur));
  c.out.Integer(cur);
}

void HIncrByFloat(CommandContext& c) {
  long double by, cur = 0;
  if (!ParseLongDouble(c.args[3], &by)) return c.out.Error("ERR value is not a valid float");
  if (std::isinf(by)) return c.out.Error("ERR value is NaN or Infinity");  // Redis checks the increment first
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r != nullptr && r->type != ValueType::kHash) return c.out.Error(kErrWrongType);
  if (r != nullptr) {
    if (const std::string* v = r->hash_value()->Get(c.args[2])) {
      if (!ParseLongDouble(*v, &cur)) return c.out.Error("ERR hash value is not a float");
    }
  }
  cur += by;
  if (std::isnan(cur) || std::isinf(cur)) return c.out.Error("ERR increment would produce NaN or Infinity");
  HashValue* h = WriteHash(c);
  if (h == nullptr) return;
  std::string s = FormatLongDouble(cur);
  h->Set(c.args[2], s);
  c.out.Bulk(s);
}

// HSCAN key cursor [MATCH pattern] [COUNT count]: the whole hash in one
// reply with cursor 0, as Redis answers for hashes it keeps as a listpack
// (COUNT is a hint; docs/commands.md).
void HScan(CommandContext& c) {
  uint64_t cursor = 0;
  std::string_view cs = c.args[2];
  auto res = std::from_chars(cs.data(), cs.data() + cs.size(), cursor);
  if (cs.empty() || res.ec != std::errc() || res.ptr != cs.data() + cs.size()) return c.out.Error("ERR invalid cursor");
  std::unique_ptr<GlobPattern> match;
  for (size_t i = 3; i < c.args.size(); i++) {
    bool more = i + 1 < c.args.size();
    if (EqualsNoCase(c.args[i], "MATCH") && more) {
      std::string_view p = c.args[++i];
      match = p == "*" ? nullptr : std::make_unique<GlobPattern>(p);
    } else if (EqualsNoCase(c.args[i], "COUNT") && more) {
      int64_t count;
      if (!ParseI64(c.args[++i], &count)) return c.out.Error(kErrNotInt);
      if (count < 1) return c.out.Error(kErrSyntax);
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  std::vector<std::pair<const std::string*, const std::string*>> items;
  if (h != nullptr) {  // any cursor: Redis also answers listpack hashes whole
    h->ForEach([&](const std::string& f, const std::string& v) {
      if (!match || match->Match(f)) items.emplace_back(&f, &v);
    });
  }
  c.out.Array(2);
  c.out.Bulk("0");
  c.out.Array(items.size() * 2);
  for (auto [f, v] : items) {
    c.out.Bulk(*f);
    c.out.Bulk(*v);
  }
}

// HRANDFIELD key [count [WITHVALUES]], as Redis 7: a positive count gives
// distinct fields (at most the hash's size), a negative one may repeat.
void HRandField(CommandContext& c) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  bool with_count = c.args.size() >= 3, with_values = false;
  int64_t count = 1;
  if (with_count) {
    if (!ParseI64(c.args[2], &count)) return c.out.Error(kErrNotInt);
    // A repeated pick per element: bound the reply, as the output buffer
    // would (docs/commands.md).
    if (count < -kMaxRandomReply || count == LLONG_MIN) return c.out.Error("ERR value is out of range");
    if (c.args.size() >= 4) {
      if (c.args.size() > 4 || !EqualsNoCase(c.args[3], "WITHVALUES")) return c.out.Error(kErrSyntax);
      with_values = true;
    }
  }
  bool wt;
  const HashValue* h = ReadHash(c, &wt);
  if (wt) return c.out.Error(kErrWrongType);
  if (h == nullptr) return with_count ? c.out.Array(0) : c.out.Null();
  std::vector<std::pair<const std::string*, const std::string*>> all;
  all.reserve(h->size());
  h->ForEach([&](const std::string& f, const std::string& v) { all.emplace_back(&f, &v); });
  if (!with_count) {
    return c.out.Bulk(*all[std::uniform_int_distribution<size_t>(0, all.size() - 1)(rng)].first);
  }
  std::vector<size_t> picks;
  if (count >= 0) {  // distinct: a partial shuffle
    size_t n = std::min(static_cast<size_t>(count), all.size());
    std::vector<size_t> idx(all.size());
    for (size_t i = 0; i < idx.size(); i++) idx[i] = i;
    for (size_t i = 0; i < n; i++) std::swap(idx[i], idx[std::uniform_int_distribution<size_t>(i, idx.size() - 1)(rng)]);
    picks.assign(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n));
  } else {
    for (int64_t i = 0; i < -count; i++) picks.push_back(std::uniform_int_distribution<size_t>(0, all.size() - 1)(rng));
  }
  bool resp3 = c.out.protocol() == 3;
  c.out.Array(with_values && !resp3 ? picks.size() * 2 : picks.size());
  for (size_t i : picks) {
    if (with_values) {
      if (resp3) c.out.Array(2);
      c.out.Bulk(*all[i].first);
      c.out.Bulk(*all[i].second);
    } else {
      c.out.Bulk(*all[i].first);
    }
  }
}

}  // namespace

void RegisterHashFamily(CommandTable& t) {
  const uint32_t W = kCmdWrite | kCmdDenyOom, R = kCmdReadonly, F = kCmdFast;
  t.Register({"hset", -4, W | F, 1, 1, 1, HSet, "hash", "Creates or modifies the value of a field in a hash."});
  t.Register({"hmset", -4, W | F, 1, 1, 1, HSet, "hash", "Sets the values of multiple fields."});
  t.Register({"hsetnx", 4, W | F, 1, 1, 1, HSetNx, "hash", "Sets the value of a field in a hash only when the field doesn't exist."});
  t.Register({"hget", 3, R | F, 1, 1, 1, HGet, "hash", "Returns the value of a field in a hash."});
  t.Register({"hmget", -3, R | F, 1, 1, 1, HMGet, "hash", "Returns the values of all fields in a hash."});
  t.Register({"hgetall", 2, R, 1, 1, 1, HGetAll, "hash", "Returns all fields and values in a hash."});
  t.Register({"hkeys", 2, R, 1, 1, 1, HKeys, "hash", "Returns all fields in a hash."});
  t.Register({"hvals", 2, R, 1, 1, 1, HVals, "hash", "Returns all values in a hash."});
  t.Register({"hdel", -3, kCmdWrite | F, 1, 1, 1, HDel, "hash", "Deletes one or more fields and their values from a hash."});
  t.Register({"hlen", 2, R | F, 1, 1, 1, HLen, "hash", "Returns the number of fields in a hash."});
  t.Register({"hexists", 3, R | F, 1, 1, 1, HExists, "hash", "Determines whether a field exists in a hash."});
  t.Register({"hstrlen", 3, R | F, 1, 1, 1, HStrLen, "hash", "Returns the length of the value of a field."});
  t.Register({"hincrby", 4, W | F, 1, 1, 1, HIncrBy, "hash", "Increments the integer value of a field in a hash by a number."});
  t.Register({"hscan", -3, R, 1, 1, 1, HScan, "hash", "Iterates over fields and values of a hash."});
  t.Register({"hrandfield", -2, R, 1, 1, 1, HRandField, "hash", "Returns one or more random fields from a hash."});
  t.Register({"hincrbyfloat", 4, W | F, 1, 1, 1, HIncrByFloat, "hash", "Increments the floating point value of a field by a number."});
}

}  // namespace fkv
