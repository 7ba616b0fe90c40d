// StoreJoins, EnrichEvent and EmbeddedJoins: see joins.h.
#include "server/joins.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "server/feature_values.h"
#include "server/shard_set.h"
#include "storage/key_table.h"

namespace fkv {

namespace {
constexpr std::string_view kJoinKey = "\x01join";  // written "\u0001join": no event field is named so

// A joined value as embedded text: null, or a JSON string "i<decimal>",
// "d<the 16 hex digits of the double's bits>", "s<hex of the bytes>" or
// "o" (not a scalar): exact whatever the bytes (FSET values need not be
// UTF-8, which a JSON document must be).
void PutValue(const FieldValue& v, std::string* out) {
  char buf[32];
  static const char kHex[] = "0123456789abcdef";
  switch (v.kind) {
    case ValueKind::kInt:
      std::snprintf(buf, sizeof buf, "\"i%" PRId64 "\"", v.i);
      *out += buf;
      return;
    case ValueKind::kDouble: {
      uint64_t bits;
      std::memcpy(&bits, &v.d, 8);
      std::snprintf(buf, sizeof buf, "\"d%016" PRIx64 "\"", bits);
      *out += buf;
      return;
    }
    case ValueKind::kString:
      *out += "\"s";
      for (unsigned char c : v.s) {
        out->push_back(kHex[c >> 4]);
        out->push_back(kHex[c & 15]);
      }
      out->push_back('"');
      return;
    case ValueKind::kOther: *out += "\"o\""; return;
    default: *out += "null"; return;
  }
}

int Nibble(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

// The inverse of PutValue; false for anything it does not write.
bool GetValue(simdjson::dom::element e, FieldValue* v, std::string* text) {
  *v = FieldValue{};
  v->kind = ValueKind::kNull;
  if (e.is_null()) return true;
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS || s.empty()) return false;
  std::string_view body = s.substr(1);
  switch (s[0]) {
    case 'i': {
      v->kind = ValueKind::kInt;
      char* end = nullptr;
      std::string n(body);
      v->i = std::strtoll(n.c_str(), &end, 10);
      return !n.empty() && *end == '\0';
    }
    case 'd': {
      if (body.size() != 16) return false;
      uint64_t bits = 0;
      for (char c : body) {
        int x = Nibble(c);
        if (x < 0) return false;
        bits = bits << 4 | static_cast<uint64_t>(x);
      }
      v->kind = ValueKind::kDouble;
      std::memcpy(&v->d, &bits, 8);
      return true;
    }
    case 's': {
      if (body.size() % 2) return false;
      text->clear();
      for (size_t i = 0; i < body.size(); i += 2) {
        int hi = Nibble(body[i]), lo = Nibble(body[i + 1]);
        if (hi < 0 || lo < 0) return false;
        text->push_back(static_cast<char>(hi << 4 | lo));
      }
      v->kind = ValueKind::kString;
      return true;
    }
    case 'o': v->kind = ValueKind::kOther; return body.empty();
    default: return false;
  }
}
}  // namespace

void StoreJoins::BeginEvent() { done_.clear(); }

const JoinValues& StoreJoins::Lookup(const ViewDef& v, const JoinDef& j, std::string_view key) {
  Done& d = done_.emplace_back(Done{&v, &j, {}});
  const uint64_t h = HashKey(key);
  ReadJoined(set_.shard(set_.ShardOf(h)).store, reg_, j, key, h, now_, &d.values);
  return d.values;
}

std::string StoreJoins::EnrichEvent(std::string_view json) const {
  const size_t bom = json.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;  // (the decoder skips one too)
  size_t open = json.find_first_not_of(" \t\r\n", bom);
  if (done_.empty() || open == std::string_view::npos || json[open] != '{') return std::string(json);
  std::string out = "{\"\\u0001join\":{";
  for (size_t i = 0; i < done_.size(); i++) {
    const Done& d = done_[i];
    if (i) out += ',';
    out += '"';
    out += JsonText(d.view->name + "." + d.join->alias);
    out += "\":";
    if (!d.values.found) {
      out += "null";
      continue;
    }
    out += '{';
    for (size_t r = 0; r < d.join->refs.size() && r < d.values.values.size(); r++) {
      if (r) out += ',';
      out += '"';
      out += JsonText(d.join->refs[r].feature);
      out += "\":";
      PutValue(d.values.values[r], &out);
    }
    out += '}';
  }
  out += '}';
  size_t next = json.find_first_not_of(" \t\r\n", open + 1);
  if (next != std::string_view::npos && json[next] != '}') out += ',';
  out.append(json.substr(open + 1));
  return out;
}

std::string StoreJoins::JsonText(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

void EmbeddedJoins::SetEvent(std::string_view json) {
  out_.clear();
  has_ = false;
  simdjson::dom::element root;
  if (parser_.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) return;
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) return;
  simdjson::dom::element j;
  if (obj.at_key(kJoinKey).get(j) != simdjson::SUCCESS) return;
  has_ = j.get_object().get(joins_) == simdjson::SUCCESS;
}

const JoinValues& EmbeddedJoins::Lookup(const ViewDef& v, const JoinDef& j, std::string_view) {
  JoinValues& out = out_.emplace_back();
  simdjson::dom::element e;
  simdjson::dom::object vals;
  if (!has_ || joins_.at_key(v.name + "." + j.alias).get(e) != simdjson::SUCCESS ||
      e.get_object().get(vals) != simdjson::SUCCESS)
    return out;  // not found: null (a join the registry did not have when the event was logged, too)
  out.found = true;
  std::vector<std::pair<size_t, size_t>> texts;
  std::string text;
  for (const JoinDef::Ref& ref : j.refs) {
    FieldValue fv;
    fv.kind = ValueKind::kNull;
    simdjson::dom::element x;
    if (vals.at_key(ref.feature).get(x) == simdjson::SUCCESS && !GetValue(x, &fv, &text)) {
      fv = FieldValue{};
      fv.kind = ValueKind::kNull;
    }
    if (fv.kind == ValueKind::kString) {
      texts.emplace_back(out.values.size(), out.text.size());
      out.text.push_back(text);
    }
    out.values.push_back(fv);
  }
  for (auto [vi, ti] : texts) out.values[vi].s = out.text[ti];
  return out;
}

}  // namespace fkv
