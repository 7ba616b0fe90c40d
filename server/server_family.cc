// Server commands: COMMAND INFO CONFIG DBSIZE TIME FLUSHDB FLUSHALL SAVE
// BGSAVE LASTSAVE SHUTDOWN SLOWLOG, and Server::InfoText.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "server/allocator_stats.h"
#include <spdlog/spdlog.h>

#include "server/acl.h"
#include "server/command.h"
#include "server/connection.h"
#include "server/server.h"
#include "storage/shard_store.h"

namespace fkv {

namespace {

// User and system CPU seconds of one thread, from /proc (formatted as Redis
// prints rusage figures); zeros when the thread is unknown.
struct ThreadCpu {
  std::string user = "0.000000", sys = "0.000000";
};
ThreadCpu ReadThreadCpu(int tid) {
  ThreadCpu out;
  if (tid <= 0) return out;
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');  // the name may hold spaces; fields follow ") "
  if (close == std::string::npos) return out;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; fields >> f; i++) {  // field 3 is the state
    if (i == 14) utime = std::stoull(f);
    if (i == 15) {
      stime = std::stoull(f);
      break;
    }
  }
  long hz = sysconf(_SC_CLK_TCK);
  auto fmt = [hz](unsigned long long ticks) {
    char b[48];
    std::snprintf(b, sizeof b, "%llu.%06llu", ticks / static_cast<unsigned long long>(hz),
                  (ticks % static_cast<unsigned long long>(hz)) * 1000000ULL / static_cast<unsigned long long>(hz));
    return std::string(b);
  };
  out.user = fmt(utime);
  out.sys = fmt(stime);
  return out;
}

std::string Human(uint64_t bytes) {
  char buf[32];
  const char* units[] = {"B", "K", "M", "G", "T"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, u++;
  if (u == 0) std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.2f%s", v, units[u]);
  return buf;
}

std::vector<std::string> FlagNames(uint32_t f) {
  std::vector<std::string> v;
  if (f & kCmdWrite) v.push_back("write");
  if (f & kCmdReadonly) v.push_back("readonly");
  if (f & kCmdDenyOom) v.push_back("denyoom");
  if (f & kCmdAdmin) v.push_back("admin");
  if (f & kCmdNoAuth) v.push_back("no_auth");
  if (f & kCmdLoading) v.push_back("loading");
  if (f & kCmdStale) v.push_back("stale");
  if (f & kCmdFast) v.push_back("fast");
  if (f & kCmdMovableKeys) v.push_back("movablekeys");
  return v;
}

// Redis 7's key specs (docs/commands.md, COMMAND): where the keys are, for
// clients that route by them. Fixed positions become an index and a range;
// movable keys (FMGET: the keys end at FEATURES) an index and "unknown":
// such a client asks COMMAND GETKEYS, as the movablekeys flag says.
void WriteKeySpecs(ReplyWriter& out, const CommandSpec& s) {
  const bool movable = (s.flags & kCmdMovableKeys) != 0;
  if (!movable && s.first_key <= 0) return out.Array(0);
  out.Array(1);
  out.Map(3);
  out.Bulk("flags");
  const bool write = (s.flags & kCmdWrite) != 0;
  out.Array(2);
  out.Simple(write ? "RW" : "RO");
  out.Simple(write ? "UPDATE" : "ACCESS");
  out.Bulk("begin_search");
  out.Map(2);
  out.Bulk("type");
  out.Bulk("index");
  out.Bulk("spec");
  out.Map(1);
  out.Bulk("index");
  out.Integer(movable ? 1 : s.first_key);
  out.Bulk("find_keys");
  out.Map(2);
  out.Bulk("type");
  if (movable) {
    out.Bulk("unknown");
    out.Bulk("spec");
    return out.Map(0);
  }
  out.Bulk("range");
  out.Bulk("spec");
  out.Map(3);
  out.Bulk("lastkey");
  out.Integer(s.last_key >= 0 ? s.last_key - s.first_key : s.last_key);
  out.Bulk("keystep");
  out.Integer(s.step);
  out.Bulk("limit");
  out.Integer(0);
}

void WriteCommandInfo(ReplyWriter& out, const CommandSpec& s) {
  out.Array(10);
  out.Bulk(s.name);
  out.Integer(s.arity);
  auto flags = FlagNames(s.flags);
  out.Set(flags.size());
  for (auto& f : flags) out.Simple(f);
  out.Integer(s.first_key);
  out.Integer(s.last_key);
  out.Integer(s.step);
  // ACL categories, in Redis's order (server/acl.h).
  const uint32_t cats = AclCommands::Get().at(s.index).categories;
  out.Set(static_cast<size_t>(__builtin_popcount(cats)));
  for (size_t i = 0; i < kAclCategories; i++)
    if (cats & (uint32_t{1} << i)) out.Simple(std::string("@") + kAclCategoryNames[i]);
  out.Array(0);  // tips
  WriteKeySpecs(out, s);
  out.Array(0);  // subcommands
}

void WriteCommandDocs(ReplyWriter& out, const CommandSpec& s) {
  out.Bulk(s.name);
  out.Map(3);
  out.Bulk("summary");
  out.Bulk(s.summary);
  out.Bulk("since");
  out.Bulk("1.0.0");
  out.Bulk("group");
  out.Bulk(s.group);
}

void Command(CommandContext& c) {
  const auto& all = CommandTable::Get().all();
  if (c.args.size() == 1) {
    c.out.Array(all.size());
    for (const auto& s : all) WriteCommandInfo(c.out, s);
    return;
  }
  std::string_view sub = c.args[1];
  if (EqualsNoCase(sub, "COUNT") && c.args.size() == 2) return c.out.Integer(static_cast<int64_t>(all.size()));
  if (EqualsNoCase(sub, "INFO")) {
    if (c.args.size() == 2) {
      c.out.Array(all.size());
      for (const auto& s : all) WriteCommandInfo(c.out, s);
      return;
    }
    c.out.Array(c.args.size() - 2);
    for (size_t i = 2; i < c.args.size(); i++) {
      const CommandSpec* s = CommandTable::Get().Find(c.args[i]);
      if (s == nullptr) c.out.Null();  // Redis: a null bulk for an unknown name
      else WriteCommandInfo(c.out, *s);
    }
    return;
  }
  if (EqualsNoCase(sub, "DOCS")) {
    std::vector<const CommandSpec*> want;
    if (c.args.size() == 2) {
      for (const auto& s : all) want.push_back(&s);
    } else {
      for (size_t i = 2; i < c.args.size(); i++)
        if (const CommandSpec* s = CommandTable::Get().Find(c.args[i])) want.push_back(s);
    }
    c.out.Map(want.size());
    for (const CommandSpec* s : want) WriteCommandDocs(c.out, *s);
    return;
  }
  if (EqualsNoCase(sub, "GETKEYS")) {
    // As Redis 7: COMMAND GETKEYS command arg [arg ...], the key arguments
    // in order (docs/commands.md).
    if (c.args.size() < 4) return c.out.Error("ERR wrong number of arguments for 'command|getkeys' command");
    const CommandSpec* s = CommandTable::Get().Find(c.args[2]);
    if (s == nullptr) return c.out.Error("ERR Invalid command specified");
    if (s->first_key <= 0 && !(s->flags & kCmdMovableKeys)) return c.out.Error("ERR The command has no key arguments");
    const int argc = static_cast<int>(c.args.size()) - 2;
    if ((s->arity > 0 && argc != s->arity) || (s->arity < 0 && argc < -s->arity))
      return c.out.Error("ERR Invalid number of arguments specified for command");
    ArgList args(c.args.begin() + 2, c.args.end());
    if ((s->flags & kCmdMovableKeys) && s->key_end(args) < 0) return c.out.Error("ERR Invalid arguments specified for command");
    std::vector<std::string_view> keys;
    ForEachKeyArg(*s, args, [&](std::string_view k) { keys.push_back(k); });
    if (keys.empty()) return c.out.Error("ERR The command has no key arguments");
    c.out.Array(keys.size());
    for (std::string_view k : keys) c.out.Bulk(k);
    return;
  }
  if (EqualsNoCase(sub, "LIST") && c.args.size() == 2) {
    c.out.Array(all.size());
    for (const auto& s : all) c.out.Bulk(s.name);
    return;
  }
  c.out.Error("ERR unknown subcommand or wrong number of arguments for '" + std::string(sub) + "'. Try COMMAND HELP.");
}

void Info(CommandContext& c) {
  std::string section;
  for (size_t i = 1; i < c.args.size(); i++) section += (i > 1 ? " " : "") + std::string(c.args[i]);
  Server* server = c.server;
  auto figs = std::make_shared<std::vector<Server::ShardFigures>>(static_cast<size_t>(server->shards().size()));
  c.FanOut(
      server->shards().All(),
      [figs](int shard, ShardStore& st) {
        auto& f = (*figs)[static_cast<size_t>(shard)];
        f.keys = st.size();
        f.expires = st.expires_count();
        f.expired = st.stats().expired_keys;
        f.hits = st.stats().keyspace_hits;
        f.misses = st.stats().keyspace_misses;
        f.entities = st.entities();
      },
      [server, figs, section](ReplyWriter& out) { out.Verbatim(server->InfoText(section, *figs)); });
}

void DbSize(CommandContext& c) {
  Server* server = c.server;
  auto counts = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(server->shards().size()), 0);
  c.FanOut(
      server->shards().All(),
      [counts](int shard, ShardStore& st) { (*counts)[static_cast<size_t>(shard)] = static_cast<int64_t>(st.size()); },
      [counts](ReplyWriter& out) {
        int64_t n = 0;
        for (int64_t k : *counts) n += k;
        out.Integer(n);
      });
}

void Flush(CommandContext& c) {
  if (c.args.size() > 2) return c.out.Error(kErrSyntax);
  if (c.args.size() == 2 && !EqualsNoCase(c.args[1], "ASYNC") && !EqualsNoCase(c.args[1], "SYNC"))
    return c.out.Error(kErrSyntax);
  int64_t now = c.now_ms;
  std::string cmd(c.args[0]);
  for (char& ch : cmd) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  c.conn->Audit("flushall", {{"command", cmd}});
  c.FanOut(
      c.server->shards().All(),
      [now](int, ShardStore& st) {
        st.Clear();
        aof::LogWrite(st, aof::Kind::kFlush, now, {});
      },
      [](ReplyWriter& out) { out.Ok(); });
}

void Time(CommandContext& c) {
  int64_t us = NowUs();
  c.out.Array(2);
  c.out.Bulk(std::to_string(us / 1000000));
  c.out.Bulk(std::to_string(us % 1000000));
}


void Shutdown(CommandContext& c) {
  Server::SaveMode mode = Server::SaveMode::kDefault;
  bool force = false;
  for (size_t i = 1; i < c.args.size(); i++) {
    std::string_view a = c.args[i];
    if (EqualsNoCase(a, "NOSAVE")) mode = Server::SaveMode::kNoSave;
    else if (EqualsNoCase(a, "SAVE")) mode = Server::SaveMode::kSave;
    else if (EqualsNoCase(a, "FORCE")) force = true;
    else if (!EqualsNoCase(a, "NOW")) return c.out.Error(kErrSyntax);
  }
  std::string reason = "SHUTDOWN command from client id=" + std::to_string(c.conn->id());
  std::string args;
  for (size_t i = 1; i < c.args.size(); i++) args += (i > 1 ? " " : "") + std::string(c.args[i]);
  c.conn->Audit("shutdown", {{"arguments", args}});
  Server* server = c.server;
  auto reply = c.Defer();  // no reply on success: the connection just closes
  server->ShutdownWithSave(reason, mode, [server, reason, force, reply](const std::string& err) {
    if (force) return server->Shutdown(reason + " (FORCE, the snapshot failed: " + err + ")");
    reply([](ReplyWriter& out) { out.Error("ERR Errors trying to SHUTDOWN. Check logs."); });
  });
}

void Save(CommandContext& c) {
  if (c.server->snapshots().in_progress()) return c.out.Error("ERR Background save already in progress");
  auto reply = c.Defer();
  c.server->snapshots().Save([reply](const std::string& err) {
    reply([err](ReplyWriter& out) {
      if (err.empty()) out.Simple("OK");
      else out.Error("ERR " + err);
    });
  });
}

void BgSave(CommandContext& c) {
  bool schedule = false;
  if (c.args.size() > 2) return c.out.Error(kErrSyntax);
  if (c.args.size() == 2) {
    if (!EqualsNoCase(c.args[1], "SCHEDULE")) return c.out.Error(kErrSyntax);
    schedule = true;
  }
  SnapshotManager& snaps = c.server->snapshots();
  if (snaps.in_progress()) {
    if (!schedule) return c.out.Error("ERR Background save already in progress");
    snaps.Save(nullptr);
    return c.out.Simple("Background saving scheduled");
  }
  snaps.Save(nullptr);
  c.out.Simple("Background saving started");
}

void LastSave(CommandContext& c) { c.out.Integer(c.server->snapshots().figures().last_save_ms / 1000); }

// SLOWLOG: every shard keeps the newest slow commands it ran; a read merges
// them by id (process-wide, so newest first overall) and shows at most
// slowlog-max-len (docs/commands.md).
void Slowlog(CommandContext& c) {
  std::string_view sub = c.args[1];
  Server* server = c.server;
  const size_t max_len = server->config().slowlog_max_len();
  // Redis 7.0: HELP, LEN and RESET take no argument (the command table's
  // arity check); GET takes at most one (its own check).
  auto wrong_args = [&](const char* name) {
    if (std::string_view(name) != "get")
      return c.out.Error(std::string("ERR wrong number of arguments for 'slowlog|") + name + "' command");
    c.out.Error("ERR unknown subcommand or wrong number of arguments for '" + std::string(sub.substr(0, 128)) +
                "'. Try SLOWLOG HELP.");
  };
  if (EqualsNoCase(sub, "HELP")) {
    if (c.args.size() != 2) return wrong_args("help");
    static const char* kHelp[] = {
        "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET [<count>]",
        "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
        "    Entries are made of:",
        "    id, timestamp, time in microseconds, arguments array, client IP and port,",
        "    client name",
        "LEN",
        "    Return the length of the slowlog.",
        "RESET",
        "    Reset the slowlog.",
        "HELP",
        "    Prints this help."};
    c.out.Array(std::size(kHelp));
    for (const char* l : kHelp) c.out.Simple(l);
    return;
  }
  if (EqualsNoCase(sub, "RESET")) {
    if (c.args.size() != 2) return wrong_args("reset");
    c.FanOut(
        server->shards().All(), [server](int shard, ShardStore&) { server->shards().shard(shard).slowlog.Reset(); },
        [](ReplyWriter& out) { out.Ok(); });
    return;
  }
  if (EqualsNoCase(sub, "LEN")) {
    if (c.args.size() != 2) return wrong_args("len");
    auto lens = std::make_shared<std::vector<size_t>>(static_cast<size_t>(server->shards().size()), 0);
    c.FanOut(
        server->shards().All(),
        [server, lens](int shard, ShardStore&) {
          (*lens)[static_cast<size_t>(shard)] = server->shards().shard(shard).slowlog.entries().size();
        },
        [lens, max_len](ReplyWriter& out) {
          size_t n = 0;
          for (size_t l : *lens) n += l;
          out.Integer(static_cast<int64_t>(std::min(n, max_len)));
        });
    return;
  }
  if (EqualsNoCase(sub, "GET")) {
    if (c.args.size() > 3) return wrong_args("get");
    int64_t count = 10;
    if (c.args.size() == 3) {
      if (!ParseI64(c.args[2], &count) || count < -1)  // one message for both, as Redis
        return c.out.Error("ERR count should be greater than or equal to -1");
    }
    size_t want = std::min(count == -1 ? SIZE_MAX : static_cast<size_t>(count), max_len);
    auto got = std::make_shared<std::vector<std::vector<SlowLogEntry>>>(static_cast<size_t>(server->shards().size()));
    c.FanOut(
        server->shards().All(),
        [server, got, want](int shard, ShardStore&) {
          const auto& log = server->shards().shard(shard).slowlog.entries();
          auto& mine = (*got)[static_cast<size_t>(shard)];
          for (size_t i = 0; i < log.size() && i < want; i++) mine.push_back(log[i]);
        },
        [got, want](ReplyWriter& out) {
          std::vector<SlowLogEntry> all;
          for (auto& v : *got) all.insert(all.end(), std::make_move_iterator(v.begin()), std::make_move_iterator(v.end()));
          std::sort(all.begin(), all.end(), [](const SlowLogEntry& a, const SlowLogEntry& b) { return a.id > b.id; });
          if (all.size() > want) all.resize(want);
          out.Array(all.size());
          for (const auto& e : all) {
            out.Array(6);
            out.Integer(static_cast<int64_t>(e.id));
            out.Integer(e.time_s);
            out.Integer(static_cast<int64_t>(e.duration_us));
            out.Array(e.args.size());
            for (const auto& a : e.args) out.Bulk(a);
            out.Bulk(e.peer);
            out.Bulk(e.name);
          }
        });
    return;
  }
  c.out.Error("ERR unknown subcommand '" + std::string(sub) + "'. Try SLOWLOG HELP.");
}

void ConfigCmd(CommandContext& c) {
  std::string_view sub = c.args[1];
  fkv::Config& cfg = c.server->config();
  if (EqualsNoCase(sub, "GET") && c.args.size() >= 3) {
    std::vector<std::pair<std::string, std::string>> all;
    std::set<std::string> seen;
    for (size_t i = 2; i < c.args.size(); i++)
      for (auto& kv : cfg.Get(c.args[i]))
        if (seen.insert(kv.first).second) all.push_back(kv);
    c.out.Map(all.size());
    for (auto& [k, v] : all) {
      c.out.Bulk(k);
      c.out.Bulk(v);
    }
    return;
  }
  if (EqualsNoCase(sub, "SET") && c.args.size() >= 4 && c.args.size() % 2 == 0) {
    // Validate all first so that a failure changes nothing.
    for (size_t i = 2; i < c.args.size(); i += 2) {
      fkv::Config probe;
      std::string err = probe.Set(c.args[i], {std::string(c.args[i + 1])}, true);
      if (err.rfind("unknown directive", 0) == 0)
        return c.out.Error("ERR Unknown option or number of arguments for CONFIG SET - '" + std::string(c.args[i]) + "'");
      if (!err.empty())
        return c.out.Error("ERR CONFIG SET failed (possibly related to argument '" + std::string(c.args[i]) + "') - " + err);
    }
    // Encryption keys: every named file must hold a key, or nothing changes.
    std::vector<std::pair<bool, std::shared_ptr<const crypt::Key>>> key_changes;  // (current?, key)
    for (size_t i = 2; i < c.args.size(); i += 2) {
      bool current = EqualsNoCase(c.args[i], "snapshot-encryption-key-file");
      if (!current && !EqualsNoCase(c.args[i], "snapshot-encryption-previous-key-file")) continue;
      std::shared_ptr<const crypt::Key> k;
      if (!c.args[i + 1].empty())
        if (std::string err = crypt::ReadKeyFile(std::string(c.args[i + 1]), &k); !err.empty())
          return c.out.Error("ERR CONFIG SET failed (possibly related to argument '" + std::string(c.args[i]) + "') - " +
                             err);
      key_changes.emplace_back(current, std::move(k));
    }
    // TLS directives: a new context for new connections, or nothing changes.
    std::vector<std::pair<std::string, std::string>> tls_old;
    for (size_t i = 2; i < c.args.size(); i += 2) {
      std::string name(c.args[i]);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (name.rfind("tls-", 0) == 0) tls_old.emplace_back(name, cfg.GetString(name));
    }
    if (!tls_old.empty() && c.server->tls_port() > 0) {
      std::vector<std::pair<std::string, std::string>> all_old;  // every directive of the call, to undo
      for (size_t i = 2; i < c.args.size(); i += 2) {
        std::string name(c.args[i]);
        for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        auto now = cfg.Get(name);  // also an alias's value
        if (!now.empty()) all_old.emplace_back(name, now.front().second);
      }
      for (size_t i = 2; i < c.args.size(); i += 2) cfg.Set(c.args[i], {std::string(c.args[i + 1])}, true);
      if (std::string err = c.server->ReloadTls(); !err.empty()) {
        for (auto it = all_old.rbegin(); it != all_old.rend(); ++it) cfg.Set(it->first, {it->second}, true);
        spdlog::warn("CONFIG SET: TLS configuration not updated: {}", err);
        return c.out.Error("ERR CONFIG SET failed (possibly related to argument '" + tls_old.front().first +
                           "') - Unable to update TLS configuration. Check server logs.");
      }
    }
    for (size_t i = 2; i < c.args.size(); i += 2) {
      cfg.Set(c.args[i], {std::string(c.args[i + 1])}, true);
      c.conn->Audit("config_set", {{"name", std::string(c.args[i])}, {"value", RedactConfig(c.args[i], c.args[i + 1])}});
      // Directives the ACL keeps: requirepass is the default user's password.
      if (EqualsNoCase(c.args[i], "requirepass")) c.server->acl().SetRequirePass(c.args[i + 1]);
      if (EqualsNoCase(c.args[i], "snapshot-encryption-key-file") ||
          EqualsNoCase(c.args[i], "snapshot-encryption-previous-key-file")) {
        auto& [current, key] = key_changes.front();
        current ? c.server->keys().SetCurrent(std::move(key)) : c.server->keys().SetPrevious(std::move(key));
        key_changes.erase(key_changes.begin());
      }
      if (EqualsNoCase(c.args[i], "acllog-max-len"))
        c.server->acl().set_log_max(static_cast<size_t>(std::stoull(std::string(c.args[i + 1]))));
    }
    return c.out.Ok();
  }
  if (EqualsNoCase(sub, "RESETSTAT") && c.args.size() == 2) {
    Server* server = c.server;
    server->stat_reset_ms = static_cast<uint64_t>(c.now_ms);
    server->total_connections = 0;
    server->rejected_connections = 0;
    c.FanOut(
        server->shards().All(),
        [server](int shard, ShardStore& st) {
          st.stats() = ShardStats{};
          server->shards().shard(shard).command_stats->Reset();
          auto& k = server->shards().shard(shard).counters;
          k.commands = 0;
          k.net_input = 0;
          k.net_output = 0;
        },
        [](ReplyWriter& out) { out.Ok(); });
    return;
  }
  if (EqualsNoCase(sub, "REWRITE")) return c.out.Error("ERR CONFIG REWRITE is not supported");
  std::string s(sub);
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (s == "GET" || s == "SET" || s == "RESETSTAT") {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return c.out.Error("ERR wrong number of arguments for 'config|" + s + "' command");
  }
  c.out.Error("ERR unknown subcommand '" + std::string(sub) + "'. Try CONFIG HELP.");
}

}  // namespace

std::string Server::InfoText(const std::string& section_arg, const std::vector<ShardFigures>& figs) {
  std::set<std::string> want;
  {
    std::istringstream in(section_arg);
    std::string w;
    while (in >> w) {
      for (char& ch : w) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      want.insert(w);
    }
  }
  bool all = want.empty() || want.count("all") || want.count("everything") || want.count("default");
  auto on = [&](const char* s) { return all || want.count(s) > 0; };
  ShardFigures tot;
  for (const auto& f : figs) {
    tot.keys += f.keys;
    tot.expires += f.expires;
    tot.expired += f.expired;
    tot.hits += f.hits;
    tot.misses += f.misses;
    tot.entities += f.entities;
  }
  uint64_t cmds = 0, in = 0, out = 0;
  for (int i = 0; i < shards_->size(); i++) {
    auto& k = shards_->shard(i).counters;
    cmds += k.commands.load(std::memory_order_relaxed);
    in += k.net_input.load(std::memory_order_relaxed);
    out += k.net_output.load(std::memory_order_relaxed);
  }
  int64_t now = NowMs();
  std::string s;
  auto line = [&](const std::string& k, const std::string& v) { s += k + ":" + v + "\r\n"; };
  auto num = [&](const std::string& k, uint64_t v) { line(k, std::to_string(v)); };
  if (on("server")) {
    s += "# Server\r\n";
    line("redis_version", "7.0.0");
    line("featurekv_version", FKV_VERSION);
    line("redis_mode", cluster_ ? "cluster" : "standalone");
    line("os", "Linux");
    line("arch_bits", "64");
    num("process_id", static_cast<uint64_t>(getpid()));
    num("tcp_port", static_cast<uint64_t>(port_));
    num("server_time_usec", static_cast<uint64_t>(NowUs()));
    num("uptime_in_seconds", static_cast<uint64_t>((now - start_ms_) / 1000));
    num("uptime_in_days", static_cast<uint64_t>((now - start_ms_) / 86'400'000));
    num("hz", static_cast<uint64_t>(config_.hz()));
    num("shards", static_cast<uint64_t>(shards_->size()));
    line("config_file", config_.config_file());
    s += "\r\n";
  }
  if (on("clients")) {
    s += "# Clients\r\n";
    num("connected_clients", connected_clients.load());
    num("maxclients", config_.maxclients());
    num("blocked_clients", 0);
    s += "\r\n";
  }
  if (on("memory")) {
    AllocatorStats a = ReadAllocatorStats();
    s += "# Memory\r\n";
    num("used_memory", a.allocated);
    line("used_memory_human", Human(a.allocated));
    num("used_memory_rss", a.resident);
    line("used_memory_rss_human", Human(a.resident));
    num("maxmemory", config_.maxmemory());
    line("maxmemory_human", Human(config_.maxmemory()));
    line("maxmemory_policy", "noeviction");
    line("mem_allocator", a.name);
    s += "\r\n";
  }
  if (on("cpu")) {
    s += "# CPU\r\n";
    auto tv = [](const timeval& t) {
      char b[48];
      std::snprintf(b, sizeof b, "%ld.%06ld", static_cast<long>(t.tv_sec), static_cast<long>(t.tv_usec));
      return std::string(b);
    };
    rusage self{}, children{};
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    line("used_cpu_sys", tv(self.ru_stime));
    line("used_cpu_user", tv(self.ru_utime));
    line("used_cpu_sys_children", tv(children.ru_stime));
    line("used_cpu_user_children", tv(children.ru_utime));
    // Redis's "main thread" is the one that runs commands: here shard 0.
    // Every shard thread is listed after it.
    for (int i = 0; i < shards_->size(); i++) {
      ThreadCpu t = ReadThreadCpu(shards_->shard(i).tid.load(std::memory_order_acquire));
      if (i == 0) {
        line("used_cpu_sys_main_thread", t.sys);
        line("used_cpu_user_main_thread", t.user);
      }
      line("used_cpu_sys_shard" + std::to_string(i), t.sys);
      line("used_cpu_user_shard" + std::to_string(i), t.user);
    }
    s += "\r\n";
  }
  if (on("persistence")) {
    s += "# Persistence\r\n";
    PersistenceFigures p = snapshots_->figures();
    num("loading", 0);
    num("rdb_changes_since_last_save", snapshots_->changes_since_save());
    num("rdb_bgsave_in_progress", p.in_progress ? 1 : 0);
    num("rdb_last_save_time", static_cast<uint64_t>(p.last_save_ms / 1000));
    line("rdb_last_bgsave_status", p.last_ok ? "ok" : "err");
    line("rdb_last_bgsave_time_sec", std::to_string(p.last_duration_ms < 0 ? -1 : p.last_duration_ms / 1000));
    line("rdb_current_bgsave_time_sec",
         std::to_string(p.in_progress ? (NowMs() - p.current_start_ms) / 1000 : -1));
    line("rdb_saves", std::to_string(p.saves_ok));
    line("snapshot_file", config_.GetString("dir") + "/" + config_.GetString("dbfilename"));
    line("snapshot_last_duration_ms", std::to_string(p.last_duration_ms));
    num("snapshot_last_bytes", p.last_bytes);
    num("snapshot_last_records", p.last_records);
    num("snapshot_saves_failed", p.saves_failed);
    line("snapshot_last_error", p.last_error);
    line("snapshot_loaded_from", p.loaded_from);
    num("snapshot_loaded_records", p.loaded_records);
    num("snapshot_load_ms", static_cast<uint64_t>(p.load_duration_ms));
    AofFigures a = aof_->figures();
    num("aof_enabled", a.enabled ? 1 : 0);
    num("aof_rewrite_in_progress", 0);
    line("aof_last_write_status", a.last_write_ok ? "ok" : "err");
    if (a.enabled) {
      line("aof_fsync", a.fsync);
      num("aof_current_generation", a.generation);
      num("aof_appended_bytes", a.appended_bytes);
      num("aof_buffer_length", a.appended_bytes - std::min(a.appended_bytes, a.written_bytes));
      num("aof_pending_fsync_bytes", a.appended_bytes - std::min(a.appended_bytes, a.synced_bytes));
      line("aof_last_fsync_ms", std::to_string(a.last_fsync_ms));
      line("aof_last_error", a.last_error);
      num("aof_replayed_records", a.replayed_records);
    }
    s += "\r\n";
  }
  if (on("stats")) {
    s += "# Stats\r\n";
    num("total_connections_received", total_connections.load());
    num("total_commands_processed", cmds);
    num("instantaneous_ops_per_sec", ops_per_sec.load());
    num("total_net_input_bytes", in);
    num("total_net_output_bytes", out);
    num("rejected_connections", rejected_connections.load());
    num("expired_keys", tot.expired);
    num("keyspace_hits", tot.hits);
    num("keyspace_misses", tot.misses);
    s += "\r\n";
  }
  if (on("ingest")) {
    s += "# Ingest\r\n";
    auto reg = registry();
    line("registry_version", reg->version());
    num("registry_views", reg->views().size());
    KafkaIngest* k = kafka();
    num("kafka_enabled", k ? 1 : 0);
    if (k) {
      line("kafka_bootstrap", k->bootstrap());
      line("kafka_mode", k->group_mode() ? "group" : "sidecar");
      line("kafka_group", config_.GetString("kafka-group"));
      num("kafka_rebalances", k->rebalances());
      num("kafka_partitions", k->Partitions().size());
      num("kafka_messages", k->messages());
      num("kafka_messages_per_sec", kafka_messages_per_sec.load());
      num("kafka_stale_dropped", k->stale_dropped());
      num("kafka_dead_lettered", k->dead_lettered());
      auto parts = k->Partitions();
      if (repartitioner_) {  // cluster mode: the sources' partitions this node repartitions, too
        auto src = repartitioner_->Partitions();
        parts.insert(parts.end(), src.begin(), src.end());
      }
      // Read after the positions: a position counts a batch that is being
      // planned or applied until this falls back to 0 (docs/operations.md).
      num("kafka_batches_in_flight", static_cast<uint64_t>(k->batches_in_flight()));
      int64_t lag = 0;
      for (auto& p : parts)
        if (p.high >= 0) lag += std::max<int64_t>(0, p.high - std::max<int64_t>(0, p.position));
      num("kafka_lag", static_cast<uint64_t>(lag));
      double p50, p99, mx;
      k->DelayPercentiles(&p50, &p99, &mx);
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.1f", p50);
      line("e2s_delay_p50_ms", buf);
      std::snprintf(buf, sizeof buf, "%.1f", p99);
      line("e2s_delay_p99_ms", buf);
      std::snprintf(buf, sizeof buf, "%.1f", mx);
      line("e2s_delay_max_ms", buf);
      for (auto& p : parts) {
        int64_t pos = std::max<int64_t>(0, p.position);
        line("partition_" + p.topic + "_" + std::to_string(p.partition),
             "position=" + std::to_string(pos) + ",committed=" + std::to_string(p.committed) +
                 ",high=" + std::to_string(p.high) +
                 ",lag=" + std::to_string(p.high >= 0 ? std::max<int64_t>(0, p.high - pos) : 0));
      }
      // FREPLAY's progress (docs/commands.md).
      KafkaIngest::ReplayFigures rp = k->replay();
      line("replay_status", rp.status);
      if (rp.status != "none") {
        std::string views;
        for (const auto& v : rp.views) views += (views.empty() ? "" : ",") + v;
        line("replay_source", rp.req.source);
        num("replay_resumed", rp.resumed ? 1 : 0);
        line("replay_views", views);
        line("replay_from_ms", std::to_string(rp.req.from_ms));
        line("replay_to_ms", std::to_string(rp.req.to_ms));
        num("replay_read", rp.read);
        num("replay_applied", rp.applied);
        num("replay_out_of_range", rp.out_of_range);
        num("replay_rejected", rp.rejected);
        num("replay_partitions", static_cast<uint64_t>(rp.partitions));
        num("replay_partitions_done", static_cast<uint64_t>(rp.partitions_done));
        line("replay_started_ms", std::to_string(rp.started_ms));
        line("replay_finished_ms", std::to_string(rp.finished_ms));
        if (!rp.error.empty()) line("replay_error", rp.error);
      }
      std::string released;
      for (const auto& v : k->released()) released += (released.empty() ? "" : ",") + v;
      line("replay_released_views", released);
    }
    num("events_applied", ingest_stats.events_applied.load());
    num("events_applied_per_sec", events_applied_per_sec.load());
    num("events_rejected", ingest_stats.events_rejected.load());
    for (auto& [reason, n] : ingest_stats.rejected_by_reason()) num("rejected_" + reason, n);
    num("events_too_old", ingest_stats.events_too_old.load());
    num("events_future", ingest_stats.events_future.load());
    num("tombstones", ingest_stats.tombstones.load());
    for (auto& [vr, n] : ingest_stats.skipped_by_view()) num("view_skipped_" + vr, n);
    for (auto& [v, n] : ingest_stats.join_missing_by_view()) num("join_missing_" + v, n);
    num("entities", tot.entities);
    s += "\r\n";
  }
  // Not in the default INFO, as Redis: only by name, `all` or `everything`.
  auto named = [&](const char* sec) { return want.count(sec) || want.count("all") || want.count("everything"); };
  if (named("commandstats") || named("latencystats")) {
    const auto& specs = CommandTable::Get().all();
    std::vector<double> qs = config_.latency_percentiles();
    std::string cs = "# Commandstats\r\n", ls = "# Latencystats\r\n";
    for (const CommandTotals& t : SumCommandStats(shards_->AllCommandStats(), specs.size())) {
      const uint64_t calls = t.calls, failed = t.failed, rejected = t.rejected;
      const HistogramSnapshot& h = t.latency;
      if (calls == 0 && rejected == 0 && failed == 0) continue;
      char buf[256];
      uint64_t usec = t.nanos / 1000;
      std::snprintf(buf, sizeof buf, "calls=%llu,usec=%llu,usec_per_call=%.2f,rejected_calls=%llu,failed_calls=%llu",
                    static_cast<unsigned long long>(calls), static_cast<unsigned long long>(usec),
                    calls ? static_cast<double>(usec) / static_cast<double>(calls) : 0.0,
                    static_cast<unsigned long long>(rejected), static_cast<unsigned long long>(failed));
      cs += "cmdstat_" + std::string(specs[t.index].name) + ":" + buf + "\r\n";
      if (h.total == 0 || qs.empty()) continue;
      std::string row;
      for (double q : qs) {
        std::snprintf(buf, sizeof buf, "%sp%g=%.3f", row.empty() ? "" : ",", q, static_cast<double>(h.Percentile(q)) / 1000.0);
        row += buf;
      }
      ls += "latency_percentiles_usec_" + std::string(specs[t.index].name) + ":" + row + "\r\n";
    }
    if (named("commandstats")) s += cs + "\r\n";
    if (named("latencystats")) s += ls + "\r\n";
  }
  if (on("cluster")) {
    s += "# Cluster\r\n";
    line("cluster_enabled", cluster_ ? "1" : "0");
    if (cluster_) {
      // The repartition path (docs/operations.md, "Cluster mode").
      const int nparts = std::stoi(config_.GetString("cluster-repartition-partitions"));
      int restoring = 0;
      for (int p = 0; p < nparts; p++)
        restoring += cluster_held_[static_cast<size_t>(p)].load() == PartitionHeld::kRestoring ? 1 : 0;
      line("cluster_restoring_partitions", std::to_string(restoring));
      line("cluster_records_sent", std::to_string(repartitioner_ ? repartitioner_->records_sent() : 0));
      line("cluster_records_applied", std::to_string(kafka_ ? kafka_->messages() : 0));
      line("cluster_duplicates_dropped", std::to_string(kafka_ ? kafka_->duplicates_dropped() : 0));
      line("cluster_source_messages", std::to_string(repartitioner_ ? repartitioner_->messages() : 0));
      line("cluster_direct_records_sent", std::to_string(cluster_log_ ? cluster_log_->sent() : 0));
      line("cluster_writes_run", std::to_string(kafka_ ? kafka_->commands_run() : 0));
      line("cluster_writes_run_parked", std::to_string(kafka_ ? kafka_->commands_parked() : 0));
      line("cluster_writes_waiting", std::to_string(cluster_log_ ? cluster_log_->writes_pending() : 0));
    }
    s += "\r\n";
  }
  if (on("keyspace")) {
    s += "# Keyspace\r\n";
    if (tot.keys > 0) line("db0", "keys=" + std::to_string(tot.keys) + ",expires=" + std::to_string(tot.expires) + ",avg_ttl=0");
    s += "\r\n";
  }
  while (s.size() >= 2 && s.compare(s.size() - 2, 2, "\r\n") == 0 && s.size() >= 4 &&
         s.compare(s.size() - 4, 4, "\r\n\r\n") == 0)
    s.resize(s.size() - 2);
  return s;
}

void RegisterServerFamily(CommandTable& t) {
  const uint32_t A = kCmdAdmin, M = kCmdMultiShard, L = kCmdLoading | kCmdStale;
  t.Register({"command", -1, L, 0, 0, 0, Command, "server", "Returns detailed information about all commands."});
  t.Register({"info", -1, L | M, 0, 0, 0, Info, "server", "Returns information and statistics about the server."});
  t.Register({"config", -2, A | L, 0, 0, 0, ConfigCmd, "server", "A container for server configuration commands."});
  t.Register({"dbsize", 1, kCmdReadonly | kCmdFast | M, 0, 0, 0, DbSize, "server", "Returns the number of keys in the database."});
  t.Register({"time", 1, kCmdFast | L, 0, 0, 0, Time, "server", "Returns the server time."});
  t.Register({"flushdb", -1, kCmdWrite | M, 0, 0, 0, Flush, "server", "Removes all keys from the current database."});
  t.Register({"flushall", -1, kCmdWrite | M, 0, 0, 0, Flush, "server", "Removes all keys from all databases."});
  t.Register({"save", 1, A | kCmdNoMulti, 0, 0, 0, Save, "server", "Saves a snapshot and replies when it is durable (serving goes on)."});
  t.Register({"bgsave", -1, A, 0, 0, 0, BgSave, "server", "Starts a snapshot in the background."});
  t.Register({"lastsave", 1, L, 0, 0, 0, LastSave, "server", "Returns the Unix timestamp of the last successful save."});
  t.Register({"shutdown", -1, A | L | kCmdNoMulti, 0, 0, 0, Shutdown, "server", "Synchronously saves the database(s) to disk and shuts down the server."});
  t.Register({"slowlog", -2, A, 0, 0, 0, Slowlog, "server", "A container for slow log commands."});
}

}  // namespace fkv
