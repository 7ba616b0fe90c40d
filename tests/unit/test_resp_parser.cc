// Unit tests of protocol/resp_parser: every request form, every split point
// of a pipelined buffer, and every limit, with Redis's error texts.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "protocol/resp_parser.h"

using namespace fkv;

namespace {

// Feeds `input` to a parser in pieces cut at `cuts`, as a connection would
// (keeping unconsumed bytes, appending new ones); returns the commands.
std::vector<std::vector<std::string>> ParseAll(const std::string& input, const std::vector<size_t>& cuts,
                                               ParserLimits lim = {}, std::string* error = nullptr) {
  RequestParser p(lim);
  std::vector<std::vector<std::string>> cmds;
  std::string buf;
  size_t fed = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(input.size());
  ArgList args;
  for (size_t end : ends) {
    buf.append(input, fed, end - fed);
    fed = end;
    for (;;) {
      size_t consumed = 0;
      ParseStatus st = p.Parse(buf, &args, &consumed);
      if (st == ParseStatus::kNeedMore) break;
      if (st == ParseStatus::kError) {
        if (error) *error = p.error();
        return cmds;
      }
      if (!args.empty()) cmds.emplace_back(args.begin(), args.end());
      buf.erase(0, consumed);
    }
  }
  return cmds;
}

using Cmds = std::vector<std::vector<std::string>>;

}  // namespace

TEST_CASE("multibulk request parses into arguments that point into the buffer") {
  RequestParser p;
  std::string buf = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
  ArgList args;
  size_t consumed = 0;
  REQUIRE(p.Parse(buf, &args, &consumed) == ParseStatus::kComplete);
  CHECK(consumed == buf.size());
  REQUIRE(args.size() == 3);
  CHECK(args[0] == "SET");
  CHECK(args[2] == "hello");
  // zero copy: the views lie inside the caller's buffer
  CHECK(args[2].data() >= buf.data());
  CHECK(args[2].data() < buf.data() + buf.size());
}

TEST_CASE("binary-safe bulk arguments keep CR, LF and NUL bytes") {
  std::string v("a\r\nb\0c", 6);
  std::string in = "*2\r\n$3\r\nGET\r\n$6\r\n" + v + "\r\n";
  auto cmds = ParseAll(in, {});
  REQUIRE(cmds.size() == 1);
  CHECK(cmds[0][1] == v);
}

TEST_CASE("empty bulk and empty multibulk") {
  CHECK(ParseAll("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", {}) == Cmds{{"ECHO", ""}});
  CHECK(ParseAll("*0\r\n*1\r\n$4\r\nPING\r\n", {}) == Cmds{{"PING"}});
  CHECK(ParseAll("*-1\r\n*1\r\n$4\r\nPING\r\n", {}) == Cmds{{"PING"}});
}

TEST_CASE("inline commands split like redis-cli's and Redis's sdssplitargs") {
  CHECK(ParseAll("PING\r\n", {}) == Cmds{{"PING"}});
  CHECK(ParseAll("PING\n", {}) == Cmds{{"PING"}});
  CHECK(ParseAll("SET k \"a b\"\r\n", {}) == Cmds{{"SET", "k", "a b"}});
  CHECK(ParseAll("SET k 'it''s'\r\n", {}).empty());  // closing quote must end the word
  CHECK(ParseAll("SET k \"\\x41\\n\"\r\n", {}) == Cmds{{"SET", "k", "A\n"}});
  CHECK(ParseAll("  GET   k  \r\n", {}) == Cmds{{"GET", "k"}});
  CHECK(ParseAll("\r\n\r\nPING\r\n", {}) == Cmds{{"PING"}});  // blank lines are skipped
  std::string err;
  ParseAll("SET k \"abc\r\n", {}, {}, &err);
  CHECK(err == "ERR Protocol error: unbalanced quotes in request");
}

TEST_CASE("every split point of a pipelined buffer gives the same commands") {
  std::string in;
  Cmds want;
  for (int i = 0; i < 20; i++) {
    std::string k = "key:" + std::to_string(i), v(static_cast<size_t>(i * 7), 'x');
    in += "*3\r\n$3\r\nSET\r\n$" + std::to_string(k.size()) + "\r\n" + k + "\r\n$" + std::to_string(v.size()) + "\r\n" + v + "\r\n";
    want.push_back({"SET", k, v});
    if (i % 5 == 0) {
      in += "PING\r\n";
      want.push_back({"PING"});
    }
  }
  CHECK(ParseAll(in, {}) == want);
  for (size_t cut = 1; cut < in.size(); cut++) {
    INFO("cut at " << cut);
    REQUIRE(ParseAll(in, {cut}) == want);
  }
  // byte at a time
  std::vector<size_t> all;
  for (size_t i = 1; i < in.size(); i++) all.push_back(i);
  CHECK(ParseAll(in, all) == want);
  // random multi-cut splits
  std::mt19937 rng(42);
  for (int round = 0; round < 200; round++) {
    std::vector<size_t> cuts;
    for (size_t pos = 0;;) {
      pos += 1 + rng() % 40;
      if (pos >= in.size()) break;
      cuts.push_back(pos);
    }
    REQUIRE(ParseAll(in, cuts) == want);
  }
}

TEST_CASE("limits produce Redis's protocol errors") {
  std::string err;
  ParserLimits lim;
  lim.max_bulk_len = 1024;
  lim.max_args = 16;
  lim.max_inline = 256;

  ParseAll("*1\r\n$1025\r\n", {}, lim, &err);
  CHECK(err == "ERR Protocol error: invalid bulk length");
  err.clear();
  ParseAll("*1\r\n$999999999999999999999\r\n", {}, {}, &err);
  CHECK(err == "ERR Protocol error: invalid bulk length");
  err.clear();
  ParseAll("*1\r\n$-5\r\n", {}, lim, &err);
  CHECK(err == "ERR Protocol error: invalid bulk length");
  err.clear();
  ParseAll("*17\r\n", {}, lim, &err);
  CHECK(err == "ERR Protocol error: invalid multibulk length");
  err.clear();
  ParseAll("*1048577\r\n", {}, {}, &err);
  CHECK(err == "ERR Protocol error: invalid multibulk length");
  err.clear();
  ParseAll("*abc\r\n", {}, lim, &err);
  CHECK(err == "ERR Protocol error: invalid multibulk length");
  err.clear();
  ParseAll("*1\r\nX\r\n", {}, lim, &err);
  CHECK(err == "ERR Protocol error: expected '$', got 'X'");
  err.clear();
  ParseAll(std::string(300, 'a'), {}, lim, &err);
  CHECK(err == "ERR Protocol error: too big inline request");
  err.clear();
  ParseAll("*" + std::string(300, '1'), {}, lim, &err);
  CHECK(err == "ERR Protocol error: too big mbulk count string");
  err.clear();
  ParseAll("*1\r\n$" + std::string(300, '1'), {}, lim, &err);
  CHECK(err == "ERR Protocol error: too big bulk count string");
  // at the limit is fine
  err.clear();
  auto ok = ParseAll("*1\r\n$1024\r\n" + std::string(1024, 'v') + "\r\n", {}, lim, &err);
  CHECK(err.empty());
  CHECK(ok.size() == 1);
}

TEST_CASE("a huge declared argument count does not allocate up front") {
  RequestParser p;
  ArgList args;
  size_t consumed;
  std::string buf = "*1000000\r\n$1\r\na\r\n";
  CHECK(p.Parse(buf, &args, &consumed) == ParseStatus::kNeedMore);
}

TEST_CASE("bytes_wanted announces the size of a large bulk") {
  RequestParser p;
  ArgList args;
  size_t consumed;
  std::string buf = "*2\r\n$3\r\nSET\r\n$100000\r\nabc";
  CHECK(p.Parse(buf, &args, &consumed) == ParseStatus::kNeedMore);
  CHECK(p.bytes_wanted() == buf.size() - 3 + 100000 + 2);
}

TEST_CASE("random garbage never crashes the parser and ends in a result") {
  std::mt19937 rng(7);
  ParserLimits lim;
  lim.max_bulk_len = 4096;
  for (int i = 0; i < 2000; i++) {
    std::string in;
    size_t n = rng() % 200;
    const char alphabet[] = "*$\r\n0123456789-abc \"'\\x";
    for (size_t j = 0; j < n; j++) in += rng() % 4 == 0 ? static_cast<char>(rng()) : alphabet[rng() % (sizeof(alphabet) - 1)];
    std::string err;
    ParseAll(in, {n / 2}, lim, &err);
  }
  CHECK(true);
}
