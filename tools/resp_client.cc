// RESP client of the tools: see resp_client.h.
#include "tools/resp_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace fkv::tools {

uint64_t ParseNumber(const char* s, const char* what, uint64_t lo, uint64_t hi, std::string* err) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0' || errno != 0 || *s == '-' || v < lo || v > hi)
    *err = std::string("bad ") + what + " '" + s + "' (" + std::to_string(lo) + ".." + std::to_string(hi) + ")";
  return v;
}

int Connect(const std::string& host, const std::string& port, std::string* err) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    *err = gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int e = connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (e == EINPROGRESS) {  // wait up to 10 s, then take the connect's own result
      pollfd p{fd, POLLOUT, 0};
      socklen_t len = sizeof e;
      e = poll(&p, 1, 10'000) == 1 ? (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len), e) : ETIMEDOUT;
    }
    if (e != 0) {
      *err = std::strerror(e);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

void AppendCommand(std::string* out, const std::vector<std::string_view>& args) {
  *out += '*' + std::to_string(args.size()) + "\r\n";
  for (std::string_view a : args) {
    *out += '$' + std::to_string(a.size()) + "\r\n";
    out->append(a);
    *out += "\r\n";
  }
}

namespace {
constexpr int kMaxDepth = 8;  // featurekv's replies nest 3 deep at most

ParseResult Parse(std::string_view buf, size_t* pos, Reply* out, int depth) {
  if (depth > kMaxDepth) return ParseResult::kBad;
  size_t eol = buf.find("\r\n", *pos);
  if (eol == std::string_view::npos) return ParseResult::kIncomplete;
  if (eol == *pos) return ParseResult::kBad;
  out->type = buf[*pos];
  std::string_view line = buf.substr(*pos + 1, eol - *pos - 1);
  auto number = [&](int64_t* v) {
    std::string s(line);
    char* end = nullptr;
    errno = 0;
    *v = std::strtoll(s.c_str(), &end, 10);
    return !s.empty() && end == s.c_str() + s.size() && errno == 0;
  };
  size_t next = eol + 2;
  switch (out->type) {
    case '+':
    case '-':
      out->text = std::string(line);
      break;
    case ':':
      if (!number(&out->integer)) return ParseResult::kBad;
      break;
    case '$': {
      int64_t len;
      if (!number(&len) || len < -1) return ParseResult::kBad;
      if (len == -1) {
        out->null = true;
        break;
      }
      if (buf.size() < next + static_cast<size_t>(len) + 2) return ParseResult::kIncomplete;
      if (buf.substr(next + static_cast<size_t>(len), 2) != "\r\n") return ParseResult::kBad;
      out->text = std::string(buf.substr(next, static_cast<size_t>(len)));
      next += static_cast<size_t>(len) + 2;
      break;
    }
    case '*': {
      int64_t n;
      if (!number(&n) || n < -1 || n > (int64_t{1} << 24)) return ParseResult::kBad;
      if (n == -1) {
        out->null = true;
        break;
      }
      // Each element takes at least 3 bytes ("+\r\n"): a count the bytes
      // read so far cannot hold yet waits for them before any allocation.
      if (static_cast<uint64_t>(n) > (buf.size() - next) / 3) return ParseResult::kIncomplete;
      out->elements.resize(static_cast<size_t>(n));
      for (auto& e : out->elements)
        if (ParseResult r = Parse(buf, &next, &e, depth + 1); r != ParseResult::kComplete) return r;
      break;
    }
    default: return ParseResult::kBad;
  }
  *pos = next;
  return ParseResult::kComplete;
}
}  // namespace

ParseResult ParseReply(std::string_view buf, size_t* pos, Reply* out) {
  *out = Reply{};
  size_t p = *pos;
  ParseResult r = Parse(buf, &p, out, 0);
  if (r == ParseResult::kComplete) *pos = p;
  return r;
}

std::string Exchange(int fd, const std::string& out, size_t n, std::vector<Reply>* replies, int timeout_ms) {
  replies->clear();
  size_t sent = 0, pos = 0;
  std::string in;
  while (replies->size() < n) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < out.size() ? POLLOUT : 0)), 0};
    int rc = poll(&p, 1, timeout_ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return std::string("poll: ") + std::strerror(errno);
    if (rc == 0) return "no reply from the server for " + std::to_string(timeout_ms / 1000) + " s";
    if ((p.revents & POLLOUT) && sent < out.size()) {
      ssize_t k = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (k > 0) sent += static_cast<size_t>(k);
      else if (k < 0 && errno != EAGAIN && errno != EINTR) return std::string("send: ") + std::strerror(errno);
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[65536];
      ssize_t k = recv(fd, buf, sizeof buf, 0);
      if (k == 0) return "server closed the connection";
      if (k < 0 && errno != EAGAIN && errno != EINTR) return std::string("recv: ") + std::strerror(errno);
      if (k > 0) in.append(buf, static_cast<size_t>(k));
      for (;;) {
        Reply r;
        ParseResult res = ParseReply(in, &pos, &r);
        if (res == ParseResult::kBad) return "malformed reply from the server";
        if (res == ParseResult::kIncomplete) break;
        replies->push_back(std::move(r));
      }
      if (pos > (1 << 20)) {
        in.erase(0, pos);
        pos = 0;
      }
    }
  }
  return "";
}

}  // namespace fkv::tools
