// Incremental RESP request parser: multibulk (RESP2/RESP3 clients) and inline
// commands (telnet, redis-cli's inline mode). Used by server/connection.cc.
// Not thread-safe; one parser per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fkv {

// Limits enforced while parsing, with Redis's defaults (docs/operations.md, "Limits and what the client sees").
struct ParserLimits {
  size_t max_bulk_len = 512ull * 1024 * 1024;  // proto-max-bulk-len
  size_t max_args = 1024 * 1024;               // arguments per command
  size_t max_inline = 64 * 1024;               // inline request / header line
};

enum class ParseStatus { kComplete, kNeedMore, kError };

using ArgList = std::vector<std::string_view>;

// Parses one request at a time from a byte buffer owned by the caller.
//
// Contract: `buf` starts at the first unconsumed byte of the request being
// parsed. After kNeedMore the caller keeps those bytes (it may move them and
// append more) and calls Parse again with the longer buffer; the parser keeps
// only offsets, so no argument byte is ever copied. After kComplete, `args`
// holds views into `buf` (valid while the caller keeps those bytes) and
// `*consumed` says how many bytes the request took. After kError, error()
// holds the Redis error text; the connection should reply it and close.
class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits = {}) : limits_(limits) {}

  ParseStatus Parse(std::string_view buf, ArgList* args, size_t* consumed);

  const std::string& error() const { return error_; }
  // Total bytes the request in progress needs at least (0 if unknown);
  // lets the caller size its buffer once for a large bulk argument.
  size_t bytes_wanted() const { return bytes_wanted_; }
  void set_limits(const ParserLimits& l) { limits_ = l; }
  const ParserLimits& limits() const { return limits_; }
  void Reset();

 private:
  enum class State { kStart, kMultibulk, kBulkHeader, kBulkBody };

  ParseStatus ParseInline(std::string_view buf, ArgList* args, size_t* consumed);
  ParseStatus Fail(const char* msg);

  ParserLimits limits_;
  State state_ = State::kStart;
  size_t pos_ = 0;          // scan offset inside the current request
  int64_t remaining_ = 0;   // bulk arguments still to read
  size_t bulk_len_ = 0;     // length of the bulk being read
  size_t bytes_wanted_ = 0;
  std::vector<std::pair<size_t, size_t>> offsets_;  // (offset, length) per arg
  std::vector<std::string> inline_storage_;          // unescaped inline args
  std::string error_;
};

// Splits an inline command line like Redis's sdssplitargs: whitespace
// separated, "double quotes" with \n \r \t \b \a \\ \" \xHH escapes,
// 'single quotes' with \' only. Returns false on unbalanced quotes.
bool SplitInlineArgs(std::string_view line, std::vector<std::string>* out);

}  // namespace fkv
