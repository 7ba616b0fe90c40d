// ACL users in process: categories, rules, descriptions, the user table.
#include <doctest/doctest.h>

#include <random>
#include <set>

#include "server/acl.h"
#include "server/command.h"
#include "server/server.h"

using namespace fkv;

TEST_CASE("every command has categories, and featurekv's are where docs/commands.md says") {
  const AclCommands& cmds = AclCommands::Get();
  const auto& specs = CommandTable::Get().all();
  REQUIRE(cmds.size() > specs.size());  // the subcommands follow
  for (const CommandSpec& s : specs) {
    INFO(s.name);
    uint32_t c = cmds.at(s.index).categories;
    CHECK((c & (AclCategoryBit("fast") | AclCategoryBit("slow"))) != 0);  // the explicit table names it
    CHECK(cmds.at(s.index).fullname == s.name);
  }
  auto has = [&](const char* cmd, const char* cat) { return (cmds.at(static_cast<size_t>(cmds.Find(cmd))).categories & AclCategoryBit(cat)) != 0; };
  for (const char* r : {"fget", "fmget", "fwindow", "fviews", "finfo"}) {
    CHECK(has(r, "read"));
    CHECK(has(r, "feature"));
    CHECK_FALSE(has(r, "write"));
  }
  for (const char* w : {"fset", "fevent"}) {
    CHECK(has(w, "write"));
    CHECK(has(w, "feature"));
  }
  for (const char* a : {"fregistry", "fingest"}) {
    CHECK(has(a, "admin"));
    CHECK(has(a, "dangerous"));
  }
  CHECK(has("config|set", "dangerous"));
  CHECK_FALSE(has("client|setname", "dangerous"));
  CHECK(cmds.Find("CLIENT|List") == cmds.Find("client|list"));
  CHECK(cmds.Find("nosuch") == -1);
  ArgList args = {"client", "SETNAME", "x"};
  CHECK(cmds.IdOf(*CommandTable::Get().Find("client"), args) == static_cast<size_t>(cmds.Find("client|setname")));
  args = {"client", "nosuch"};
  CHECK(cmds.IdOf(*CommandTable::Get().Find("client"), args) == static_cast<size_t>(cmds.Find("client")));
}

TEST_CASE("rules build the bitmap; +cmd covers subcommands; -anything ends the all-commands shortcut") {
  const AclCommands& cmds = AclCommands::Get();
  auto id = [&](const char* n) { return static_cast<size_t>(cmds.Find(n)); };
  AclUser u("u");
  CHECK_FALSE(u.Allowed(id("get")));
  CHECK(u.Apply("+@read") == "");
  CHECK(u.Allowed(id("get")));
  CHECK(u.Allowed(id("fget")));
  CHECK_FALSE(u.Allowed(id("set")));
  CHECK(u.Apply("+client") == "");
  CHECK(u.Allowed(id("client|kill")));
  CHECK(u.Apply("-client|kill") == "");
  CHECK_FALSE(u.Allowed(id("client|kill")));
  CHECK(u.Allowed(id("client|list")));
  CHECK(u.Apply("allcommands") == "");
  CHECK(u.all);
  CHECK(u.Apply("-flushall") == "");
  CHECK_FALSE(u.all);
  CHECK(u.future);  // still described from +@all, as Redis
  CHECK(u.DescribeCommands() == "+@all -flushall");
  CHECK(u.Apply("+get|x") == "Allowing first-arg of a subcommand is not supported");
  CHECK(u.Apply("+client|nosuch") == "Unknown command or category name in ACL");
  CHECK(u.Apply("~*") == "");
  CHECK(u.Apply("~a") != "");
  CHECK(u.KeyAllowed("anything"));
  CHECK(u.Apply("resetkeys") == "");
  CHECK(u.Apply("~user:*") == "");
  CHECK(u.KeyAllowed("user:1"));
  CHECK(u.KeyAllowed("user:"));
  CHECK_FALSE(u.KeyAllowed("product:1"));
  CHECK_FALSE(u.KeyAllowed("user"));
  // Globs that are not a plain prefix, and a literal key.
  AclUser g("g");
  for (const char* r : {"~p?:*", "~a[bc]*z", "~exact", "~esc\\*"}) REQUIRE(g.Apply(r) == "");
  CHECK(g.KeyAllowed("p1:x"));
  CHECK_FALSE(g.KeyAllowed("p12:x"));
  CHECK(g.KeyAllowed("abxxz"));
  CHECK_FALSE(g.KeyAllowed("adz"));
  CHECK(g.KeyAllowed("exact"));
  CHECK_FALSE(g.KeyAllowed("exactly"));
  CHECK(g.KeyAllowed("esc*"));
  CHECK_FALSE(g.KeyAllowed("escX"));
}

TEST_CASE("passwords are kept as SHA-256 and checked in full") {
  AclUser u("u");
  CHECK(Sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(u.Apply(">secret") == "");
  REQUIRE(u.passwords.size() == 1);
  CHECK(u.passwords[0] == Sha256Hex("secret"));
  CHECK(u.CheckPassword("secret"));
  CHECK_FALSE(u.CheckPassword("Secret"));
  CHECK_FALSE(u.CheckPassword(""));
  CHECK(u.Apply("<secret") == "");
  CHECK_FALSE(u.CheckPassword("secret"));
  CHECK(u.Apply("<secret") == "The password you are trying to remove from the user does not exist");
  CHECK(u.Apply("nopass") == "");
  CHECK(u.CheckPassword("whatever"));
}

// The description of a user, applied to a fresh user, rebuilds the same
// bitmap (what Redis checks before it prints): over random rule lists.
TEST_CASE("ACL LIST's description rebuilds every user exactly") {
  const AclCommands& cmds = AclCommands::Get();
  std::mt19937_64 rng(7);
  std::vector<std::string> pool;
  for (size_t c = 0; c < kAclCategories; c++) {
    pool.push_back(std::string("+@") + kAclCategoryNames[c]);
    pool.push_back(std::string("-@") + kAclCategoryNames[c]);
  }
  for (size_t i = 0; i < cmds.size(); i++) {
    pool.push_back("+" + cmds.at(i).fullname);
    pool.push_back("-" + cmds.at(i).fullname);
  }
  pool.push_back("allcommands");
  pool.push_back("nocommands");
  for (int round = 0; round < 300; round++) {
    AclUser u("u");
    size_t n = 1 + rng() % 8;
    for (size_t k = 0; k < n; k++) REQUIRE(u.Apply(pool[rng() % pool.size()]) == "");
    std::string rules = u.DescribeCommands();
    AclUser v("v");
    std::string word;
    for (char ch : rules + " ") {
      if (ch != ' ') {
        word += ch;
        continue;
      }
      REQUIRE(v.Apply(word) == "");
      word.clear();
    }
    INFO(rules);
    CHECK(v.allowed == u.allowed);
    CHECK(v.future == u.future);
  }
}

TEST_CASE("the user table: all-or-nothing SETUSER, DELUSER, requirepass, loading lines") {
  Acl acl;
  CHECK(acl.default_open());
  uint64_t e0 = acl.epoch();
  std::vector<std::string_view> rules = {"on", ">pw", "+get"};
  CHECK(acl.SetUser("bob", rules) == "");
  CHECK(acl.epoch() > e0);
  auto bob = acl.Find("bob");
  REQUIRE(bob);
  std::vector<std::string_view> bad = {"off", "+nosuch"};
  CHECK(acl.SetUser("bob", bad) == "ERR Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL");
  CHECK(acl.Find("bob")->on);  // unchanged
  CHECK(acl.Find("bob") == bob);
  acl.SetRequirePass("s3cret");
  CHECK_FALSE(acl.default_open());
  CHECK(acl.Find("default")->CheckPassword("s3cret"));
  acl.SetRequirePass("");
  CHECK(acl.default_open());
  std::vector<std::string_view> names = {"bob", "nosuch", "default"};
  CHECK(acl.DelUsers(names) == 1);
  CHECK(acl.Users() == std::vector<std::string>{"default"});
  CHECK(acl.LoadLines({"# users", "user a on nopass ~* +@all", "", "user b off"}, "f.acl") == "");
  CHECK(acl.Users() == std::vector<std::string>{"a", "b", "default"});
  CHECK(acl.LoadLines({"user c on", "user c off"}, "f.acl") == "f.acl:2: Duplicate user 'c' found");
  CHECK(acl.LoadLines({"user d on", "usr e"}, "f.acl") == "f.acl:2: should start with user keyword");
  CHECK(acl.Users() == std::vector<std::string>{"a", "b", "default"});  // unchanged by the failures
}

TEST_CASE("the ACL LOG groups the same refusal and keeps the newest first, up to its length") {
  Acl acl;
  acl.Log("command", "set", "bob", "id=1", 1000);
  acl.Log("key", "k", "bob", "id=1", 2000);
  acl.Log("command", "set", "bob", "id=2", 3000);
  auto log = acl.LogEntries(10);
  REQUIRE(log.size() == 2);
  CHECK(log[0].object == "set");
  CHECK(log[0].count == 2);
  CHECK(log[0].client_info == "id=2");
  CHECK(log[1].object == "k");
  acl.Log("command", "set", "bob", "id=3", 1000 + 61000);  // a minute later: a new entry
  CHECK(acl.LogEntries(10).size() == 3);
  acl.set_log_max(1);
  CHECK(acl.LogEntries(10).size() == 1);
  acl.ResetLog();
  CHECK(acl.LogEntries(10).empty());
}

TEST_CASE("protected mode refuses non-loopback clients only while the default user has no password") {
  auto ip = [](const char* a) { return asio::ip::make_address(a); };
  CHECK_FALSE(ProtectedModeRefuses(true, true, ip("127.0.0.1")));
  CHECK_FALSE(ProtectedModeRefuses(true, true, ip("127.0.0.2")));
  CHECK_FALSE(ProtectedModeRefuses(true, true, ip("::1")));
  CHECK_FALSE(ProtectedModeRefuses(true, true, ip("::ffff:127.0.0.1")));
  CHECK(ProtectedModeRefuses(true, true, ip("10.1.2.3")));
  CHECK(ProtectedModeRefuses(true, true, ip("::ffff:10.1.2.3")));
  CHECK(ProtectedModeRefuses(true, true, ip("2001:db8::1")));
  CHECK_FALSE(ProtectedModeRefuses(false, true, ip("10.1.2.3")));  // protected-mode no
  CHECK_FALSE(ProtectedModeRefuses(true, false, ip("10.1.2.3")));  // a password on the default user
  CHECK(kProtectedModeDenied.substr(0, 8) == "-DENIED ");
  CHECK(kProtectedModeDenied.substr(kProtectedModeDenied.size() - 2) == "\r\n");
}
