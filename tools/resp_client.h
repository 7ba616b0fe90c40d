// The little RESP client the command-line tools share (featurekv-load,
// featurekv-export): a TCP connection, commands written by hand, and a
// parser of RESP2 replies. No client library: the tools talk to featurekv
// exactly as redis-cli does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fkv::tools {

// A decimal option value in [lo, hi]; on anything else *err says
// "bad <what> '<s>' (lo..hi)".
uint64_t ParseNumber(const char* s, const char* what, uint64_t lo, uint64_t hi, std::string* err);

// A connected TCP socket (non-blocking, TCP_NODELAY, close-on-exec), or -1
// with *err set. Waits up to 10 s for the connect.
int Connect(const std::string& host, const std::string& port, std::string* err);

// Appends one command as a RESP array of bulk strings.
void AppendCommand(std::string* out, const std::vector<std::string_view>& args);

// One RESP2 reply: '+' simple, '-' error, ':' integer, '$' bulk, '*' array
// (null bulk and null array: null set).
struct Reply {
  char type = '+';
  bool null = false;
  int64_t integer = 0;
  std::string text;            // simple, error, bulk
  std::vector<Reply> elements; // array
};

enum class ParseResult { kComplete, kIncomplete, kBad };
// Parses the reply starting at buf[*pos]; on kComplete *pos moves past it.
ParseResult ParseReply(std::string_view buf, size_t* pos, Reply* out);

// Blocking exchange on a socket from Connect: writes all of `out`, then
// reads until `n` whole replies have arrived (or the deadline of
// `timeout_ms` of silence passes). Returns "" or what went wrong.
std::string Exchange(int fd, const std::string& out, size_t n, std::vector<Reply>* replies, int timeout_ms = 30000);

}  // namespace fkv::tools
