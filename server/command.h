// The command table: every command's name, arity, flags and key positions
// (as Redis's server.c table and COMMAND INFO), and the handler of its
// family. Families register in their own files (*_family.cc). Dispatch
// (connection.cc) routes single-key commands to the shard owning the key;
// multi-key and server-wide commands fan out through CommandContext::FanOut.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/reply_writer.h"
#include "protocol/resp_parser.h"

namespace fkv {

class Connection;
class Server;
class ShardStore;
class ShardPlan;

enum CommandFlag : uint32_t {
  kCmdWrite = 1 << 0,
  kCmdReadonly = 1 << 1,
  kCmdFast = 1 << 2,
  kCmdAdmin = 1 << 3,
  kCmdNoAuth = 1 << 4,     // allowed before AUTH
  kCmdDenyOom = 1 << 5,    // refused above maxmemory
  kCmdMultiShard = 1 << 6, // handler routes itself (FanOut); not sent to a key's shard
  kCmdLoading = 1 << 7,
  kCmdStale = 1 << 8,
  kCmdTxControl = 1 << 9,  // runs at once inside MULTI (MULTI EXEC DISCARD WATCH QUIT RESET)
  kCmdNoMulti = 1 << 10,   // refused inside MULTI (it waits for other work: SAVE, FREGISTRY, ...)
  // The keys are found by parsing the arguments (CommandSpec::key_end), not
  // at fixed positions: COMMAND INFO says "movablekeys" and 0 0 0, as Redis
  // does for XREAD, and clients ask COMMAND GETKEYS.
  kCmdMovableKeys = 1 << 11,
  // Cluster mode: its keys may be in any slots (no CROSSSLOT, no MOVED):
  // the handler sends each to its owner (FMGET).
  kCmdAnySlot = 1 << 12,
};

struct CommandContext;
using CommandHandler = void (*)(CommandContext&);

struct CommandSpec {
  const char* name;   // lower case
  int arity;          // Redis convention: N exact, -N at least N
  uint32_t flags;
  int first_key, last_key, step;
  CommandHandler handler;
  const char* group;
  const char* summary;
  size_t index = 0;  // in CommandTable::all(), set by Register (command statistics)
  // kCmdMovableKeys: the keys are args[1, key_end(args)); -1 when the
  // arguments are malformed (the handler refuses them).
  int (*key_end)(const ArgList& args) = nullptr;
};

// Everything a handler needs. For a single-key command `store` is the
// shard that owns args[first_key] and the handler runs on its thread.
struct CommandContext {
  Server* server;
  Connection* conn;
  const CommandSpec* spec;
  const ArgList& args;
  ReplyWriter& out;
  int shard;            // the shard (thread) running this handler
  ShardStore* store;    // that shard's store
  uint64_t key_hash;    // HashKey(args[first_key]) when the command has a key
  int64_t now_ms;

  // Runs per_shard(shard, store) on each shard in `shards` (distinct), in
  // parallel on their threads, then finish() on this thread, after which the
  // connection goes on with its next command. finish writes the reply. When
  // the only shard is this one, all of it runs inline.
  void FanOut(const std::vector<int>& shards, std::function<void(int, ShardStore&)> per_shard,
              std::function<void(ReplyWriter&)> finish);
  // FanOut over the shards of a plan: per_shard gets the store and the
  // indexes of the plan's keys that shard owns.
  void FanOut(std::shared_ptr<const ShardPlan> plan,
              std::function<void(ShardStore&, std::span<const uint32_t>)> per_shard,
              std::function<void(ReplyWriter&)> finish);
  // The plan of the keys args[first], args[first + step], ... (key i of the
  // plan is args[first + i * step]).
  std::shared_ptr<const ShardPlan> PlanArgs(size_t first, size_t step) const;
  // Suspends the connection until the returned function is called (once,
  // from any thread) with what writes the reply; then it goes on. Inside
  // EXEC (ShardSet::InlinePosts) FanOut and Defer run inline instead.
  std::function<void(std::function<void(ReplyWriter&)>)> Defer();
};

class CommandTable {
 public:
  static CommandTable& Get();
  void Register(const CommandSpec& spec);
  // Case-insensitive lookup; nullptr if unknown.
  const CommandSpec* Find(std::string_view name) const;
  const std::vector<CommandSpec>& all() const { return specs_; }
  void Freeze();  // builds the lookup index; called once at start

 private:
  std::vector<CommandSpec> specs_;
  std::vector<std::pair<std::string, size_t>> index_;  // sorted by name
};

// Registration functions of each family, called once at start.
void RegisterConnectionFamily(CommandTable& t);
void RegisterServerFamily(CommandTable& t);
void RegisterGenericFamily(CommandTable& t);
void RegisterStringFamily(CommandTable& t);
void RegisterHashFamily(CommandTable& t);
void RegisterFeatureFamily(CommandTable& t);
void RegisterTransactionFamily(CommandTable& t);
void RegisterAclFamily(CommandTable& t);
void RegisterClusterFamily(CommandTable& t);

// Standard error texts (Redis 7).
inline constexpr std::string_view kErrWrongType = "WRONGTYPE Operation against a key holding the wrong kind of value";
inline constexpr std::string_view kErrNotInt = "ERR value is not an integer or out of range";
inline constexpr std::string_view kErrSyntax = "ERR syntax error";
std::string ErrWrongArgs(std::string_view cmd);

// Helpers shared by families.
bool ParseI64(std::string_view s, int64_t* out);
bool ParseLongDouble(std::string_view s, long double* out);
bool EqualsNoCase(std::string_view a, std::string_view b);
// The entity type of an entity key: the part before the first ':' ("" when
// there is none). `user:42` -> `user`.
inline std::string_view EntityTypeOf(std::string_view key) {
  size_t colon = key.find(':');
  return colon == std::string_view::npos ? std::string_view() : key.substr(0, colon);
}

}  // namespace fkv
