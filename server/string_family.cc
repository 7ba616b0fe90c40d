// String commands: GET SET MGET MSET MSETNX INCR INCRBY DECR DECRBY
// INCRBYFLOAT STRLEN APPEND SETNX SETEX PSETEX GETDEL GETEX GETSET GETRANGE
// SETRANGE. Single-key commands run on the key's shard; MGET/MSET/MSETNX
// fan out to the shards of their keys.
#include <atomic>
#include <climits>
#include <cstring>
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

// GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]
void GetEx(CommandContext& c) {
  bool persist = false, have_expire = false, absolute = false;
  int64_t expire_at = 0;
  for (size_t i = 2; i < c.args.size(); i++) {
    std::string_view a = c.args[i];
    bool has_next = i + 1 < c.args.size();
    if (EqualsNoCase(a, "PERSIST") && !have_expire && !persist) {
      persist = true;
    } else if ((EqualsNoCase(a, "EX") || EqualsNoCase(a, "PX") || EqualsNoCase(a, "EXAT") || EqualsNoCase(a, "PXAT")) &&
               !persist && !have_expire && has_next) {
      int64_t v;
      if (!ParseI64(c.args[i + 1], &v)) return c.out.Error(kErrNotInt);
      bool secs = EqualsNoCase(a, "EX") || EqualsNoCase(a, "EXAT");
      absolute = EqualsNoCase(a, "EXAT") || EqualsNoCase(a, "PXAT");
      if (v <= 0 || (secs && v > LLONG_MAX / 1000)) return c.out.Error("ERR invalid expire time in 'getex' command");
      int64_t ms = secs ? v * 1000 : v;
      if (!absolute && ms > LLONG_MAX - c.now_ms) return c.out.Error("ERR invalid expire time in 'getex' command");
      expire_at = absolute ? ms : c.now_ms + ms;
      have_expire = true;
      i++;
    } else {
      return c.out.Error(kErrSyntax);
    }
  }
  Record* r = c.store->Lookup(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Null();
  if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  c.out.Bulk(r->string_value());
  if (have_expire && expire_at <= c.now_ms) c.store->Erase(c.args[1], c.key_hash, c.now_ms);  // EXAT/PXAT in the past
  else if (have_expire) c.store->SetExpire(c.args[1], c.key_hash, expire_at, c.now_ms);
  else if (persist && r->has_expiry()) c.store->SetExpire(c.args[1], c.key_hash, 0, c.now_ms);
}

// GETSET key value: SET key value GET, without options (the TTL is dropped).
void GetSet(CommandContext& c) {
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r != nullptr && r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  if (r != nullptr) c.out.Bulk(r->string_value());
  else c.out.Null();
  c.store->PutString(c.args[1], c.key_hash, c.args[2], 0);
}

// GETRANGE key start end (inclusive, negative from the end), as Redis 7.
void GetRange(CommandContext& c) {
  int64_t start, end;
  if (!ParseI64(c.args[2], &start) || !ParseI64(c.args[3], &end)) return c.out.Error(kErrNotInt);
  Record* r = c.store->Lookup(c.args[1], c.key_hash, c.now_ms);
  if (r == nullptr) return c.out.Bulk("");
  if (r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  std::string_view v = r->string_value();
  auto len = static_cast<int64_t>(v.size());
  if (start < 0 && end < 0 && start > end) return c.out.Bulk("");
  if (start < 0) start = len + start;
  if (end < 0) end = len + end;
  if (start < 0) start = 0;
  if (end < 0) end = 0;
  if (end >= len) end = len - 1;
  if (start > end || len == 0) return c.out.Bulk("");
  c.out.Bulk(v.substr(static_cast<size_t>(start), static_cast<size_t>(end - start + 1)));
}

// SETRANGE key offset value: overwrites from offset, zero-padding as needed;
// keeps the TTL. An empty value creates nothing and changes nothing.
void SetRange(CommandContext& c) {
  int64_t offset;
  if (!ParseI64(c.args[2], &offset)) return c.out.Error(kErrNotInt);
  if (offset < 0) return c.out.Error("ERR offset is out of range");
  std::string_view value = c.args[3];
  Record* r = c.store->Find(c.args[1], c.key_hash, c.now_ms);
  if (r != nullptr && r->type != ValueType::kString) return c.out.Error(kErrWrongType);
  int64_t cur_len = r != nullptr ? static_cast<int64_t>(r->string_value().size()) : 0;
  if (value.empty()) return c.out.Integer(cur_len);
  if (static_cast<uint64_t>(offset) + value.size() > c.server->config().proto_max_bulk_len())
    return c.out.Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
  size_t need = static_cast<size_t>(offset) + value.size();
  if (r != nullptr && need <= r->string_value().size()) {  // in place, same size
    std::memcpy(r->mutable_string_data() + offset, value.data(), value.size());
    r->flags |= Record::kRawString;
    return c.out.Integer(cur_len);
  }
  std::string v(r != nullptr ? r->string_value() : std::string_view());
  int64_t expire_at = r != nullptr ? r->expire_at() : 0;
  if (v.size() < need) v.resize(need, '\0');
  v.replace(static_cast<size_t>(offset), value.size(), value);
  c.store->PutString(c.args[1], c.key_hash, v, expire_at)->flags |= Record::kRawString;
  c.out.Integer(static_cast<int64_t>(v.size()));
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
  c.store->PutString(c.args[1], c.key_hash, v, expire_at)->flags |= Record::kRawString;
  c.out.Integer(static_cast<int64_t>(v.size()));
}

void MGet(CommandContext& c) {
  struct Slot {
    bool found = false;
    std::string value;
  };
  auto plan = c.PlanArgs(1, 1);
  auto slots = std::make_shared<std::vector<Slot>>(plan->size());
  const ArgList& args = c.args;
  int64_t now = c.now_ms;
  c.FanOut(
      plan,
      [plan, slots, &args, now](ShardStore& st, std::span<const uint32_t> keys) {
        for (uint32_t i : keys) {
          Record* r = st.Lookup(args[1 + i], plan->hash(i), now);
          if (r != nullptr && r->type == ValueType::kString) {
            (*slots)[i].found = true;
            (*slots)[i].value.assign(r->string_value());
          }
        }
      },
      [slots](ReplyWriter& out) {
        out.Array(slots->size());
        for (const Slot& s : *slots) {
          if (s.found) out.Bulk(s.value);
          else out.Null();
        }
      });
}

void MSet(CommandContext& c) {
  if (c.args.size() % 2 != 1) return c.out.Error(ErrWrongArgs(c.spec->name));
  auto plan = c.PlanArgs(1, 2);
  const ArgList& args = c.args;
  c.FanOut(
      plan,
      [plan, &args, now = c.now_ms](ShardStore& st, std::span<const uint32_t> keys) {
        for (uint32_t i : keys) st.PutString(args[1 + 2 * i], plan->hash(i), args[2 + 2 * i], 0);
        aof::LogKeysPart(st, now, "MSET", args, 1, 2, keys);
      },
      [](ReplyWriter& out) { out.Ok(); });
}

// MSETNX key value [key value ...]: sets them all only when none exists.
// Keys of one shard are checked and set in one step (atomic); across shards
// a check on every shard is followed by the writes (docs/commands.md).
void MSetNx(CommandContext& c) {
  if (c.args.size() % 2 != 1) return c.out.Error(ErrWrongArgs(c.spec->name));
  auto plan = c.PlanArgs(1, 2);
  const ArgList& args = c.args;
  int64_t now = c.now_ms;
  if (plan->shards().size() == 1) {
    auto done = std::make_shared<bool>(false);
    return c.FanOut(
        plan,
        [plan, &args, now, done](ShardStore& st, std::span<const uint32_t> keys) {
          for (uint32_t i : keys)
            if (st.Find(args[1 + 2 * i], plan->hash(i), now) != nullptr) return;
          for (uint32_t i : keys) st.PutString(args[1 + 2 * i], plan->hash(i), args[2 + 2 * i], 0);
          aof::LogKeysPart(st, now, "MSET", args, 1, 2, keys);
          *done = true;
        },
        [done](ReplyWriter& out) { out.Integer(*done ? 1 : 0); });
  }
  // Several shards: check, then write. The arguments are copied, as the
  // connection's buffer only lives until the reply.
  auto kv = std::make_shared<std::vector<std::string>>(args.begin(), args.end());
  auto exists = std::make_shared<std::atomic<bool>>(false);
  auto reply = c.Defer();
  ShardSet* set = &c.server->shards();
  set->RunOn(
      plan->shards(),
      [plan, kv, now, exists](int shard, ShardStore& st) {
        for (uint32_t i : plan->indexes(shard))
          if (st.Find((*kv)[1 + 2 * i], plan->hash(i), now) != nullptr) exists->store(true);
      },
      [set, plan, kv, exists, reply, now] {
        if (exists->load()) return reply([](ReplyWriter& out) { out.Integer(0); });
        set->RunOn(
            plan->shards(),
            [plan, kv, now](int shard, ShardStore& st) {
              for (uint32_t i : plan->indexes(shard)) st.PutString((*kv)[1 + 2 * i], plan->hash(i), (*kv)[2 + 2 * i], 0);
              std::vector<std::string_view> views((*kv).begin(), (*kv).end());
              aof::LogKeysPart(st, now, "MSET", views, 1, 2, plan->indexes(shard));
            },
            [reply] { reply([](ReplyWriter& out) { out.Integer(1); }); });
      });
}

}  // namespace

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
  t.Register({"getex", -2, kCmdWrite | F, 1, 1, 1, GetEx, "string", "Returns the string value of a key after setting its expiration time."});
  t.Register({"getset", 3, W | F, 1, 1, 1, GetSet, "string", "Returns the previous string value of a key after setting it to a new value."});
  t.Register({"getrange", 4, R, 1, 1, 1, GetRange, "string", "Returns a substring of the string stored at a key."});
  t.Register({"setrange", 4, W, 1, 1, 1, SetRange, "string", "Overwrites a part of a string value with another by an offset."});
  t.Register({"msetnx", -3, W | kCmdMultiShard, 1, -1, 2, MSetNx, "string", "Sets the string values of one or more keys only when all keys don't exist."});
  t.Register({"mset", -3, W | kCmdMultiShard, 1, -1, 2, MSet, "string", "Sets the string values of one or more keys."});
}

}  // namespace fkv
