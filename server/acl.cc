// Access control lists: see acl.h and docs/commands.md, "ACL".
#include "server/acl.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cctype>
#include <fstream>
#include <sstream>

#include "server/command.h"
#include "storage/glob.h"

namespace fkv {

namespace {
std::string Lower(std::string_view s) {
  std::string l(s);
  for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return l;
}

uint32_t Cats(std::string_view list) {
  uint32_t bits = 0;
  std::istringstream in{std::string(list)};
  for (std::string w; in >> w;) bits |= AclCategoryBit(w);
  return bits;
}

// Redis 7.0's categories of the commands featurekv shares with it (COMMAND
// INFO of redis-server 7.0), and featurekv's own commands. A command of
// the table missing here is refused by a unit test.
const std::pair<const char*, const char*> kCommandCategories[] = {
    {"append", "write string fast"}, {"auth", "fast connection"}, {"bgsave", "admin slow dangerous"},
    {"client", "slow"}, {"command", "slow connection"}, {"config", "slow"}, {"copy", "keyspace write slow"},
    {"dbsize", "keyspace read fast"}, {"decr", "write string fast"}, {"decrby", "write string fast"},
    {"del", "keyspace write slow"}, {"discard", "fast transaction"}, {"echo", "fast connection"},
    {"exec", "slow transaction"}, {"exists", "keyspace read fast"}, {"expire", "keyspace write fast"},
    {"expireat", "keyspace write fast"}, {"expiretime", "keyspace read fast"},
    {"flushall", "keyspace write slow dangerous"}, {"flushdb", "keyspace write slow dangerous"},
    {"get", "read string fast"}, {"getdel", "write string fast"}, {"getex", "write string fast"},
    {"getrange", "read string slow"}, {"getset", "write string fast"}, {"hdel", "write hash fast"},
    {"hello", "fast connection"}, {"hexists", "read hash fast"}, {"hget", "read hash fast"},
    {"hgetall", "read hash slow"}, {"hincrby", "write hash fast"}, {"hincrbyfloat", "write hash fast"},
    {"hkeys", "read hash slow"}, {"hlen", "read hash fast"}, {"hmget", "read hash fast"},
    {"hmset", "write hash fast"}, {"hrandfield", "read hash slow"}, {"hscan", "read hash slow"},
    {"hset", "write hash fast"}, {"hsetnx", "write hash fast"}, {"hstrlen", "read hash fast"},
    {"hvals", "read hash slow"}, {"incr", "write string fast"}, {"incrby", "write string fast"},
    {"incrbyfloat", "write string fast"}, {"info", "slow dangerous"}, {"keys", "keyspace read slow dangerous"},
    {"lastsave", "admin fast dangerous"}, {"memory", "slow"}, {"mget", "read string fast"},
    {"mset", "write string slow"}, {"msetnx", "write string slow"}, {"multi", "fast transaction"},
    {"object", "slow"}, {"persist", "keyspace write fast"}, {"pexpire", "keyspace write fast"},
    {"pexpireat", "keyspace write fast"}, {"pexpiretime", "keyspace read fast"}, {"ping", "fast connection"},
    {"psetex", "write string slow"}, {"pttl", "keyspace read fast"}, {"quit", "fast connection"},
    {"randomkey", "keyspace read slow"}, {"rename", "keyspace write slow"}, {"renamenx", "keyspace write fast"},
    {"reset", "fast connection"}, {"save", "admin slow dangerous"}, {"scan", "keyspace read slow"},
    {"select", "fast connection"}, {"set", "write string slow"}, {"setex", "write string slow"},
    {"setnx", "write string fast"}, {"setrange", "write string slow"}, {"shutdown", "admin slow dangerous"},
    {"slowlog", "slow"}, {"strlen", "read string fast"}, {"time", "fast"}, {"touch", "keyspace read fast"},
    {"ttl", "keyspace read fast"}, {"type", "keyspace read fast"}, {"unlink", "keyspace write fast"},
    {"unwatch", "fast transaction"}, {"watch", "fast transaction"}, {"acl", "slow"}, {"cluster", "slow"},
    {"readonly", "fast connection"}, {"readwrite", "fast connection"}, {"asking", "fast connection"},
    // featurekv's own.
    {"fget", "read feature fast"}, {"fmget", "read feature slow"}, {"fwindow", "read feature slow"},
    {"fviews", "read feature slow"}, {"finfo", "read feature slow"}, {"fset", "write feature slow"},
    {"fevent", "write feature slow"}, {"fregistry", "admin dangerous feature slow"},
    {"freplay", "admin dangerous feature slow"},
    {"fingest", "admin dangerous feature slow"}, {"fdrift", "admin feature slow"},
};

// Subcommands of the containers, with Redis 7.0's categories.
const std::pair<const char*, const char*> kSubcommandCategories[] = {
    {"acl|cat", "slow"}, {"acl|deluser", "admin slow dangerous"}, {"acl|dryrun", "admin slow dangerous"},
    {"acl|genpass", "slow"}, {"acl|getuser", "admin slow dangerous"}, {"acl|help", "slow"},
    {"acl|list", "admin slow dangerous"}, {"acl|load", "admin slow dangerous"}, {"acl|log", "admin slow dangerous"},
    {"acl|save", "admin slow dangerous"}, {"acl|setuser", "admin slow dangerous"},
    {"acl|users", "admin slow dangerous"}, {"acl|whoami", "slow"},
    {"cluster|countkeysinslot", "slow"}, {"cluster|getkeysinslot", "slow"}, {"cluster|help", "slow"},
    {"cluster|info", "slow"}, {"cluster|keyslot", "slow"}, {"cluster|myid", "slow"}, {"cluster|nodes", "slow"},
    {"cluster|shards", "slow"}, {"cluster|slots", "slow"},
    {"client|getname", "slow connection"}, {"client|help", "slow connection"}, {"client|id", "slow connection"},
    {"client|info", "slow connection"}, {"client|kill", "admin slow dangerous connection"},
    {"client|list", "admin slow dangerous connection"}, {"client|setinfo", "slow connection"},
    {"client|setname", "slow connection"},
    {"command|count", "slow connection"}, {"command|docs", "slow connection"}, {"command|getkeys", "slow connection"},
    {"command|help", "slow connection"}, {"command|info", "slow connection"}, {"command|list", "slow connection"},
    {"config|get", "admin slow dangerous"}, {"config|help", "slow"}, {"config|resetstat", "admin slow dangerous"},
    {"config|rewrite", "admin slow dangerous"}, {"config|set", "admin slow dangerous"},
    {"memory|doctor", "slow"}, {"memory|help", "slow"}, {"memory|malloc-stats", "slow"}, {"memory|purge", "slow"},
    {"memory|stats", "slow"}, {"memory|usage", "read slow"},
    {"object|encoding", "keyspace read slow"}, {"object|freq", "keyspace read slow"},
    {"object|help", "keyspace slow"}, {"object|idletime", "keyspace read slow"},
    {"object|refcount", "keyspace read slow"},
    {"slowlog|get", "admin slow dangerous"}, {"slowlog|help", "slow"}, {"slowlog|len", "admin slow dangerous"},
    {"slowlog|reset", "admin slow dangerous"},
};

// Categories of a command absent from the table above, from its flags.
uint32_t CategoriesFromFlags(const CommandSpec& s) {
  uint32_t c = 0;
  if (s.flags & kCmdWrite) c |= AclCategoryBit("write");
  if (s.flags & kCmdReadonly) c |= AclCategoryBit("read");
  c |= AclCategoryBit((s.flags & kCmdFast) ? "fast" : "slow");
  if (s.flags & kCmdAdmin) c |= AclCategoryBit("admin") | AclCategoryBit("dangerous");
  return c;
}

bool IsLowerHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

constexpr int64_t kLogGroupMs = 60000;  // similar refusals within a minute share an entry, as Redis
}  // namespace

uint32_t AclCategoryBit(std::string_view name) {
  std::string l = Lower(name);
  for (size_t i = 0; i < kAclCategories; i++)
    if (l == kAclCategoryNames[i]) return uint32_t{1} << i;
  return 0;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned i = 0; i < n; i++) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

// ---- commands ----

const AclCommands& AclCommands::Get() {
  static const AclCommands* c = new AclCommands();
  return *c;
}

AclCommands::AclCommands() {
  const auto& specs = CommandTable::Get().all();
  for (const CommandSpec& s : specs) {
    Entry e;
    e.fullname = s.name;
    e.categories = CategoriesFromFlags(s);
    for (const auto& [name, cats] : kCommandCategories)
      if (e.fullname == name) e.categories = Cats(cats);
    entries_.push_back(std::move(e));
  }
  for (const auto& [full, cats] : kSubcommandCategories) {
    std::string_view f(full);
    int parent = Find(f.substr(0, f.find('|')));
    if (parent < 0) continue;
    Entry e;
    e.fullname = full;
    e.categories = Cats(cats);
    e.parent = parent;
    entries_[static_cast<size_t>(parent)].subs.push_back(entries_.size());
    entries_.push_back(std::move(e));
  }
  by_name_.resize(entries_.size());
  for (size_t i = 0; i < by_name_.size(); i++) by_name_[i] = i;
  std::sort(by_name_.begin(), by_name_.end(),
            [&](size_t a, size_t b) { return entries_[a].fullname < entries_[b].fullname; });
}

int AclCommands::Find(std::string_view fullname) const {
  std::string l = Lower(fullname);
  for (size_t i = 0; i < entries_.size(); i++)
    if (entries_[i].fullname == l) return static_cast<int>(i);
  return -1;
}

size_t AclCommands::IdOf(const CommandSpec& spec, const ArgList& args) const {
  const Entry& e = entries_[spec.index];
  if (e.subs.empty() || args.size() < 2) return spec.index;
  std::string_view sub = args[1];
  const size_t prefix = e.fullname.size() + 1;
  for (size_t id : e.subs) {
    const std::string& f = entries_[id].fullname;
    if (f.size() - prefix == sub.size() && EqualsNoCase(std::string_view(f).substr(prefix), sub)) return id;
  }
  return spec.index;  // an unknown subcommand: its handler refuses it
}

// ---- users ----

AclUser::AclUser(std::string n) : name(std::move(n)), allowed((AclCommands::Get().size() + 63) / 64, 0) {}

bool AclUser::KeyAllowed(std::string_view key) const {
  if (allkeys) return true;
  for (const auto& m : key_matchers)
    if (m.Match(key)) return true;
  return false;
}

bool AclUser::CheckPassword(std::string_view pass) const {
  if (nopass) return true;
  std::string h = Sha256Hex(pass);
  bool ok = false;
  for (const auto& p : passwords) {  // compares every stored hash in full: no early exit
    unsigned char diff = 0;
    for (size_t i = 0; i < 64; i++) diff |= static_cast<unsigned char>(p[i] ^ h[i]);
    ok |= diff == 0;
  }
  return ok;
}

void AclUser::SetCommand(size_t id, bool allow) {
  uint64_t bit = uint64_t{1} << (id & 63);
  if (allow) allowed[id >> 6] |= bit;
  else {
    allowed[id >> 6] &= ~bit;
    all = false;
  }
  for (size_t sub : AclCommands::Get().at(id).subs) SetCommand(sub, allow);
}

namespace {
void SetCategory(AclUser& u, uint32_t cat, bool allow) {
  const AclCommands& cmds = AclCommands::Get();
  for (size_t id = 0; id < cmds.size(); id++)
    if (cmds.at(id).categories & cat) u.SetCommand(id, allow);
}
void SetAll(AclUser& u, bool allow) {
  std::fill(u.allowed.begin(), u.allowed.end(), allow ? ~uint64_t{0} : 0);
  u.all = u.future = allow;
}
}  // namespace

std::string AclUser::Apply(std::string_view rule) {
  const std::string l = Lower(rule);
  if (l == "on") on = true;
  else if (l == "off") on = false;
  else if (l == "nopass") {
    nopass = true;
    passwords.clear();
  } else if (l == "resetpass") {
    nopass = false;
    passwords.clear();
  } else if (l == "allkeys" || rule == "~*") {
    allkeys = true;
    keys.clear();
    key_matchers.clear();
  } else if (l == "resetkeys") {
    allkeys = false;
    keys.clear();
    key_matchers.clear();
  } else if (l == "allchannels" || rule == "&*") {
    allchannels = true;
    channels.clear();
  } else if (l == "resetchannels") {
    allchannels = false;
    channels.clear();
  } else if (l == "allcommands" || l == "+@all") {
    SetAll(*this, true);
  } else if (l == "nocommands" || l == "-@all") {
    SetAll(*this, false);
  } else if (l == "reset") {
    for (const char* r : {"resetpass", "resetkeys", "resetchannels", "off", "-@all"}) Apply(r);
    sanitize = 1;
  } else if (l == "sanitize-payload" || l == "skip-sanitize-payload") {
    sanitize = l == "sanitize-payload" ? 1 : 2;  // shown as Redis does; featurekv has no RESTORE payloads
  } else if (l == "clearselectors") {
    // Accepted for Redis's syntax; featurekv has no selectors.
  } else if (rule.empty()) {
    return "Syntax error";
  } else if (rule[0] == '>' || rule[0] == '<' || rule[0] == '#' || rule[0] == '!') {
    std::string h = rule[0] == '>' || rule[0] == '<' ? Sha256Hex(rule.substr(1)) : std::string(rule.substr(1));
    if ((rule[0] == '#' || rule[0] == '!') && !IsLowerHex64(h))
      return "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
    auto it = std::find(passwords.begin(), passwords.end(), h);
    if (rule[0] == '>' || rule[0] == '#') {
      if (it == passwords.end()) passwords.push_back(h);
      nopass = false;
    } else {
      if (it == passwords.end()) return "The password you are trying to remove from the user does not exist";
      passwords.erase(it);
    }
  } else if (rule[0] == '~') {
    if (allkeys)
      return "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns";
    std::string p(rule.substr(1));
    if (std::find(keys.begin(), keys.end(), p) == keys.end()) {
      keys.push_back(p);
      std::string_view body = std::string_view(p).substr(0, p.empty() ? 0 : p.size() - 1);
      bool prefix_only = !p.empty() && p.back() == '*' && body.find_first_of("*?[\\") == std::string_view::npos;
      key_matchers.push_back({std::string(body), prefix_only, GlobPattern(p)});
    }
  } else if (rule[0] == '&') {
    if (allchannels)
      return "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";
    std::string p(rule.substr(1));
    if (std::find(channels.begin(), channels.end(), p) == channels.end()) channels.push_back(p);
  } else if (rule[0] == '+' || rule[0] == '-') {
    const bool allow = rule[0] == '+';
    std::string_view what = rule.substr(1);
    if (!what.empty() && what[0] == '@') {
      uint32_t cat = AclCategoryBit(what.substr(1));
      if (cat == 0) return "Unknown command or category name in ACL";
      SetCategory(*this, cat, allow);
    } else {
      int id = AclCommands::Get().Find(what);
      if (id < 0) {
        // "cmd|arg" of a command without subcommands: Redis 7.0's deprecated
        // first-arg rules, not supported.
        int base = what.find('|') == std::string_view::npos ? -1 : AclCommands::Get().Find(what.substr(0, what.find('|')));
        if (base >= 0 && AclCommands::Get().at(static_cast<size_t>(base)).subs.empty())
          return "Allowing first-arg of a subcommand is not supported";
        return "Unknown command or category name in ACL";
      }
      SetCommand(static_cast<size_t>(id), allow);
    }
  } else {
    return "Syntax error";
  }
  return "";
}

// The command rules as Redis 7.0 describes them: +@all or -@all, then the
// categories that best fit the bitmap, then single commands for what is
// left (in name order), checked to rebuild exactly this bitmap.
std::string AclUser::DescribeCommands() const {
  const AclCommands& cmds = AclCommands::Get();
  const bool additive = !future;
  std::string rules = additive ? "-@all" : "+@all";
  AclUser fake(""), temp("");
  SetAll(fake, !additive);
  temp.allowed = allowed;
  bool applied[kAclCategories] = {};
  for (;;) {
    int best = -1;
    size_t mindiff = SIZE_MAX, maxsame = 0;
    for (size_t j = 0; j < kAclCategories; j++) {
      if (applied[j]) continue;
      size_t on = 0, off = 0;
      for (size_t id = 0; id < cmds.size(); id++)
        if (cmds.at(id).categories & (uint32_t{1} << j)) (temp.Allowed(id) ? on : off)++;
      size_t diff = additive ? off : on, same = additive ? on : off;
      if (same > diff && (diff < mindiff || (diff == mindiff && same > maxsame))) {
        best = static_cast<int>(j);
        mindiff = diff;
        maxsame = same;
      }
    }
    if (best < 0) break;
    uint32_t cat = uint32_t{1} << best;
    SetCategory(fake, cat, additive);
    SetCategory(temp, cat, !additive);
    rules += std::string(additive ? " +@" : " -@") + kAclCategoryNames[best];
    applied[best] = true;
  }
  // Containers before their subcommands, so that "+client" then "-client|kill" rebuild the bitmap.
  auto single = [&](size_t id) {
    bool want = Allowed(id);
    if (fake.Allowed(id) == want) return;
    rules += (want ? " +" : " -") + cmds.at(id).fullname;
    fake.SetCommand(id, want);
  };
  for (size_t id : cmds.by_name())
    if (cmds.at(id).parent < 0) {
      single(id);
      for (size_t sub : cmds.at(id).subs) single(sub);
    }
  return rules;
}

std::string AclUser::Describe() const {
  std::string out = on ? "on" : "off";
  if (nopass) out += " nopass";
  if (sanitize) out += sanitize == 1 ? " sanitize-payload" : " skip-sanitize-payload";
  for (const auto& p : passwords) out += " #" + p;
  if (allkeys) out += " ~*";
  else
    for (const auto& k : keys) out += " ~" + k;
  if (allchannels) out += " &*";
  else {
    out += " resetchannels";
    for (const auto& c : channels) out += " &" + c;
  }
  return out + " " + DescribeCommands();
}

AclRefusal CheckCall(const AclUser& u, const CommandSpec& spec, const ArgList& args, std::string_view* object) {
  if (!u.all) {  // +@all (never narrowed since) allows everything
    size_t id = AclCommands::Get().IdOf(spec, args);
    if (!u.Allowed(id)) {
      *object = AclCommands::Get().at(id).fullname;
      return AclRefusal::kCommand;
    }
  }
  if (u.allkeys) return AclRefusal::kNone;
  AclRefusal r = AclRefusal::kNone;
  ForEachKeyArg(spec, args, [&](std::string_view k) {
    if (r == AclRefusal::kNone && !u.KeyAllowed(k)) {
      r = AclRefusal::kKey;
      *object = k;
    }
  });
  return r;
}

// ---- the user table ----

Acl::Acl() {
  auto d = std::make_shared<AclUser>("default");
  for (const char* r : {"on", "nopass", "~*", "&*", "+@all"}) d->Apply(r);
  users_["default"] = std::move(d);
}

std::shared_ptr<const AclUser> Acl::Find(std::string_view name) const {
  std::lock_guard lk(mu_);
  auto it = users_.find(name);
  return it == users_.end() ? nullptr : it->second;
}

void Acl::Publish() {
  auto d = users_.at("default");
  default_open_.store(d->on && d->nopass, std::memory_order_release);
  epoch_.fetch_add(1, std::memory_order_acq_rel);
}

std::string Acl::SetUser(std::string_view name, std::span<const std::string_view> rules) {
  std::lock_guard lk(mu_);
  auto it = users_.find(name);
  auto u = it == users_.end() ? std::make_shared<AclUser>(std::string(name)) : std::make_shared<AclUser>(*it->second);
  if (it == users_.end()) u->Apply("resetchannels");  // a new user, as Redis's acl-pubsub-default
  for (std::string_view r : rules) {
    std::string why = u->Apply(r);
    if (!why.empty()) return "ERR Error in ACL SETUSER modifier '" + std::string(r) + "': " + why;
  }
  users_[std::string(name)] = std::move(u);
  Publish();
  return "";
}

int Acl::DelUsers(std::span<const std::string_view> names) {
  std::lock_guard lk(mu_);
  int n = 0;
  for (std::string_view name : names) {
    auto it = users_.find(name);
    if (it == users_.end() || it->first == "default") continue;
    users_.erase(it);
    n++;
  }
  if (n > 0) Publish();
  return n;
}

std::vector<std::string> Acl::Users() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (const auto& [name, u] : users_) out.push_back(name);
  return out;
}

std::vector<std::string> Acl::List() const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  for (const auto& [name, u] : users_) out.push_back("user " + name + " " + u->Describe());
  return out;
}

void Acl::SetRequirePass(std::string_view pass) {
  std::lock_guard lk(mu_);
  auto u = std::make_shared<AclUser>(*users_.at("default"));
  u->Apply("resetpass");
  if (pass.empty()) u->Apply("nopass");
  else u->Apply(">" + std::string(pass));
  users_["default"] = std::move(u);
  Publish();
}

std::string Acl::LoadLines(const std::vector<std::string>& lines, const std::string& where) {
  std::map<std::string, std::shared_ptr<const AclUser>, std::less<>> users;
  for (size_t i = 0; i < lines.size(); i++) {
    std::istringstream in(lines[i]);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    if (words.empty() || words[0][0] == '#') continue;
    std::string at = where + ":" + std::to_string(i + 1) + ": ";
    if (words[0] != "user" || words.size() < 2) return at + "should start with user keyword";
    const std::string& name = words[1];
    if (name.empty() || std::any_of(name.begin(), name.end(), [](char ch) { return ch <= ' ' || ch == 127; }))
      return at + "invalid user name '" + name + "'";
    if (users.count(name)) return at + "Duplicate user '" + name + "' found";
    auto u = std::make_shared<AclUser>(name);
    u->Apply("resetchannels");
    for (size_t w = 2; w < words.size(); w++) {
      std::string why = u->Apply(words[w]);
      if (!why.empty()) return at + "Error in user declaration '" + words[w] + "': " + why;
    }
    users[name] = std::move(u);
  }
  std::lock_guard lk(mu_);
  if (!users.count("default")) users["default"] = users_.at("default");  // as Redis: kept when the file has none
  users_ = std::move(users);
  Publish();
  return "";
}

std::string Acl::LoadFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "Error loading ACLs, opening file '" + path + "': " + std::strerror(errno);
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return LoadLines(lines, path);
}

std::string Acl::SaveFile(const std::string& path) const {
  std::string text;
  for (const auto& l : List()) text += l + "\n";
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return "There was an error trying to save the ACLs. Please check the server logs for more information";
    f << text;
    f.flush();
    if (!f) return "There was an error trying to save the ACLs. Please check the server logs for more information";
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return "There was an error trying to save the ACLs. Please check the server logs for more information";
  return "";
}

// ---- ACL LOG ----

void Acl::Log(std::string_view reason, std::string_view object, std::string_view username, std::string client_info,
              int64_t now_ms) {
  std::lock_guard lk(mu_);
  for (auto it = log_.begin(); it != log_.end(); ++it) {
    if (it->reason == reason && it->object == object && it->username == username &&
        now_ms - it->created_ms < kLogGroupMs) {  // the same refusal again: counted, moved to the head
      AclLogEntry e = std::move(*it);
      log_.erase(it);
      e.count++;
      e.updated_ms = now_ms;
      e.client_info = std::move(client_info);
      log_.push_front(std::move(e));
      return;
    }
  }
  AclLogEntry e;
  e.reason = std::string(reason);
  e.context = "toplevel";
  e.object = std::string(object);
  e.username = std::string(username);
  e.client_info = std::move(client_info);
  e.created_ms = e.updated_ms = now_ms;
  log_.push_front(std::move(e));
  while (log_.size() > log_max_) log_.pop_back();
}

std::vector<AclLogEntry> Acl::LogEntries(size_t count) const {
  std::lock_guard lk(mu_);
  return {log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(std::min(count, log_.size()))};
}

void Acl::ResetLog() {
  std::lock_guard lk(mu_);
  log_.clear();
}

void Acl::set_log_max(size_t n) {
  std::lock_guard lk(mu_);
  log_max_ = n;
  while (log_.size() > log_max_) log_.pop_back();
}

}  // namespace fkv
