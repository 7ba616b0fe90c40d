// ACL SETUSER GETUSER DELUSER LIST USERS WHOAMI CAT LOG SAVE LOAD GENPASS
// DRYRUN HELP: see acl.h and docs/commands.md, "ACL".
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "server/acl.h"
#include "server/connection.h"
#include "server/server.h"

namespace fkv {

namespace {

// After users changed: every shard closes its connections whose user is
// now deleted or disabled (the rest see the change at their next command,
// through the ACL epoch); then `reply` runs.
void CloseStaleThenReply(CommandContext& c, std::function<void(ReplyWriter&)> reply) {
  Server* server = c.server;
  c.FanOut(
      server->shards().All(),
      [server](int shard, ShardStore&) {
        for (Connection* conn : server->shards().shard(shard).clients) {
          std::string name = conn->user_name();
          if (name.empty()) continue;
          auto u = server->acl().Find(name);
          if (u == nullptr || !u->on) conn->Kill();
        }
      },
      std::move(reply));
}

void GetUser(CommandContext& c, const AclUser& u) {
  c.out.Map(6);
  c.out.Bulk("flags");
  c.out.Array(1 + u.nopass + (u.sanitize != 0));
  c.out.Bulk(u.on ? "on" : "off");
  if (u.nopass) c.out.Bulk("nopass");
  if (u.sanitize) c.out.Bulk(u.sanitize == 1 ? "sanitize-payload" : "skip-sanitize-payload");
  c.out.Bulk("passwords");
  c.out.Array(u.passwords.size());
  for (const auto& p : u.passwords) c.out.Bulk(p);
  c.out.Bulk("commands");
  c.out.Bulk(u.DescribeCommands());
  c.out.Bulk("keys");
  std::string keys;
  if (u.allkeys) keys = "~*";
  for (const auto& k : u.keys) keys += (keys.empty() ? "~" : " ~") + k;
  c.out.Bulk(keys);
  c.out.Bulk("channels");
  std::string ch;
  if (u.allchannels) ch = "&*";
  for (const auto& k : u.channels) ch += (ch.empty() ? "&" : " &") + k;
  c.out.Bulk(ch);
  c.out.Bulk("selectors");
  c.out.Array(0);
}

void Log(CommandContext& c) {
  Acl& acl = c.server->acl();
  size_t count = 10;
  if (c.args.size() == 3) {
    if (EqualsNoCase(c.args[2], "RESET")) {
      acl.ResetLog();
      return c.out.Ok();
    }
    int64_t n;
    if (!ParseI64(c.args[2], &n)) return c.out.Error("ERR value is not an integer or out of range");
    count = n < 0 ? 0 : static_cast<size_t>(n);
  } else if (c.args.size() > 3) {
    return c.out.Error(ErrWrongArgs("acl|log"));
  }
  auto entries = acl.LogEntries(count);
  c.out.Array(entries.size());
  for (const auto& e : entries) {
    c.out.Map(7);
    c.out.Bulk("count");
    c.out.Integer(static_cast<int64_t>(e.count));
    c.out.Bulk("reason");
    c.out.Bulk(e.reason);
    c.out.Bulk("context");
    c.out.Bulk(e.context);
    c.out.Bulk("object");
    c.out.Bulk(e.object);
    c.out.Bulk("username");
    c.out.Bulk(e.username);
    c.out.Bulk("age-seconds");
    c.out.Double(static_cast<double>(c.now_ms - e.created_ms) / 1000.0);
    c.out.Bulk("client-info");
    c.out.Bulk(e.client_info);
  }
}

void Cat(CommandContext& c) {
  if (c.args.size() == 2) {
    c.out.Array(kAclCategories);
    for (const char* name : kAclCategoryNames) c.out.Bulk(name);
    return;
  }
  if (c.args.size() > 3) return c.out.Error(ErrWrongArgs("acl|cat"));
  uint32_t cat = AclCategoryBit(c.args[2]);
  if (cat == 0) return c.out.Error("ERR Unknown category '" + std::string(c.args[2]) + "'");
  const AclCommands& cmds = AclCommands::Get();
  std::vector<std::string_view> names;
  for (size_t id : cmds.by_name())
    if (cmds.at(id).categories & cat) names.push_back(cmds.at(id).fullname);
  c.out.Array(names.size());
  for (auto n : names) c.out.Bulk(n);
}

void GenPass(CommandContext& c) {
  int64_t bits = 256;
  if (c.args.size() == 3 && (!ParseI64(c.args[2], &bits) || bits <= 0 || bits > 4096))
    return c.out.Error("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096");
  if (c.args.size() > 3) return c.out.Error(ErrWrongArgs("acl|genpass"));
  size_t chars = static_cast<size_t>((bits + 3) / 4);
  std::vector<unsigned char> raw((chars + 1) / 2);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) return c.out.Error("ERR no random bytes available");
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  out.resize(chars);
  c.out.Bulk(out);
}

// ACL DRYRUN user command [args...]: what the checks before a command would say.
void DryRun(CommandContext& c) {
  if (c.args.size() < 4) return c.out.Error(ErrWrongArgs("acl|dryrun"));
  auto u = c.server->acl().Find(c.args[2]);
  if (u == nullptr) return c.out.Error("ERR User '" + std::string(c.args[2]) + "' not found");
  const CommandSpec* spec = CommandTable::Get().Find(c.args[3]);
  if (spec == nullptr) return c.out.Error("ERR Command '" + std::string(c.args[3]) + "' not found");
  ArgList args(c.args.begin() + 3, c.args.end());
  int argc = static_cast<int>(args.size());
  if ((spec->arity > 0 && argc != spec->arity) || (spec->arity < 0 && argc < -spec->arity))
    return c.out.Error("ERR wrong number of arguments for '" + std::string(spec->name) + "' command");
  std::string_view object;
  AclRefusal r = spec->flags & kCmdNoAuth ? AclRefusal::kNone : CheckCall(*u, *spec, args, &object);
  if (r == AclRefusal::kCommand)
    return c.out.Bulk("This user has no permissions to run the '" + std::string(object) + "' command");
  if (r == AclRefusal::kKey)
    return c.out.Bulk("This user has no permissions to access the '" + std::string(object) + "' key");
  c.out.Ok();
}

void AclCmd(CommandContext& c) {
  Acl& acl = c.server->acl();
  std::string_view sub = c.args[1];
  const size_t n = c.args.size();
  if (EqualsNoCase(sub, "SETUSER") && n >= 3) {
    std::string_view name = c.args[2];
    if (std::any_of(name.begin(), name.end(), [](char ch) { return ch == ' ' || ch == '\0'; }))
      return c.out.Error("ERR Usernames can't contain spaces or null characters");
    std::vector<std::string_view> rules(c.args.begin() + 3, c.args.end());
    std::string err = acl.SetUser(name, rules);
    if (!err.empty()) return c.out.Error(err);
    std::string shown;
    for (auto r : rules) shown += (shown.empty() ? "" : " ") + RedactRule(r);
    c.conn->Audit("acl_change", {{"command", "SETUSER"}, {"target", std::string(name)}, {"rules", shown}});
    return CloseStaleThenReply(c, [](ReplyWriter& out) { out.Ok(); });
  }
  if (EqualsNoCase(sub, "GETUSER") && n == 3) {
    auto u = acl.Find(c.args[2]);
    if (u == nullptr) return c.out.Null();
    return GetUser(c, *u);
  }
  if (EqualsNoCase(sub, "DELUSER") && n >= 3) {
    std::vector<std::string_view> names(c.args.begin() + 2, c.args.end());
    for (auto name : names)
      if (name == "default") return c.out.Error("ERR The 'default' user cannot be removed");
    int64_t gone = acl.DelUsers(names);
    std::string shown;
    for (auto nm : names) shown += (shown.empty() ? "" : " ") + std::string(nm);
    c.conn->Audit("acl_change", {{"command", "DELUSER"}, {"target", shown}, {"deleted", std::to_string(gone)}});
    return CloseStaleThenReply(c, [gone](ReplyWriter& out) { out.Integer(gone); });
  }
  if ((EqualsNoCase(sub, "LIST") || EqualsNoCase(sub, "USERS")) && n == 2) {
    auto lines = EqualsNoCase(sub, "LIST") ? acl.List() : acl.Users();
    c.out.Array(lines.size());
    for (const auto& l : lines) c.out.Bulk(l);
    return;
  }
  if (EqualsNoCase(sub, "WHOAMI") && n == 2) return c.out.Bulk(c.conn->user().name);
  if (EqualsNoCase(sub, "CAT")) return Cat(c);
  if (EqualsNoCase(sub, "LOG")) return Log(c);
  if (EqualsNoCase(sub, "GENPASS")) return GenPass(c);
  if (EqualsNoCase(sub, "DRYRUN")) return DryRun(c);
  if ((EqualsNoCase(sub, "SAVE") || EqualsNoCase(sub, "LOAD")) && n == 2) {
    std::string path = c.server->config().GetString("aclfile");
    if (path.empty())
      return c.out.Error("ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.");
    if (EqualsNoCase(sub, "SAVE")) {
      std::string err = acl.SaveFile(path);
      return err.empty() ? c.out.Ok() : c.out.Error("ERR " + err);
    }
    std::string err = acl.LoadFile(path);
    c.conn->Audit("acl_change", {{"command", "LOAD"}, {"result", err.empty() ? "ok" : "error"}, {"error", err}});
    if (!err.empty()) return c.out.Error("ERR " + err);
    std::string pass = c.server->config().GetString("requirepass");
    if (!pass.empty()) acl.SetRequirePass(pass);
    return CloseStaleThenReply(c, [](ReplyWriter& out) { out.Ok(); });
  }
  if (EqualsNoCase(sub, "HELP") && n == 2) {
    const char* lines[] = {
        "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CAT [<category>]", "    List all commands that belong to <category>, or all command categories",
        "    when no category is specified.",
        "DELUSER <username> [<username> ...]", "    Delete a list of users.",
        "DRYRUN <username> <command> [<arg> ...]",
        "    Returns whether the user can execute the given command without executing the command.",
        "GETUSER <username>", "    Get the user's details.",
        "GENPASS [<bits>]", "    Generate a secure 256-bit user password. The optional `bits` argument can",
        "    be used to specify a different size.",
        "LIST", "    Show users details in config file format.",
        "LOAD", "    Reload users from the ACL file.",
        "LOG [<count> | RESET]", "    Show the ACL log entries.",
        "SAVE", "    Save the current config to the ACL file.",
        "SETUSER <username> <attribute> [<attribute> ...]", "    Create or modify a user with the specified attributes.",
        "USERS", "    List all the registered usernames.",
        "WHOAMI", "    Return the current connection username.",
        "HELP", "    Print this help."};
    c.out.Array(std::size(lines));
    for (const char* l : lines) c.out.Simple(l);
    return;
  }
  for (const char* known : {"SETUSER", "GETUSER", "DELUSER", "LIST", "USERS", "WHOAMI", "SAVE", "LOAD", "HELP"})
    if (EqualsNoCase(sub, known)) {
      std::string l(known);
      for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      return c.out.Error(ErrWrongArgs("acl|" + l));
    }
  c.out.Error("ERR unknown subcommand '" + std::string(sub) + "'. Try ACL HELP.");
}

}  // namespace

void RegisterAclFamily(CommandTable& t) {
  t.Register({"acl", -2, kCmdAdmin | kCmdLoading | kCmdStale | kCmdNoMulti, 0, 0, 0, AclCmd, "server",
              "A container for Access List Control commands."});
}

}  // namespace fkv
