// A small complete RESP2/RESP3 reply decoder for tests: turns reply bytes
// into a tree so tests can check types and values exactly. Test-only.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fkv::test {

struct RespValue {
  char type = 0;  // '+', '-', ':', '$', '*', '%', '~', '>', '_', ',', '#', '=', '(' ; '$'/'*' with null=true for RESP2 nulls
  bool null = false;
  std::string str;  // simple, error, bulk, double text, big number, verbatim (with "txt:")
  long long integer = 0;
  std::vector<RespValue> elems;  // arrays, sets, pushes; maps as k,v,k,v
};

// Decodes one value from `in` starting at *pos; returns false if incomplete
// or malformed.
inline bool DecodeResp(std::string_view in, size_t* pos, RespValue* out) {
  if (*pos >= in.size()) return false;
  size_t eol = in.find("\r\n", *pos);
  if (eol == std::string_view::npos) return false;
  char t = in[*pos];
  std::string line(in.substr(*pos + 1, eol - *pos - 1));
  *pos = eol + 2;
  out->type = t;
  switch (t) {
    case '+': case '-': case ',': case '(':
      out->str = line;
      return true;
    case ':':
      out->integer = std::strtoll(line.c_str(), nullptr, 10);
      return true;
    case '_':
      out->null = true;
      return true;
    case '#':
      out->integer = line == "t";
      return true;
    case '$': case '=': {
      long long n = std::strtoll(line.c_str(), nullptr, 10);
      if (n < 0) {
        out->null = true;
        return true;
      }
      if (in.size() < *pos + static_cast<size_t>(n) + 2) return false;
      out->str = std::string(in.substr(*pos, static_cast<size_t>(n)));
      *pos += static_cast<size_t>(n) + 2;
      return true;
    }
    case '*': case '~': case '>': case '%': {
      long long n = std::strtoll(line.c_str(), nullptr, 10);
      if (n < 0) {
        out->null = true;
        return true;
      }
      if (t == '%') n *= 2;
      for (long long i = 0; i < n; i++) {
        RespValue v;
        if (!DecodeResp(in, pos, &v)) return false;
        out->elems.push_back(std::move(v));
      }
      return true;
    }
    default:
      return false;
  }
}

inline RespValue DecodeOne(std::string_view in) {
  RespValue v;
  size_t pos = 0;
  if (!DecodeResp(in, &pos, &v) || pos != in.size()) v.type = '?';
  return v;
}

}  // namespace fkv::test
