// String commands: GET SET MGET MSET INCR INCRBY DECR DECRBY INCRBYFLOAT
// STRLEN APPEND SETNX SETEX PSETEX GETDEL. Single-key commands run on the
// key's shard; MGET/MSET fan out to the shards of their keys.
#include <climits>
#include <cmath>
#include <map>

#include "server/command.h"
#include "server/connection.h"
#include "server/server.h"
#include "storage/key_table.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {

void Get(CommandContext& c) {
  Record* r = c.store->Lookup(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Null();
  if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  c.out.Bulk(r->string_value());
}

void GetDel(CommandContext& c) {
  Record* r = c.store->Lookup(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Null();
  if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  c.out.Bulk(r->string_value());
  c.store->Erase(c.args[1], c.key_hash, c.now_ms);
}

// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
void Set(CommandContext& c) {
  bool nx = false, xx = false, get = false, keepttl = false;
  int64_t expire_at = 0;
  bool have_expire = false;
  for (size_t i = 3; i < c.args.size(); i++) {
    std::string_view a = c.args[i];
    bool has_next = i + 1 < c.args.size();
    if (EqualsNoCase(a, "NX") && !xx) nx = true;
    else if (EqualsNoCase(a, "XX") && !nx) xx = true;
    else if (EqualsNoCase(a, "GET")) get = true;
    else if (EqualsNoCase(a, "KEEPTTL") && !have_expire) keepttl = true;
    else if ((EqualsNoCase(a, "EX") || EqualsNoCase(a, "PX") || EqualsNoCase(a, "EXAT") || EqualsNoCase(a, "PXAT")) &&
             !keepttl && !have_expire && has_next) {
      int64_t v;
      if (!ParseI64(c.args[i + 1], &v)) return c.out.Error(kErrNotInt);
      if (v <= 0) return c.out.Error("ERR invalid expire time in 'set' command");
      bool secs = EqualsNoCase(a, "EX") || EqualsNoCase(a, "EXAT");
      if (secs && v > LLONG_MAX / 1000) return c.out.Error("ERR invalid expire time in 'set' command");
      int64_t ms = secs ? v * 1000 : v;
      bool relative = EqualsNoCase(a, "EX") || EqualsNoCase(a, "PX");
      if (relative && ms > LLONG_MAX - c.now_ms) return c.out.Error("ERR invalid expire time in 'set' command");
      expire_at = relative ? c.now_ms + ms : ms;
      have_expire = true;
      i++;
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (get && r != nullptr && r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  std::string old;
  bool had = r != nullptr;
  if (get && had) old.assign(r->string_value());
  if ((nx && had) || (xx && !had)) {
    if (get) return had ? c.out.Bulk(old) : c.out.Null();
    return c.out.Null();
  }
  if (keepttl && had) expire_at = r->expire_at();
  // An absolute time already past: Redis stores nothing (the key is deleted).
  if (have_expire && expire_at <= c.now_ms) {
    c.store->Erase(c.args[1], c.key_hash, c.now_ms);
  } else {
    c.store->PutString(c.args[1], c.key_hash, c.args[2], expire_at);
  }
  if (get) return had ? c.out.Bulk(old) : c.out.Null();
  c.out.Ok();
}

void SetNx(CommandContext& c) {
  if (c.store->Find(c.args[1], c.key_hash, c.now_ms) != nullptr) return c.out.Integer(0);
  c.store->PutString(c.args[1], c.key_hash, c.args[2], 0);
  c.out.Integer(1);
}

void SetExGeneric(CommandContext& c, bool ms) {
  int64_t v;
  if (!ParseI64(c.args[2], &v)) return c.out.Error(kErrNotInt);
  if (v <= 0 || (!ms && v > LLONG_MAX / 1000))
    return c.out.Error(std::string("ERR invalid expire time in '") + c.spec->name + "' command");
  c.store->PutString(c.args[1], c.key_hash, c.args[3], c.now_ms + (ms ? v : v * 1000));
  c.out.Ok();
}
void SetEx(CommandContext& c) { SetExGeneric(c, false); }
void PSetEx(CommandContext& c) { SetExGeneric(c, true); }

void IncrGeneric(CommandContext& c, int64_t by) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  int64_t cur = 0;
  int64_t expire_at = 0;
  if (r != nullptr) {
    if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
    if (!ParseI64(r->string_value(), &cur)) return c.out.Error(kErrNotInt);
    expire_at = r->expire_at();
  }
  if ((by < 0 && cur < 0 && by < LLONG_MIN - cur) || (by > 0 && cur > 0 && by > LLONG_MAX - cur))
    return c.out.Error("ERR increment or decrement would overflow");
  cur += by;
  std::string s = std::to_string(cur);
  c.store->PutString(c.args[1], c.key_hash, s, expire_at);
  c.out.Integer(cur);
}

void Incr(CommandContext& c) { IncrGeneric(c, 1); }
void Decr(CommandContext& c) { IncrGeneric(c, -1); }
void IncrBy(CommandContext& c) {
  int64_t by;
  if (!ParseI64(c.args[2], &by)) return c.out.Error(kErrNotInt);
  IncrGeneric(c, by);
}
void DecrBy(CommandContext& c) {
  int64_t by;
  if (!ParseI64(c.args[2], &by)) return c.out.Error(kErrNotInt);
  if (by == LLONG_MIN) return c.out.Error("ERR decrement would overflow");
  IncrGeneric(c, -by);
}

void IncrByFloat(CommandContext& c) {
  long double by, cur = 0;
  if (!ParseLongDouble(c.args[2], &by)) return c.out.Error("ERR value is not a valid float");
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  int64_t expire_at = 0;
  if (r != nullptr) {
    if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
    if (!ParseLongDouble(r->string_value(), &cur)) return c.out.Error("ERR value is not a valid float");
    expire_at = r->expire_at();
  }
  cur += by;
  if (std::isnan(cur) || std::isinf(cur)) return c.out.Error("ERR increment would produce NaN or Infinity");
  std::string s = FormatLongDouble(cur);
  c.store->PutString(c.args[1], c.key_hash, s, expire_at);
  c.out.Bulk(s);
}

void StrLen(CommandContext& c) {
  Record* r = c.store->Lookup(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Integer(0);
  if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  c.out.Integer(static_cast<int64_t>(r->string_value().size()));
}

void Append(CommandContext& c) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  std::string v;
  int64_t expire_at = 0;
  if (r != nullptr) {
    if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
    v.assign(r->string_value());
    expire_at = r->expire_at();
  }
  if (v.size() + c.args[2].size() > c.server->config().proto_max_bulk_len())
    return c.out.Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
  v.append(c.args[2]);
  c.store->PutString(c.args[1], c.key_hash, v, expire_at);
  c.out.Integer(static_cast<int64_t>(v.size()));
}

// Groups the key positions of a multi-key command by shard.
std::map<int, std::vector<size_t>> ByShard(CommandContext& c, size_t first, size_t step,
                                           std::vector<uint64_t>* hashes) {
  std::map<int, std::vector<size_t>> m;
  hashes->assign(c.args.size(), 0);
  for (size_t i = first; i < c.args.size(); i += step) {
    uint64_t h = HashKey(c.args[i]);
    (*hashes)[i] = h;
    m[c.server->shards().ShardOf(h)].push_back(i);
  }
  return m;
}

std::vector<int> Keys(const std::map<int, std::vector<size_t>>& m) {
  std::vector<int> v;
  for (const auto& [s, _] : m) v.push_back(s);
  return v;
}

void MGet(CommandContext& c) {
  struct Slot {
    bool found = false;
    std::string value;
  };
  auto hashes = std::make_shared<std::vector<uint64_t>>();
  auto groups = std::make_shared<std::map<int, std::vector<size_t>>>(ByShard(c, 1, 1, hashes.get()));
  auto slots = std::make_shared<std::vector<Slot>>(c.args.size());
  const ArgList& args = c.args;
  int64_t now = c.now_ms;
  c.FanOut(
      Keys(*groups),
      [groups, slots, hashes, &args, now](int shard, ShardStore& st) {
        for (size_t i : groups->at(shard)) {
          Record* r = st.Lookup(args[i], (*hashes)[i], now);
          if (r != nullptr && r->type == ValueType::kString) {
            (*slots)[i].found = true;
            (*slots)[i].value.assign(r->string_value());
          }
        }
      },
      [slots](ReplyWriter& out) {
        out.Array(slots->size() - 1);
        for (size_t i = 1; i < slots->size(); i++) {
          if ((*slots)[i].found) out.Bulk((*slots)[i].value);
          else out.Null();
        }
      });
}

void MSet(CommandContext& c) {
  if (c.args.size() % 2 != 1) return c.out.Error(ErrWrongArgs(c.spec->name));
  auto hashes = std::make_shared<std::vector<uint64_t>>();
  auto groups = std::make_shared<std::map<int, std::vector<size_t>>>(ByShard(c, 1, 2, hashes.get()));
  const ArgList& args = c.args;
  c.FanOut(
      Keys(*groups),
      [groups, hashes, &args](int shard, ShardStore& st) {
        for (size_t i : groups->at(shard)) st.PutString(args[i], (*hashes)[i], args[i + 1], 0);
      },
      [](ReplyWriter& out) { out.Ok(); });
}

}  // namespace

// Used by generic_family.cc too.
std::map<int, std::vector<size_t>> GroupKeysByShard(CommandContext& c, size_t first, size_t step,
                                                    std::vector<uint64_t>* hashes) {
  return ByShard(c, first, step, hashes);
}

void RegisterStringFamily(CommandTable& t) {
  const uint32_t W = kCmdWrite | kCmdDenyOom, R = kCmdReadonly, F = kCmdFast;
  t.Register({"get", 2, R | F, 1, 1, 1, Get, "string", "Returns the string value of a key."});
  t.Register({"getdel", 2, kCmdWrite | F, 1, 1, 1, GetDel, "string", "Returns the string value of a key after deleting the key."});
  t.Register({"set", -3, W, 1, 1, 1, Set, "string", "Sets the string value of a key, ignoring its type."});
  t.Register({"setnx", 3, W | F, 1, 1, 1, SetNx, "string", "Set the string value of a key only when the key doesn't exist."});
  t.Register({"setex", 4, W, 1, 1, 1, SetEx, "string", "Sets the string value and expiration time of a key."});
  t.Register({"psetex", 4, W, 1, 1, 1, PSetEx, "string", "Sets the string value and expiration time in milliseconds of a key."});
  t.Register({"incr", 2, W | F, 1, 1, 1, Incr, "string", "Increments the integer value of a key by one."});
  t.Register({"decr", 2, W | F, 1, 1, 1, Decr, "string", "Decrements the integer value of a key by one."});
  t.Register({"incrby", 3, W | F, 1, 1, 1, IncrBy, "string", "Increments the integer value of a key by a number."});
  t.Register({"decrby", 3, W | F, 1, 1, 1, DecrBy, "string", "Decrements a number from the integer value of a key."});
  t.Register({"incrbyfloat", 3, W | F, 1, 1, 1, IncrByFloat, "string", "Increment the floating point value of a key by a number."});
  t.Register({"strlen", 2, R | F, 1, 1, 1, StrLen, "string", "Returns the length of a string value."});
  t.Register({"append", 3, W | F, 1, 1, 1, Append, "string", "Appends a string to the value of a key."});
  t.Register({"mget", -2, R | F | kCmdMultiShard, 1, -1, 1, MGet, "string", "Atomically returns the string values of one or more keys."});
  t.Register({"mset", -3, W | kCmdMultiShard, 1, -1, 2, MSet, "string", "Sets the string values of one or more keys."});
}

}  // namespace fkv
