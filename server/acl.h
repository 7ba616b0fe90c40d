// Access control lists, Redis 7's interface (docs/commands.md, "ACL";
// docs/operations.md, "Securing featurekv"): users with passwords (kept as
// SHA-256 only), a bitmap of the commands and subcommands they may run,
// key patterns, and the ACL LOG of refusals.
//
// A user is immutable once published: ACL SETUSER builds a changed copy
// and swaps it in, bumping an epoch. A connection keeps a shared pointer
// to its user and compares the epoch (one relaxed load) before every
// command, so a change reaches every connection at its next command
// without a lock on the hot path; connections of a deleted or disabled
// user are closed.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/resp_parser.h"
#include "storage/glob.h"

namespace fkv {

struct CommandSpec;

// Categories in Redis's order (ACL CAT), then featurekv's own.
inline constexpr const char* kAclCategoryNames[] = {
    "keyspace", "read",  "write", "set",       "sortedset",  "list",        "hash",      "string",
    "bitmap",   "hyperloglog", "geo", "stream", "pubsub",    "admin",       "fast",      "slow",
    "blocking", "dangerous",   "connection", "transaction", "scripting", "feature"};
inline constexpr size_t kAclCategories = sizeof(kAclCategoryNames) / sizeof(kAclCategoryNames[0]);
// The category bit of a name ("read", not "@read"); 0 when unknown.
uint32_t AclCategoryBit(std::string_view name);

// Every command the ACL knows: the command table's commands (id = their
// index) and then the subcommands of the containers (CLIENT LIST, CONFIG
// SET, ...), each with its categories. Built once.
class AclCommands {
 public:
  struct Entry {
    std::string fullname;  // "get", "client|list"
    uint32_t categories = 0;
    int parent = -1;            // the container's id, for a subcommand
    std::vector<size_t> subs;   // a container's subcommand ids
  };
  static const AclCommands& Get();
  size_t size() const { return entries_.size(); }
  const Entry& at(size_t id) const { return entries_[id]; }
  // Id of "get" or "client|list" (case-insensitive); -1 when unknown.
  int Find(std::string_view fullname) const;
  // The id a call is checked against: the subcommand args[1] of a
  // container, else the command itself.
  size_t IdOf(const CommandSpec& spec, const ArgList& args) const;
  // Ids sorted by full name (ACL LIST's single-command rules, ACL CAT).
  const std::vector<size_t>& by_name() const { return by_name_; }

 private:
  AclCommands();
  std::vector<Entry> entries_;
  std::vector<size_t> by_name_;
};

// Calls f(key) for every key argument of a call (the table's key
// positions, or the command's key_end for kCmdMovableKeys: FMGET's keys end
// at FEATURES). COMMAND GETKEYS, ACL key checks and MULTI's shard choice
// all use it.
template <class F>
void ForEachKeyArg(const CommandSpec& spec, const ArgList& args, F&& f);

struct AclUser {
  std::string name;
  bool on = false;
  bool nopass = false;
  bool allkeys = false;
  bool allchannels = false;
  bool all = false;     // every command allowed (+@all, nothing removed since): no lookup
  bool future = false;  // +@all (until -@all): ACL LIST starts from +@all, as Redis's reserved bit
  int sanitize = 0;     // 1 sanitize-payload, 2 skip-sanitize-payload: kept and shown, as Redis (no effect here)
  std::vector<std::string> passwords;  // SHA-256, lower-case hex, in the order added
  std::vector<std::string> keys;       // glob patterns (without "~")
  // The patterns compiled: "prefix*" (the usual form, "user:*") as a
  // prefix compare, the rest as globs.
  struct KeyMatcher {
    std::string prefix;
    bool prefix_only = false;
    GlobPattern glob;
    bool Match(std::string_view key) const {
      return prefix_only ? key.substr(0, prefix.size()) == prefix : glob.Match(key);
    }
  };
  std::vector<KeyMatcher> key_matchers;
  std::vector<std::string> channels;   // kept for Redis's syntax; featurekv has no pub/sub
  std::vector<uint64_t> allowed;       // one bit per AclCommands id

  explicit AclUser(std::string n);
  bool Allowed(size_t id) const { return (allowed[id >> 6] >> (id & 63)) & 1; }
  bool KeyAllowed(std::string_view key) const;
  bool CheckPassword(std::string_view pass) const;
  // Applies one rule; "" or the reason it is refused (Redis's texts).
  std::string Apply(std::string_view rule);
  // The rules that rebuild this user, as ACL LIST shows them (without
  // "user <name>").
  std::string Describe() const;
  // The command rules alone ("-@all +@read ..."), as ACL GETUSER shows them.
  std::string DescribeCommands() const;
  void SetCommand(size_t id, bool allow);  // the command and its subcommands
};

// The permission check of one call, as Redis orders it: the command's (or
// subcommand's) bit, then every key argument. On a refusal *object is the
// command's full name or the key refused.
enum class AclRefusal { kNone, kCommand, kKey };
AclRefusal CheckCall(const AclUser& u, const CommandSpec& spec, const ArgList& args, std::string_view* object);
inline constexpr std::string_view kAclKeyDenied =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

std::string Sha256Hex(std::string_view data);

struct AclLogEntry {
  uint64_t count = 1;
  std::string reason, context, object, username, client_info;
  int64_t created_ms = 0, updated_ms = 0;
};

class Acl {
 public:
  Acl();
  std::shared_ptr<const AclUser> Find(std::string_view name) const;
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  // True when new connections are authenticated as `default` (on, nopass).
  bool default_open() const { return default_open_.load(std::memory_order_acquire); }

  // ACL SETUSER: the rules are applied to a copy (or a new user, off and
  // without permissions), all or nothing. Returns "" or the error reply.
  std::string SetUser(std::string_view name, std::span<const std::string_view> rules);
  // ACL DELUSER: how many of the names existed and were removed.
  // ("default" is refused by the caller.)
  int DelUsers(std::span<const std::string_view> names);
  std::vector<std::string> Users() const;              // sorted
  std::vector<std::string> List() const;               // "user <name> <rules>", sorted
  // requirepass: the default user's only password ("" = nopass).
  void SetRequirePass(std::string_view pass);

  // The `user` directives of the conf file, or an aclfile's lines: parsed
  // into a new set of users that replaces the current one only when every
  // line is valid. Returns "" or the problem (with the line number).
  std::string LoadLines(const std::vector<std::string>& lines, const std::string& where);
  std::string LoadFile(const std::string& path);
  std::string SaveFile(const std::string& path) const;

  void Log(std::string_view reason, std::string_view object, std::string_view username,
           std::string client_info, int64_t now_ms);
  std::vector<AclLogEntry> LogEntries(size_t count) const;
  void ResetLog();
  void set_log_max(size_t n);

 private:
  void Publish();  // under mu_: epoch++, default_open_
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const AclUser>, std::less<>> users_;
  std::atomic<uint64_t> epoch_{1};
  std::atomic<bool> default_open_{true};
  std::deque<AclLogEntry> log_;  // newest first
  size_t log_max_ = 128;
};

}  // namespace fkv

#include "server/command.h"

namespace fkv {
template <class F>
void ForEachKeyArg(const CommandSpec& spec, const ArgList& args, F&& f) {
  const int argc = static_cast<int>(args.size());
  if (spec.flags & kCmdMovableKeys) {
    int end = spec.key_end(args);
    if (end < 0) end = argc;  // malformed (refused later): every argument is checked as a key
    for (int i = 1; i < end; i++) f(args[static_cast<size_t>(i)]);
    return;
  }
  if (spec.first_key <= 0) return;
  int last = spec.last_key < 0 ? argc + spec.last_key : spec.last_key;
  int step = spec.step > 0 ? spec.step : 1;
  for (int i = spec.first_key; i <= last && i < argc; i += step) f(args[static_cast<size_t>(i)]);
}
}  // namespace fkv
