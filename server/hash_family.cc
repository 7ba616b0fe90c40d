// Hash commands: HSET HMSET HSETNX HGET HMGET HGETALL HKEYS HVALS HDEL HLEN
// HEXISTS HSTRLEN HINCRBY HINCRBYFLOAT. All run on the key's shard.
#include <climits>
#include <cmath>

#include "server/command.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {

// The hash at args[1], or nullptr with the reply already written (nil / empty
// / WRONGTYPE) when there is none to read.
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
  t.Register({"hincrbyfloat", 4, W | F, 1, 1, 1, HIncrByFloat, "hash", "Increments the floating point value of a field by a number."});
}

}  // namespace fkv
