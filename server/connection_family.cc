// Connection commands: PING ECHO HELLO AUTH SELECT QUIT RESET CLIENT. They act
// on the calling connection (or, for CLIENT LIST/KILL, fan out to the shards
// that are home to the connections).
#include <algorithm>
#include <cctype>

#include "server/command.h"
#include "server/connection.h"
#include "server/server.h"

namespace fkv {

namespace {

void Ping(CommandContext& c) {
  if (c.args.size() > 2) return c.out.Error(ErrWrongArgs("ping"));
  if (c.args.size() == 2) return c.out.Bulk(c.args[1]);
  c.out.Simple("PONG");
}

void Echo(CommandContext& c) { c.out.Bulk(c.args[1]); }

void WriteHelloMap(CommandContext& c) {
  c.out.Map(7);
  c.out.Bulk("server");
  c.out.Bulk("featurekv");
  c.out.Bulk("version");
  c.out.Bulk(FKV_VERSION);
  c.out.Bulk("proto");
  c.out.Integer(c.conn->protocol());
  c.out.Bulk("id");
  c.out.Integer(static_cast<int64_t>(c.conn->id()));
  c.out.Bulk("mode");
  c.out.Bulk("standalone");
  c.out.Bulk("role");
  c.out.Bulk("master");
  c.out.Bulk("modules");
  c.out.Array(0);
}

bool ValidClientName(std::string_view n) {
  return std::all_of(n.begin(), n.end(), [](char ch) { return ch > ' ' && ch <= '~'; });
}

// AUTH [user] pass (and HELLO's AUTH): logs the connection in, or writes
// Redis's error and logs the failure in the ACL LOG.
bool TryAuth(CommandContext& c, std::string_view user, std::string_view pass) {
  Acl& acl = c.server->acl();
  if (user.empty()) {
    if (acl.default_open()) {
      c.out.Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
      return false;
    }
    user = "default";
  }
  auto u = acl.Find(user);
  if (u == nullptr || !u->on || !u->CheckPassword(pass)) {
    int64_t now = NowMs();
    acl.Log("auth", "AUTH", user, c.conn->Describe(now), now);
    c.conn->Audit("auth_failure", {}, user);
    c.out.Error("WRONGPASS invalid username-password pair or user is disabled.");
    return false;
  }
  c.conn->LogIn(std::move(u));
  return true;
}

void Auth(CommandContext& c) {
  if (c.args.size() > 3) return c.out.Error(kErrSyntax);
  bool ok = c.args.size() == 2 ? TryAuth(c, "", c.args[1]) : TryAuth(c, c.args[1], c.args[2]);
  if (ok) c.out.Ok();
}

void Hello(CommandContext& c) {
  int proto = c.conn->protocol();
  size_t i = 1;
  if (c.args.size() >= 2) {
    int64_t v;
    if (!ParseI64(c.args[1], &v)) return c.out.Error("ERR Protocol version is not an integer or out of range");
    if (v < 2 || v > 3) return c.out.Error("NOPROTO unsupported protocol version");
    proto = static_cast<int>(v);
    i = 2;
  }
  std::string_view setname;
  bool have_name = false;
  for (; i < c.args.size(); i++) {
    bool more = i + 1 < c.args.size();
    if (EqualsNoCase(c.args[i], "AUTH") && i + 2 < c.args.size()) {
      if (!TryAuth(c, c.args[i + 1], c.args[i + 2])) return;
      i += 2;
    } else if (EqualsNoCase(c.args[i], "SETNAME") && more) {
      setname = c.args[++i];
      have_name = true;
      if (!ValidClientName(setname))
        return c.out.Error("ERR Client names cannot contain spaces, newlines or special characters.");
    } else {
      return c.out.Error("ERR Syntax error in HELLO option '" + std::string(c.args[i]) + "'");
    }
  }
  if (!c.conn->authenticated() && !c.server->acl().default_open())
    return c.out.Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
  if (have_name) c.conn->set_name(std::string(setname));
  c.conn->set_protocol(proto);
  WriteHelloMap(c);
}

void Select(CommandContext& c) {
  int64_t db;
  if (!ParseI64(c.args[1], &db)) return c.out.Error(kErrNotInt);
  if (db != 0) return c.out.Error("ERR DB index is out of range");
  c.out.Ok();
}

void Quit(CommandContext& c) {
  c.out.Ok();
  c.conn->CloseAfterReply();
}

void Reset(CommandContext& c) {
  c.conn->tx().Clear();  // as Redis: discards MULTI, forgets WATCH
  c.conn->set_protocol(2);
  c.conn->set_name("");
  // As Redis: back to the default user, authenticated only when it needs no password.
  c.conn->LogOut();
  if (c.server->acl().default_open()) c.conn->LogIn(c.server->acl().Find("default"));
  c.out.Simple("RESET");
}

void ClientList(CommandContext& c, std::vector<uint64_t> ids) {
  Server* server = c.server;
  auto lines = std::make_shared<std::vector<std::string>>(static_cast<size_t>(server->shards().size()));
  int64_t now = c.now_ms;
  c.FanOut(
      server->shards().All(),
      [server, lines, ids, now](int shard, ShardStore&) {
        std::vector<Connection*> conns(server->shards().shard(shard).clients.begin(), server->shards().shard(shard).clients.end());
        std::sort(conns.begin(), conns.end(), [](Connection* a, Connection* b) { return a->id() < b->id(); });
        for (Connection* conn : conns) {
          if (!ids.empty() && std::find(ids.begin(), ids.end(), conn->id()) == ids.end()) continue;
          (*lines)[static_cast<size_t>(shard)] += conn->Describe(now) + "\n";
        }
      },
      [lines](ReplyWriter& out) {
        std::string all;
        for (auto& l : *lines) all += l;
        out.Verbatim(all);
      });
}

// CLIENT KILL addr | CLIENT KILL [ID id] [ADDR a] [LADDR a] [USER u] [SKIPME yes|no]
void ClientKill(CommandContext& c) {
  struct Filter {
    uint64_t id = 0;
    std::string addr, laddr, user;
    bool skipme = true;
    bool old_style = false;
  };
  Filter f;
  if (c.args.size() == 3) {
    f.addr = std::string(c.args[2]);
    f.old_style = true;
    f.skipme = false;
  } else {
    if (c.args.size() % 2 != 0) return c.out.Error(kErrSyntax);
    for (size_t i = 2; i + 1 < c.args.size(); i += 2) {
      std::string_view k = c.args[i], v = c.args[i + 1];
      if (EqualsNoCase(k, "ID")) {
        int64_t id;
        if (!ParseI64(v, &id) || id <= 0) return c.out.Error("ERR client-id should be greater than 0");
        f.id = static_cast<uint64_t>(id);
      } else if (EqualsNoCase(k, "ADDR")) {
        f.addr = std::string(v);
      } else if (EqualsNoCase(k, "LADDR")) {
        f.laddr = std::string(v);
      } else if (EqualsNoCase(k, "SKIPME")) {
        if (EqualsNoCase(v, "yes")) f.skipme = true;
        else if (EqualsNoCase(v, "no")) f.skipme = false;
        else return c.out.Error(kErrSyntax);
      } else if (EqualsNoCase(k, "USER")) {
        if (c.server->acl().Find(v) == nullptr) return c.out.Error("ERR No such user '" + std::string(v) + "'");
        f.user = std::string(v);
      } else if (EqualsNoCase(k, "TYPE")) {
        // a single type, "normal": accepted, matches all
      } else {
        return c.out.Error(kErrSyntax);
      }
    }
  }
  Server* server = c.server;
  uint64_t me = c.conn->id();
  auto killed = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(server->shards().size()), 0);
  bool old_style = f.old_style;
  c.FanOut(
      server->shards().All(),
      [server, killed, f, me](int shard, ShardStore&) {
        for (Connection* conn : server->shards().shard(shard).clients) {
          if (f.id != 0 && conn->id() != f.id) continue;
          if (!f.addr.empty() && conn->peer() != f.addr) continue;
          if (!f.laddr.empty() && conn->local() != f.laddr) continue;
          if (!f.user.empty() && conn->user_name() != f.user) continue;
          if (f.skipme && conn->id() == me) continue;
          if (conn->Kill()) (*killed)[static_cast<size_t>(shard)]++;
        }
      },
      [killed, old_style](ReplyWriter& out) {
        int64_t n = 0;
        for (int64_t k : *killed) n += k;
        if (old_style) {
          if (n == 0) return out.Error("ERR No such client");
          return out.Ok();
        }
        out.Integer(n);
      });
}

void Client(CommandContext& c) {
  std::string_view sub = c.args[1];
  size_t n = c.args.size();
  if (EqualsNoCase(sub, "ID") && n == 2) return c.out.Integer(static_cast<int64_t>(c.conn->id()));
  if (EqualsNoCase(sub, "GETNAME") && n == 2) {
    std::string name = c.conn->name();
    if (name.empty()) return c.out.Null();
    return c.out.Bulk(name);
  }
  if (EqualsNoCase(sub, "SETNAME") && n == 3) {
    if (!ValidClientName(c.args[2]))
      return c.out.Error("ERR Client names cannot contain spaces, newlines or special characters.");
    c.conn->set_name(std::string(c.args[2]));
    return c.out.Ok();
  }
  if (EqualsNoCase(sub, "SETINFO") && n == 4) {  // as Redis 7.2
    std::string_view attr = c.args[2];
    bool version = EqualsNoCase(attr, "LIB-VER");
    if (!version && !EqualsNoCase(attr, "LIB-NAME"))
      return c.out.Error("ERR Unrecognized option '" + std::string(attr) + "'");
    if (!ValidClientName(c.args[3]))
      return c.out.Error("ERR " + std::string(attr) + " cannot contain spaces, newlines or special characters.");
    c.conn->set_lib(version, std::string(c.args[3]));
    return c.out.Ok();
  }
  if (EqualsNoCase(sub, "INFO") && n == 2) return c.out.Verbatim(c.conn->Describe(c.now_ms) + "\n");
  if (EqualsNoCase(sub, "LIST")) {
    std::vector<uint64_t> ids;
    for (size_t i = 2; i < n; i++) {
      if (EqualsNoCase(c.args[i], "TYPE") && i + 1 < n) {
        if (!EqualsNoCase(c.args[i + 1], "normal")) {
          if (EqualsNoCase(c.args[i + 1], "master") || EqualsNoCase(c.args[i + 1], "replica") || EqualsNoCase(c.args[i + 1], "pubsub"))
            return c.out.Verbatim("");
          return c.out.Error("ERR Unknown client type '" + std::string(c.args[i + 1]) + "'");
        }
        i++;
      } else if (EqualsNoCase(c.args[i], "ID") && i + 1 < n) {
        for (i = i + 1; i < n; i++) {
          int64_t id;
          if (!ParseI64(c.args[i], &id) || id <= 0) return c.out.Error("ERR Invalid client ID");
          ids.push_back(static_cast<uint64_t>(id));
        }
        if (ids.empty()) return c.out.Error(kErrSyntax);
      } else {
        return c.out.Error(kErrSyntax);
      }
    }
    return ClientList(c, ids);
  }
  if (EqualsNoCase(sub, "KILL") && n >= 3) return ClientKill(c);
  if (EqualsNoCase(sub, "HELP") && n == 2) {
    static const char* kHelp[] = {"CLIENT <subcommand> [<arg> ...]. Subcommands are:", "ID", "GETNAME", "SETNAME <name>",
                                  "INFO", "SETINFO <LIB-NAME|LIB-VER> <value>", "LIST [TYPE normal] [ID id ...]", "KILL <ip:port> | KILL [ID id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]"};
    c.out.Array(std::size(kHelp));
    for (const char* h : kHelp) c.out.Simple(h);
    return;
  }
  std::string s(sub);
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  bool known = s == "ID" || s == "GETNAME" || s == "SETNAME" || s == "INFO" || s == "LIST" || s == "KILL" || s == "SETINFO";
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (known) return c.out.Error("ERR wrong number of arguments for 'client|" + s + "' command");
  c.out.Error("ERR unknown subcommand '" + std::string(sub) + "'. Try CLIENT HELP.");
}

}  // namespace

void RegisterConnectionFamily(CommandTable& t) {
  const uint32_t F = kCmdFast, N = kCmdNoAuth | kCmdLoading | kCmdStale;
  t.Register({"ping", -1, F, 0, 0, 0, Ping, "connection", "Returns the server's liveliness response."});
  t.Register({"echo", 2, F, 0, 0, 0, Echo, "connection", "Returns the given string."});
  t.Register({"hello", -1, F | N, 0, 0, 0, Hello, "connection", "Handshakes with the server (RESP2 or RESP3)."});
  t.Register({"auth", -2, F | N, 0, 0, 0, Auth, "connection", "Authenticates the connection."});
  t.Register({"select", 2, F | kCmdLoading, 0, 0, 0, Select, "connection", "Changes the selected database (only 0 exists)."});
  t.Register({"quit", -1, F | N | kCmdTxControl, 0, 0, 0, Quit, "connection", "Closes the connection."});
  t.Register({"reset", 1, F | N | kCmdTxControl, 0, 0, 0, Reset, "connection", "Resets the connection."});
  t.Register({"client", -2, kCmdAdmin, 0, 0, 0, Client, "connection", "A container for client connection commands."});
}

}  // namespace fkv
