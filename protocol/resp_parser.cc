// RequestParser: see resp_parser.h. Error texts follow Redis 7's
// networking.c (processMultibulkBuffer / processInlineBuffer).
#include "protocol/resp_parser.h"

#include <cstring>

namespace fkv {

namespace {

// Parses a decimal integer of the whole view; false on any other byte,
// empty input or overflow. Same acceptance as Redis's string2ll.
bool ParseInt64(std::string_view s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
    if (s.size() == 1) return false;
  }
  uint64_t v = 0;
  for (; i < s.size(); i++) {
    char c = s[i];
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  if (neg) {
    if (v > static_cast<uint64_t>(INT64_MAX) + 1) return false;
    *out = static_cast<int64_t>(0 - v);
  } else {
    if (v > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(v);
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

void RequestParser::Reset() {
  state_ = State::kStart;
  pos_ = 0;
  remaining_ = 0;
  bulk_len_ = 0;
  bytes_wanted_ = 0;
  offsets_.clear();
}

ParseStatus RequestParser::Fail(const char* msg) {
  error_ = msg;
  Reset();
  return ParseStatus::kError;
}

ParseStatus RequestParser::Parse(std::string_view buf, ArgList* args, size_t* consumed) {
  for (;;) {
    switch (state_) {
      case State::kStart: {
        if (buf.empty()) return ParseStatus::kNeedMore;
        if (buf[0] != '*') return ParseInline(buf, args, consumed);
        state_ = State::kMultibulk;
        pos_ = 0;
        [[fallthrough]];
      }
      case State::kMultibulk: {
        const char* nl = static_cast<const char*>(std::memchr(buf.data(), '\r', buf.size()));
        if (nl == nullptr || static_cast<size_t>(nl - buf.data()) + 1 >= buf.size()) {
          if (buf.size() > limits_.max_inline) return Fail("ERR Protocol error: too big mbulk count string");
          return ParseStatus::kNeedMore;
        }
        size_t line_end = static_cast<size_t>(nl - buf.data());
        int64_t n = 0;
        if (!ParseInt64(buf.substr(1, line_end - 1), &n) || n > static_cast<int64_t>(limits_.max_args)) {
          return Fail("ERR Protocol error: invalid multibulk length");
        }
        pos_ = line_end + 2;
        if (n <= 0) {  // "*0\r\n" or "*-1\r\n": an empty request, skipped as Redis does
          *consumed = pos_;
          Reset();
          args->clear();
          return ParseStatus::kComplete;
        }
        remaining_ = n;
        offsets_.clear();
        // Reserve modestly: a hostile count must not make us allocate.
        offsets_.reserve(static_cast<size_t>(n < 1024 ? n : 1024));
        state_ = State::kBulkHeader;
        [[fallthrough]];
      }
      case State::kBulkHeader:
      case State::kBulkBody: {
        while (remaining_ > 0) {
          if (state_ == State::kBulkHeader) {
            if (pos_ >= buf.size()) return ParseStatus::kNeedMore;
            size_t avail = buf.size() - pos_;
            const char* start = buf.data() + pos_;
            const char* nl = static_cast<const char*>(std::memchr(start, '\r', avail));
            if (nl == nullptr || static_cast<size_t>(nl - start) + 1 >= avail) {
              if (avail > limits_.max_inline) return Fail("ERR Protocol error: too big bulk count string");
              return ParseStatus::kNeedMore;
            }
            if (*start != '$') {
              error_ = "ERR Protocol error: expected '$', got '";
              error_ += *start;
              error_ += "'";
              std::string saved = error_;
              Reset();
              error_ = saved;
              return ParseStatus::kError;
            }
            size_t line_len = static_cast<size_t>(nl - start);
            int64_t len = 0;
            if (!ParseInt64(std::string_view(start + 1, line_len - 1), &len) || len < 0 ||
                static_cast<uint64_t>(len) > limits_.max_bulk_len) {
              return Fail("ERR Protocol error: invalid bulk length");
            }
            pos_ += line_len + 2;
            bulk_len_ = static_cast<size_t>(len);
            state_ = State::kBulkBody;
          }
          // kBulkBody
          if (buf.size() - pos_ < bulk_len_ + 2) {
            bytes_wanted_ = pos_ + bulk_len_ + 2;
            return ParseStatus::kNeedMore;
          }
          offsets_.emplace_back(pos_, bulk_len_);
          pos_ += bulk_len_ + 2;
          remaining_--;
          state_ = State::kBulkHeader;
        }
        args->clear();
        for (auto [off, len] : offsets_) args->emplace_back(buf.data() + off, len);
        *consumed = pos_;
        Reset();
        return ParseStatus::kComplete;
      }
    }
  }
}

ParseStatus RequestParser::ParseInline(std::string_view buf, ArgList* args, size_t* consumed) {
  const char* nl = static_cast<const char*>(std::memchr(buf.data(), '\n', buf.size()));
  if (nl == nullptr) {
    if (buf.size() > limits_.max_inline) return Fail("ERR Protocol error: too big inline request");
    return ParseStatus::kNeedMore;
  }
  size_t line_len = static_cast<size_t>(nl - buf.data());
  if (line_len > limits_.max_inline) return Fail("ERR Protocol error: too big inline request");
  std::string_view line = buf.substr(0, line_len);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  inline_storage_.clear();
  if (!SplitInlineArgs(line, &inline_storage_)) return Fail("ERR Protocol error: unbalanced quotes in request");
  if (inline_storage_.size() > limits_.max_args) return Fail("ERR Protocol error: invalid multibulk length");
  args->clear();
  for (const auto& s : inline_storage_) args->emplace_back(s);
  *consumed = line_len + 1;
  Reset();
  return ParseStatus::kComplete;
}

bool SplitInlineArgs(std::string_view line, std::vector<std::string>* out) {
  size_t i = 0, n = line.size();
  for (;;) {
    while (i < n && IsSpace(line[i])) i++;
    if (i >= n) return true;
    std::string cur;
    bool in_dq = false, in_sq = false, done = false;
    while (!done) {
      if (in_dq) {
        if (i >= n) return false;
        char c = line[i];
        if (c == '\\' && i + 3 < n && line[i + 1] == 'x' && HexValue(line[i + 2]) >= 0 && HexValue(line[i + 3]) >= 0) {
          cur += static_cast<char>(HexValue(line[i + 2]) * 16 + HexValue(line[i + 3]));
          i += 3;
        } else if (c == '\\' && i + 1 < n) {
          i++;
          char e = line[i];
          switch (e) {
            case 'n': cur += '\n'; break;
            case 'r': cur += '\r'; break;
            case 't': cur += '\t'; break;
            case 'b': cur += '\b'; break;
            case 'a': cur += '\a'; break;
            default: cur += e; break;
          }
        } else if (c == '"') {
          // closing quote must be followed by a space or the end
          if (i + 1 < n && !IsSpace(line[i + 1])) return false;
          done = true;
        } else {
          cur += c;
        }
      } else if (in_sq) {
        if (i >= n) return false;
        char c = line[i];
        if (c == '\\' && i + 1 < n && line[i + 1] == '\'') {
          i++;
          cur += '\'';
        } else if (c == '\'') {
          if (i + 1 < n && !IsSpace(line[i + 1])) return false;
          done = true;
        } else {
          cur += c;
        }
      } else {
        if (i >= n) {
          done = true;
          break;
        }
        char c = line[i];
        if (IsSpace(c)) {
          done = true;
        } else if (c == '"') {
          in_dq = true;
        } else if (c == '\'') {
          in_sq = true;
        } else {
          cur += c;
        }
      }
      if (i < n) i++;
    }
    out->push_back(std::move(cur));
  }
}

}  // namespace fkv
