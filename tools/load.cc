// featurekv-load: bulk backfill (docs/operations.md, "Backfill: featurekv-load"). Reads JSON events, one per line,
// from a file or standard input and sends them as pipelined
// `FEVENT <source> <json> ...` commands over a plain socket (RESP written by
// hand, no client library), so they take the same path as FEVENT and Kafka.
// Maps every rejected event back to its line number. Prints progress on
// standard error once a second and a summary at the end (docs/operations.md).
// Exit 0 when every line was sent and answered (rejected lines are data, not
// failures), 1 when the connection failed, the server closed it or refused a
// whole command, 2 on usage errors.
//
// --replay: no input file; asks the server for FREPLAY of a Kafka time range
// into its views marked backfill: true, then follows the progress in INFO
// ingest once a second until the replay ends (exit 0 when done, 1 when it
// failed or was cancelled).
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ingest/duration.h"
#include "tools/resp_client.h"

namespace {
using fkv::tools::AppendCommand;
using fkv::tools::Connect;
using Clock = std::chrono::steady_clock;
using ull = unsigned long long;

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "featurekv-load: %s\n"
               "usage: featurekv-load [--host 127.0.0.1] [--port 6380] [--password P] [--source user_events]\n"
               "       [--batch 500] [--pipeline 16] FILE.jsonl|-\n"
               "       featurekv-load [--host ...] [--port ...] [--password P] --replay --source S --from TIME\n"
               "       [--to TIME] [--views v1,v2]    (TIME: Unix ms, or now-<duration> such as now-24h)\n",
               why.c_str());
  std::exit(2);
}

uint64_t Number(const char* s, const char* what, uint64_t lo, uint64_t hi) {
  std::string err;
  uint64_t v = fkv::tools::ParseNumber(s, what, lo, hi, &err);
  if (!err.empty()) Usage(err);
  return v;
}

// A line as shown in the summary: control bytes as '?', at most 80 bytes.
std::string Shown(const std::string& s) {
  std::string t = s.substr(0, 80);
  for (char& c : t)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s.size() > 80 ? t + "..." : t;
}

// One command sent and not answered yet: AUTH, or an FEVENT and its events.
struct Pending {
  bool auth = false;
  std::vector<uint64_t> lines;      // line number of each event
  std::vector<std::string> events;  // kept to show the first rejected lines
};

struct Totals {
  uint64_t lines = 0, blank = 0, sent = 0, accepted = 0, rejected = 0;
  std::map<std::string, uint64_t> by_reason;
  std::vector<std::string> first;  // "line N: reason: text", the first 10

  void Reject(const Pending& p, size_t i, const std::string& reason) {  // i: 0-based in p
    rejected++;
    by_reason[reason]++;
    if (first.size() < 10 && i < p.events.size())
      first.push_back("line " + std::to_string(p.lines[i]) + ": " + reason + ": " + Shown(p.events[i]));
  }
};

// Applies one reply to the command it answers; returns "" or why loading must stop.
std::string OnReply(char type, const std::string& body, const Pending& p, Totals* t) {
  if (p.auth) return type == '+' ? "" : "AUTH failed: " + body;
  std::string where =
      " (FEVENT of lines " + std::to_string(p.lines.front()) + "-" + std::to_string(p.lines.back()) + ")";
  if (type == ':') {  // every event accepted
    uint64_t n = std::min<uint64_t>(std::strtoull(body.c_str(), nullptr, 10), p.events.size());
    t->accepted += n;
    for (size_t i = n; i < p.events.size(); i++) t->Reject(p, i, "unlisted");  // counted, not named
    return "";
  }
  // "ERR <k> of <n> events rejected: #<i>: <reason>; #<j>: <reason>" (1-based positions)
  unsigned long long k = 0, n = 0;
  int head = 0;
  if (type != '-' || std::sscanf(body.c_str(), "ERR %llu of %llu events rejected: %n", &k, &n, &head) != 2 ||
      head == 0 || n != p.events.size() || k > n)
    return "server refused the command" + where + ": " + (type == '-' ? body : std::string(1, type) + body);
  t->accepted += n - k;
  std::vector<bool> listed(p.events.size());
  uint64_t named = 0;
  for (size_t pos = static_cast<size_t>(head); pos < body.size() && named < k;) {
    size_t end = body.find("; ", pos);
    if (end == std::string::npos) end = body.size();
    std::string item = body.substr(pos, end - pos);  // "#<i>: <reason>"
    pos = end + 2;
    size_t colon = item.find(": ");
    unsigned long long i = item[0] == '#' ? std::strtoull(item.c_str() + 1, nullptr, 10) : 0;
    if (colon == std::string::npos || i < 1 || i > n || listed[i - 1]) continue;
    listed[i - 1] = true;
    named++;
    t->Reject(p, i - 1, item.substr(colon + 2));
  }
  for (; named < k; named++) t->Reject(p, p.events.size(), "unlisted");  // the server shortened its list
  return "";
}
// A --from / --to value: Unix milliseconds, or now-<duration> (now-90m, now-7d).
int64_t TimeArg(const std::string& v, const char* what) {
  int64_t ago = 0;
  if (v.rfind("now-", 0) == 0 && fkv::ParseDurationMs(std::string_view(v).substr(4), &ago) && ago >= 0) {
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now().time_since_epoch());
    return std::max<int64_t>(0, now.count() - ago);
  }
  return static_cast<int64_t>(Number(v.c_str(), what, 0, 1ULL << 53));
}

// The INFO ingest fields of one reply ("name:value" lines).
std::map<std::string, std::string> InfoFields(const std::string& text) {
  std::map<std::string, std::string> f;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\r\n", pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 2;
    size_t colon = line.find(':');
    if (colon != std::string::npos && line[0] != '#') f[line.substr(0, colon)] = line.substr(colon + 1);
  }
  return f;
}

// --replay: FREPLAY, then INFO ingest once a second until the replay ends.
int Replay(int fd, const std::string& password, const std::string& source, int64_t from, int64_t to,
           const std::string& views) {
  auto exchange = [&](const std::vector<std::string_view>& args, fkv::tools::Reply* r) {
    std::string out;
    AppendCommand(&out, args);
    std::vector<fkv::tools::Reply> replies;
    std::string err = fkv::tools::Exchange(fd, out, 1, &replies);
    if (err.empty()) *r = replies.at(0);
    return err;
  };
  fkv::tools::Reply r;
  std::string err;
  if (!password.empty() && ((err = exchange({"AUTH", password}, &r)).empty() && r.type == '-'))
    err = "AUTH failed: " + r.text;
  std::vector<std::string> args = {"FREPLAY", source, "FROM", std::to_string(from)};
  if (to > 0) args.insert(args.end(), {"TO", std::to_string(to)});
  if (!views.empty()) {
    args.push_back("VIEWS");
    for (size_t pos = 0; pos <= views.size();) {
      size_t comma = std::min(views.find(',', pos), views.size());
      if (comma > pos) args.push_back(views.substr(pos, comma - pos));
      pos = comma + 1;
    }
  }
  std::vector<std::string_view> argv(args.begin(), args.end());
  if (err.empty() && (err = exchange(argv, &r)).empty() && r.type == '-') err = "FREPLAY refused: " + r.text;
  auto start = Clock::now();
  while (err.empty()) {
    if ((err = exchange({"INFO", "ingest"}, &r)).empty() && r.type == '-') err = "INFO refused: " + r.text;
    if (!err.empty()) break;
    auto f = InfoFields(r.text);
    const std::string status = f["replay_status"];
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::fprintf(stderr, "featurekv-load: replay %s: %s read, %s applied, %s out of range, partitions %s/%s (%.0f s)\n",
                 status.c_str(), f["replay_read"].c_str(), f["replay_applied"].c_str(),
                 f["replay_out_of_range"].c_str(), f["replay_partitions_done"].c_str(), f["replay_partitions"].c_str(),
                 secs);
    if (status == "done") return 0;
    if (status != "starting" && status != "running") {
      err = "replay " + status + (f["replay_error"].empty() ? "" : ": " + f["replay_error"]);
      break;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // the progress period
  }
  std::fprintf(stderr, "featurekv-load: %s\n", err.c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", port = "6380", password, source = "user_events", file;
  uint64_t batch = 500, pipeline = 16;
  bool replay = false;
  std::string from, to, views;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") Usage("sends JSON lines to featurekv as FEVENT commands");
    if (a == "--replay") {
      replay = true;
    } else if (a.size() > 1 && a[0] == '-') {
      if (i + 1 >= argc) Usage("missing value for " + a);
      const char* v = argv[++i];
      if (a == "--host")
        host = v;
      else if (a == "--port")
        port = std::to_string(Number(v, "port", 1, 65535));
      else if (a == "--password")
        password = v;
      else if (a == "--source")
        source = v;
      else if (a == "--batch")
        batch = Number(v, "batch", 1, 100'000);
      else if (a == "--pipeline")
        pipeline = Number(v, "pipeline", 1, 1024);
      else if (a == "--from")
        from = v;
      else if (a == "--to")
        to = v;
      else if (a == "--views")
        views = v;
      else
        Usage("unknown option " + a);
    } else if (file.empty())
      file = a;
    else
      Usage("more than one input file");
  }
  if (source.empty()) Usage("--source must not be empty");
  if (replay) {
    if (!file.empty()) Usage("--replay reads Kafka through the server: no input file");
    if (from.empty()) Usage("--replay needs --from");
    int64_t from_ms = TimeArg(from, "from"), to_ms = to.empty() ? 0 : TimeArg(to, "to");
    std::string err;
    int fd = Connect(host, port, &err);
    if (fd < 0) {
      std::fprintf(stderr, "featurekv-load: cannot connect to %s:%s: %s\n", host.c_str(), port.c_str(), err.c_str());
      return 1;
    }
    int rc = Replay(fd, password, source, from_ms, to_ms, views);
    ::close(fd);
    return rc;
  }
  if (!from.empty() || !to.empty() || !views.empty()) Usage("--from, --to and --views go with --replay");
  if (file.empty()) Usage("no input file (use - for standard input)");
  std::ifstream in_file;
  std::istream* input = &std::cin;
  if (file != "-") {
    in_file.open(file);
    if (!in_file) Usage("cannot open " + file + ": " + std::strerror(errno));
    input = &in_file;
  }
  std::ios::sync_with_stdio(false);
  std::string err;
  int fd = Connect(host, port, &err);
  if (fd < 0) {
    std::fprintf(stderr, "featurekv-load: cannot connect to %s:%s: %s\n", host.c_str(), port.c_str(), err.c_str());
    return 1;
  }

  Totals t;
  std::deque<Pending> pending;
  std::string out, in, line, fatal;  // out[out_off..]: not written yet; in: replies not parsed yet
  size_t out_off = 0;
  bool input_done = false, closed = false;
  if (!password.empty()) {
    AppendCommand(&out, {"AUTH", password});
    pending.push_back(Pending{true, {}, {}});
  }
  auto start = Clock::now(), last_report = start;
  while (fatal.empty() && !closed && (!input_done || !pending.empty())) {
    while (!input_done && pending.size() < pipeline) {  // fill the pipeline
      Pending p;
      while (p.events.size() < batch && std::getline(*input, line)) {
        t.lines++;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) {
          t.blank++;
          continue;
        }
        p.lines.push_back(t.lines);
        p.events.push_back(std::move(line));
      }
      if (input->bad()) fatal = "error reading " + file + ": " + std::strerror(errno);
      if (p.events.size() < batch) input_done = true;
      if (p.events.empty()) break;
      std::vector<std::string_view> args{"FEVENT", source};
      args.insert(args.end(), p.events.begin(), p.events.end());
      AppendCommand(&out, args);
      t.sent += p.events.size();
      pending.push_back(std::move(p));
    }
    if (pending.empty() || !fatal.empty()) break;

    auto since = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_report).count();
    pollfd pfd{fd, static_cast<short>(POLLIN | (out_off < out.size() ? POLLOUT : 0)), 0};
    if (poll(&pfd, 1, static_cast<int>(std::max<int64_t>(0, 1000 - since))) < 0 && errno != EINTR) {
      fatal = std::string("poll: ") + std::strerror(errno);
      break;
    }
    if ((pfd.revents & POLLOUT) && out_off < out.size()) {
      ssize_t n = send(fd, out.data() + out_off, out.size() - out_off, MSG_NOSIGNAL);
      if (n > 0)
        out_off += static_cast<size_t>(n);
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        closed = true;  // read what the server said first
      if (out_off == out.size() || out_off > (1 << 20)) {
        out.erase(0, out_off);
        out_off = 0;
      }
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR) || closed) {
      char buf[65536];
      for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) in.append(buf, static_cast<size_t>(n));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) closed = true;
        if (n <= 0) break;
      }
    }
    size_t pos = 0;  // parse every whole reply line
    for (size_t eol; fatal.empty() && (eol = in.find("\r\n", pos)) != std::string::npos; pos = eol + 2) {
      if (pending.empty()) {
        fatal = "unexpected reply: " + in.substr(pos, eol - pos);
        break;
      }
      fatal = OnReply(in[pos], in.substr(pos + 1, eol - pos - 1), pending.front(), &t);
      if (fatal.empty()) pending.pop_front();  // a refused command stays unconfirmed
    }
    in.erase(0, pos);

    auto now = Clock::now();
    if (now - last_report >= std::chrono::seconds(1)) {
      last_report = now;
      double secs = std::chrono::duration<double>(now - start).count();
      std::fprintf(stderr, "featurekv-load: %llu lines read, %llu accepted, %llu rejected, %.0f events/s\n",
                   static_cast<ull>(t.lines), static_cast<ull>(t.accepted), static_cast<ull>(t.rejected),
                   static_cast<double>(t.accepted + t.rejected) / secs);
    }
  }
  close(fd);
  if (fatal.empty() && closed && (!pending.empty() || !input_done)) fatal = "server closed the connection";

  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  uint64_t unconfirmed = 0;
  for (const Pending& p : pending) unconfirmed += p.events.size();
  if (!fatal.empty()) std::fprintf(stderr, "featurekv-load: %s\n", fatal.c_str());
  std::fprintf(stderr, "featurekv-load: %s: %llu lines (%llu blank), %llu events, %llu accepted, %llu rejected",
               fatal.empty() ? "done" : "stopped", static_cast<ull>(t.lines), static_cast<ull>(t.blank),
               static_cast<ull>(t.sent), static_cast<ull>(t.accepted), static_cast<ull>(t.rejected));
  if (!fatal.empty()) {
    uint64_t from = t.lines + 1;  // every line before `from` was answered
    for (const Pending& p : pending)
      if (!p.lines.empty()) from = std::min(from, p.lines.front());
    std::fprintf(stderr, ", %llu unconfirmed (resume from line %llu)", static_cast<ull>(unconfirmed),
                 static_cast<ull>(from));
  }
  std::fprintf(stderr, " in %.1f s (%.0f events/s)\n", secs, static_cast<double>(t.accepted + t.rejected) / secs);
  if (!t.by_reason.empty()) {
    std::string reasons;
    for (auto& [reason, n] : t.by_reason) reasons += (reasons.empty() ? "" : ", ") + reason + " " + std::to_string(n);
    std::fprintf(stderr, "featurekv-load: rejected by reason: %s\n", reasons.c_str());
    for (const std::string& r : t.first) std::fprintf(stderr, "featurekv-load: rejected %s\n", r.c_str());
  }
  return fatal.empty() ? 0 : 1;
}
