// CommandTable and the helpers shared by the families: see command.h.
#include <algorithm>
#include <stdexcept>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "server/command.h"

namespace fkv {

CommandTable& CommandTable::Get() {
  static CommandTable* t = [] {
    auto* t = new CommandTable();
    RegisterConnectionFamily(*t);
    RegisterServerFamily(*t);
    RegisterGenericFamily(*t);
    RegisterStringFamily(*t);
    RegisterHashFamily(*t);
    RegisterFeatureFamily(*t);
    RegisterTransactionFamily(*t);
    RegisterAclFamily(*t);
    RegisterClusterFamily(*t);
    t->Freeze();
    return t;
  }();
  return *t;
}

void CommandTable::Register(const CommandSpec& spec) {
  if (((spec.flags & kCmdMovableKeys) != 0) != (spec.key_end != nullptr))
    throw std::logic_error(std::string("command ") + spec.name + ": movable keys need a key_end, and only they have one");
  specs_.push_back(spec);
  specs_.back().index = specs_.size() - 1;
}

void CommandTable::Freeze() {
  index_.clear();
  for (size_t i = 0; i < specs_.size(); i++) index_.emplace_back(specs_[i].name, i);
  std::sort(index_.begin(), index_.end());
}

const CommandSpec* CommandTable::Find(std::string_view name) const {
  char buf[32];
  if (name.size() >= sizeof(buf)) return nullptr;
  for (size_t i = 0; i < name.size(); i++) buf[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
  std::string_view lower(buf, name.size());
  auto it = std::lower_bound(index_.begin(), index_.end(), lower,
                             [](const std::pair<std::string, size_t>& e, std::string_view k) { return e.first < k; });
  if (it == index_.end() || it->first != lower) return nullptr;
  return &specs_[it->second];
}

std::string ErrWrongArgs(std::string_view cmd) {
  return "ERR wrong number of arguments for '" + std::string(cmd) + "' command";
}

bool ParseI64(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  if (s[0] == '+') return false;
  if (s.size() > 1 && s[0] == '0') return false;  // Redis refuses leading zeros
  if (s.size() > 1 && s[0] == '-' && s[1] == '0') return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool ParseLongDouble(std::string_view s, long double* out) {
  if (s.empty() || s.size() > 5000) return false;
  if (std::isspace(static_cast<unsigned char>(s[0]))) return false;
  std::string tmp(s);
  char* end = nullptr;
  errno = 0;
  long double v = std::strtold(tmp.c_str(), &end);
  if (end != tmp.c_str() + tmp.size() || std::isnan(v)) return false;
  if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || std::fpclassify(v) == FP_ZERO)) return false;
  *out = v;
  return true;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace fkv
