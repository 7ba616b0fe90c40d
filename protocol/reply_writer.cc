// ReplyWriter: see reply_writer.h.
#include "protocol/reply_writer.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace fkv {

void ReplyWriter::Header(char type, uint64_t n) {
  char buf[24];
  buf[0] = type;
  auto r = std::to_chars(buf + 1, buf + sizeof(buf) - 2, n);
  r.ptr[0] = '\r';
  r.ptr[1] = '\n';
  out_->append(buf, static_cast<size_t>(r.ptr + 2 - buf));
}

void ReplyWriter::Simple(std::string_view s) {
  out_->push_back('+');
  out_->append(s);
  out_->append("\r\n", 2);
}

void ReplyWriter::Error(std::string_view msg) {
  errors_++;
  out_->push_back('-');
  // An error reply is one line: newlines would break the protocol.
  for (char c : msg) out_->push_back(c == '\r' || c == '\n' ? ' ' : c);
  out_->append("\r\n", 2);
}

void ReplyWriter::Integer(int64_t v) {
  char buf[24];
  buf[0] = ':';
  auto r = std::to_chars(buf + 1, buf + sizeof(buf) - 2, v);
  r.ptr[0] = '\r';
  r.ptr[1] = '\n';
  out_->append(buf, static_cast<size_t>(r.ptr + 2 - buf));
}

void ReplyWriter::Bulk(std::string_view s) {
  Header('$', s.size());
  out_->append(s);
  out_->append("\r\n", 2);
}

void ReplyWriter::Null() {
  if (proto_ >= 3) out_->append("_\r\n", 3);
  else out_->append("$-1\r\n", 5);
}

void ReplyWriter::NullArray() {
  if (proto_ >= 3) out_->append("_\r\n", 3);
  else out_->append("*-1\r\n", 5);
}

void ReplyWriter::Array(size_t n) { Header('*', n); }
void ReplyWriter::Map(size_t n) { proto_ >= 3 ? Header('%', n) : Header('*', 2 * n); }
void ReplyWriter::Set(size_t n) { Header(proto_ >= 3 ? '~' : '*', n); }
void ReplyWriter::Push(size_t n) { Header(proto_ >= 3 ? '>' : '*', n); }

void ReplyWriter::Double(double v) {
  std::string s = FormatDouble(v);
  if (proto_ >= 3) {
    out_->push_back(',');
    out_->append(s);
    out_->append("\r\n", 2);
  } else {
    Bulk(s);
  }
}

void ReplyWriter::Bool(bool v) {
  if (proto_ >= 3) out_->append(v ? "#t\r\n" : "#f\r\n", 4);
  else out_->append(v ? ":1\r\n" : ":0\r\n", 4);
}

void ReplyWriter::Verbatim(std::string_view s) {
  if (proto_ >= 3) {
    Header('=', s.size() + 4);
    out_->append("txt:", 4);
    out_->append(s);
    out_->append("\r\n", 2);
  } else {
    Bulk(s);
  }
}

void ReplyWriter::BigNumber(std::string_view digits) {
  if (proto_ >= 3) {
    out_->push_back('(');
    out_->append(digits);
    out_->append("\r\n", 2);
  } else {
    Bulk(digits);
  }
}

std::string FormatDouble(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string FormatLongDouble(long double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[5600];
  int n = std::snprintf(buf, sizeof(buf), "%.17Lf", v);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(buf)) return "0";
  // Trim trailing zeros (and a bare '.') in the C buffer, then copy once.
  size_t len = static_cast<size_t>(n);
  if (std::memchr(buf, '.', len) != nullptr) {
    while (len > 0 && buf[len - 1] == '0') len--;
    if (len > 0 && buf[len - 1] == '.') len--;
  }
  if (len == 2 && buf[0] == '-' && buf[1] == '0') return "0";
  return std::string(buf, len);
}

}  // namespace fkv
